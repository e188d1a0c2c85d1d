"""One picture of the same seeds from several sample folders, one row per folder, so pilots and
settings are compared face by face (image k of every folder started from the same seed).

    python scripts/seed_grid.py docs/images/diffusion-pilots.png runs/evals/v-dpm++-35/samples \\
        runs/evals/minsnr5-dpm++-35/samples runs/evals/edm-edm-dpm++-35/samples --seeds 0-15 --scale 2

A folder is what `facegen sample` and `facegen eval` write: seedNNNNNN.png files. A missing seed
is an error naming the folder and the file, never a blank tile. --scale repeats pixels (nearest),
so the picture shows the model's exact pixels, only larger.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facegen.utils import make_grid, parse_seeds, save_png


def row(folder: Path, seeds: list[int], scale: int) -> np.ndarray:
    faces = []
    for seed in seeds:
        path = folder / f"seed{seed:06d}.png"
        if not path.exists():
            sys.exit(f"error: {path} does not exist; sample seed {seed} into {folder} first (facegen sample ... --seeds)")
        face = np.asarray(Image.open(path).convert("RGB"))
        faces.append(face.repeat(scale, 0).repeat(scale, 1))
    return make_grid(np.stack(faces), nrow=len(faces))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("folders", type=Path, nargs="+", help="sample folders, one row each, top to bottom")
    parser.add_argument("--seeds", default="0-15")
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    rows = [row(folder, seeds, args.scale) for folder in args.folders]
    picture = np.concatenate([rows[0]] + [r[2:] for r in rows[1:]])  # rows share their 2-pixel border
    save_png(args.out, picture)
    print(f"{args.out}: {len(rows)} rows of seeds {args.seeds}")


if __name__ == "__main__":
    main()
