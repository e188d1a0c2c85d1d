"""How much of an aligned face square lies outside the photo (and is filled by padding), per zoom.

    python bench/bench_framing.py          # writes bench/results/framing.json

FFHQ framing (zoom 1) was designed for in-the-wild photos with margin around the face. The shared
UTKFace photos are tight crops, so the FFHQ square often leaves the photo and the padding
(reflect + blur + fade) fills the border; a tighter zoom trades background for face pixels.
For 300 photos of each shared folder (every 1/N-th, sorted names) this finds the face once, then
measures, for each zoom, the fraction of the face square outside the photo (a 32x32 grid of
points inside the square). No timing: the figures are geometry.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from facegen.data.align import ffhq_quad
from facegen.data.decode import decode_rgb
from facegen.data.landmarks import find_faces, keypoints

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ZOOMS = (1.0, 1.15, 1.3, 1.5)
PHOTOS = 300


def outside_fraction(quad: np.ndarray, h: int, w: int, grid: int = 32) -> float:
    top_left, bottom_left, _, top_right = quad
    t = (np.arange(grid) + 0.5) / grid
    u, v = np.meshgrid(t, t)
    points = top_left + u[..., None] * (top_right - top_left) + v[..., None] * (bottom_left - top_left)
    inside = (points[..., 0] >= 0) & (points[..., 0] <= w) & (points[..., 1] >= 0) & (points[..., 1] <= h)
    return float(1 - inside.mean())


def main() -> None:
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: this benchmark measures the shared face folders")
    results = {}
    for folder in ("celeba-10k", "utkface"):
        files = sorted((DATA / folder).iterdir())
        files = files[:: max(1, len(files) // PHOTOS)][:PHOTOS]
        fractions = {z: [] for z in ZOOMS}
        for path in files:
            image = decode_rgb(path.read_bytes())
            faces = find_faces(image)
            if not faces:
                continue
            points = keypoints(faces[0].landmarks)
            for z in ZOOMS:
                fractions[z].append(outside_fraction(ffhq_quad(points, z), *image.shape[:2]))
        results[folder] = {f"zoom {z:g}": {"faces": len(f), "mean_outside": round(float(np.mean(f)), 4),
                                          "share_over_10pct_outside": round(float(np.mean(np.array(f) > 0.10)), 4)}
                           for z, f in fractions.items()}
    out = ROOT / "bench" / "results" / "framing.json"
    out.write_text(json.dumps({"photos_per_folder": PHOTOS, "zooms": list(ZOOMS), "results": results}, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
