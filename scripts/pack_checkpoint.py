"""Move a training checkpoint through a channel with a file-size limit: pack it into parts, unpack it into a run.

    python scripts/pack_checkpoint.py pack runs/x/checkpoints/step-006000 --out pack --part-mib 16 [--half]
    python scripts/pack_checkpoint.py unpack pack --run runs/x      # then: facegen train ... --out runs/x --resume

The optimizer state stays behind unless --optimizers (it is twice the trained weights; the
resume says its moments restart from zero): facegen.checkpoint.pack_checkpoint. Made for the
lent GPU machine of the development workplace (files back: 16 MiB each, 64 MiB in all), where
the default model's checkpoints (G 9.6 MB, D 19.6 MB, EMA 9.6 MB, Adam 58 MB) were otherwise lost.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facegen.checkpoint import latest_checkpoint, pack_checkpoint, unpack_checkpoint
from facegen.utils import FacegenError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    pack = verbs.add_parser("pack", help="a checkpoint folder (or a run: its newest checkpoint) -> parts + manifest")
    pack.add_argument("checkpoint", type=Path)
    pack.add_argument("--out", type=Path, required=True)
    pack.add_argument("--part-mib", type=float, default=16)
    pack.add_argument("--optimizers", action="store_true", help="keep the optimizer state (exact resume, about 3x the bytes)")
    pack.add_argument("--half", action="store_true", help="weights and EMA as float16 (half the bytes; unpack restores float32)")
    unpack = verbs.add_parser("unpack", help="parts + manifest -> RUN/checkpoints/step-XXXXXX")
    unpack.add_argument("pack", type=Path)
    unpack.add_argument("--run", type=Path, required=True)
    args = parser.parse_args()
    try:
        if args.verb == "pack":
            folder = latest_checkpoint(args.checkpoint / "checkpoints") or args.checkpoint
            parts = pack_checkpoint(folder, args.out, args.part_mib, args.optimizers, args.half)
            print(f"{folder} -> {len(parts)} parts in {args.out} ({sum(p.stat().st_size for p in parts) / 2**20:.1f} MiB)")
        else:
            print(f"unpacked {unpack_checkpoint(args.pack, args.run / 'checkpoints')}")
    except FacegenError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
