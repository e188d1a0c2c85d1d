"""Write one split of a face store as JPEG or WebP files, to move a store through a size-limited channel.

    python scripts/pack_store.py stores/faces64 --split train --format webp --quality 90 --out .devdata/train64

`facegen data prepare DIR --crop center --size N` on the folder rebuilds a store of the same faces
(the centre crop of an N x N picture at size N is the picture itself), compressed once: at 64 px
WebP quality 90 is about half the bytes of JPEG quality 90 at a similar error. Used to
send the training faces to a lent GPU machine, whose transfer limit (64 MiB) is below the size of
the uncompressed store; the evaluation reference (the holdout) never leaves this machine.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from facegen.data.store import FaceStore


def encode(face: np.ndarray, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":  # 4:4:4: at 64 px, halving colour resolution smears eyes and lips
        Image.fromarray(face).save(buffer, "JPEG", quality=quality, subsampling=0)
    else:
        Image.fromarray(face).save(buffer, "WEBP", quality=quality, method=6)
    return buffer.getvalue()


def fitting_quality(faces, fmt: str, mib: float) -> int:
    """The highest quality whose bytes, estimated from 300 evenly spread faces, fit `mib` MiB."""
    rows = np.linspace(0, len(faces) - 1, min(300, len(faces))).astype(int)
    for quality in (90, 85, 80, 75, 70):
        estimate = sum(len(encode(faces[r], fmt, quality)) for r in rows) / len(rows) * len(faces) / 2**20
        print(f"quality {quality}: about {estimate:.1f} MiB")
        if estimate <= mib:
            return quality
    raise SystemExit(f"even quality 70 takes more than {mib} MiB; carry fewer faces")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--split", default="train")
    parser.add_argument("--format", choices=("jpeg", "webp"), default="webp")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--fit-mib", type=float, default=None,
                        help="instead of --quality: the highest of 90, 85, 80, 75, 70 whose estimate (300 evenly spread faces) fits this many MiB")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    store = FaceStore(args.store)
    faces = store.split(args.split)
    if args.fit_mib is not None:
        args.quality = fitting_quality(faces, args.format, args.fit_mib)
    args.out.mkdir(parents=True, exist_ok=False)
    total, error = 0, 0.0
    for i, face in enumerate(faces):
        data = encode(face, args.format, args.quality)
        (args.out / f"{i:06d}.{'jpg' if args.format == 'jpeg' else 'webp'}").write_bytes(data)
        total += len(data)
        if i % 50 == 0:  # the compression error, on a sample
            back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
            error += np.abs(back - face).mean()
    record = {"store": str(args.store), "store_content_hash": store.content_hash, "split": args.split, "faces": len(faces),
              "format": args.format, "quality": args.quality, "bytes": total, "mean_abs_error_uint8": error / len(range(0, len(faces), 50))}
    (args.out.parent / f"{args.out.name}.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
