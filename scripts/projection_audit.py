"""How well a style GAN reaches real faces it never saw: project N held-out faces (`facegen
project --aligned` on each) and ask dlib's face embedding whether the projection is the same
person, against the same question for the nearest of M random samples (issue 28).

    python scripts/projection_audit.py runs/stylegan32 --ref stores/celeba32 --faces 16 --randoms 1000 \\
        --steps 300 --out docs/results/stylegan-projection.json --folder runs/stylegan32-projections \\
        --picture docs/images/stylegan-projection.png

Per face: PSNR of the projection (and of the pixel-nearest random sample), and the embedding
distance of the projection and of the embedding-nearest random sample to the real face; "same
person" is a distance below 0.6 (dlib's threshold, 99.38% on LFW). Faces are the holdout's,
evenly spread over its rows; random samples are seeds 0..M-1 at psi 1. A face whose embedding
cannot be computed (no face found by dlib's detector) is counted and left out of the shares.
The picture: real faces, their projections, the nearest random samples, one row each.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facegen import sample
from facegen.data.store import FaceStore
from facegen.metrics.identity import identity_embeddings
from facegen.project import project
from facegen.utils import atomic_write_json, make_grid, save_png

SAME_PERSON = 0.6   # dlib's threshold on its 128-d descriptor


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean(((a.astype(np.float64) - b.astype(np.float64)) / 255) ** 2))
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def share(flags: list[bool | None]) -> float | None:
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known else None


def summarise(per_face: list[dict]) -> dict:
    """Mean PSNRs, and each same-person share with the count it stands on: a share is over the
    faces where dlib found a face on both sides (the real face and the projection, or the real
    face and at least one random sample)."""
    projection = [f["same_projection"] for f in per_face if f.get("same_projection") is not None]
    nearest = [f["same_nearest_random"] for f in per_face if f.get("same_nearest_random") is not None]
    return {
        "psnr_projection_db_mean": round(float(np.mean([f["psnr_projection_db"] for f in per_face])), 3),
        "psnr_nearest_random_db_mean": round(float(np.mean([f["psnr_nearest_random_db"] for f in per_face])), 3),
        "real_faces_with_identity": sum("identity" not in f for f in per_face),
        "share_same_person_projection": share(projection), "projection_pairs_compared": len(projection),
        "share_same_person_nearest_random": share(nearest), "nearest_random_pairs_compared": len(nearest),
    }


def audit(run: str, ref: str, faces: int, randoms: int, steps: int, folder: Path, distance: str = "pixels+inception",
          progress: bool = True) -> tuple[dict, np.ndarray]:
    """The audit record, and the picture (3 rows: real, projected, nearest random)."""
    store = FaceStore(ref)
    rows = store.subset_rows("holdout", faces)                 # evenly spread over the holdout
    real = np.asarray(store.subset("holdout", faces))
    generator = sample.load_generator(run, "cpu")
    projected = []
    for row, face in zip(rows, real):
        photo = folder / f"holdout-{row:06d}.png"
        photo.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(photo)
        project(run, photo, folder / f"holdout-{row:06d}", steps=steps, aligned=True, distance=distance, overwrite=True,
                show_progress=progress, device="cpu")
        projected.append(np.asarray(Image.open(folder / f"holdout-{row:06d}" / "projected.png").convert("RGB")))
    projected = np.stack(projected)
    samples = sample.generate(generator, list(range(randoms)), batch_size=50, psi=1.0)

    e_real = identity_embeddings(real, progress=progress, label="real faces")
    e_proj = identity_embeddings(projected, progress=progress, label="projections")
    e_rand = identity_embeddings(samples, progress=progress, label="random samples")
    found = ~np.isnan(e_rand).any(1)
    pixel_d = ((real[:, None].astype(np.float32) - samples[None].astype(np.float32)) ** 2).reshape(len(real), len(samples), -1).mean(-1)

    per_face, nearest_pictures = [], []
    for i, row in enumerate(rows):
        entry = {"holdout_row": int(row), "psnr_projection_db": round(psnr(projected[i], real[i]), 3)}
        j = int(pixel_d[i].argmin())
        entry["psnr_nearest_random_db"] = round(psnr(samples[j], real[i]), 3)
        entry["pixel_nearest_seed"] = j
        if np.isnan(e_real[i]).any():
            entry.update(identity="no face found in the real face", same_projection=None, same_nearest_random=None)
            nearest_pictures.append(samples[j])
        else:
            d_proj = float(np.linalg.norm(e_proj[i] - e_real[i])) if not np.isnan(e_proj[i]).any() else None
            d_rand = np.where(found, np.linalg.norm(np.nan_to_num(e_rand) - e_real[i], axis=1), np.inf)
            k = int(d_rand.argmin()) if found.any() else None
            entry.update(distance_projection=None if d_proj is None else round(d_proj, 4),
                         same_projection=None if d_proj is None else d_proj < SAME_PERSON,
                         identity_nearest_seed=k, distance_nearest_random=None if k is None else round(float(d_rand[k]), 4),
                         same_nearest_random=None if k is None else bool(d_rand[k] < SAME_PERSON))
            nearest_pictures.append(samples[k if k is not None else j])
        per_face.append(entry)

    model = sample.model_dir(run)
    record = {
        "run": Path(run).as_posix(), "model": json.loads((model / "facegen.json").read_text()).get("name"),
        "weights_sha256": sample.weights_hash(generator), "store": store.content_hash, "resolution": generator.resolution,
        "faces": f"{len(rows)} holdout faces, evenly spread over its {len(store.split('holdout'))} rows",
        "projection": {"steps": steps, "space": "W (one w for every layer)", "distance": distance, "aligned": True},
        "random_samples": {"n": randoms, "seeds": f"0-{randoms - 1}", "psi": 1.0, "faces_found": int(found.sum())},
        "same_person_threshold": SAME_PERSON,
        "summary": summarise(per_face),
        "per_face": per_face,
    }
    picture = make_grid(np.concatenate([real, projected, np.stack(nearest_pictures)]), nrow=len(real))
    return record, picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a style GAN run (or its model/ folder)")
    parser.add_argument("--ref", required=True, help="the store whose holdout faces are projected")
    parser.add_argument("--faces", type=int, default=16)
    parser.add_argument("--randoms", type=int, default=1000, help="random samples searched for the nearest face")
    parser.add_argument("--steps", type=int, default=300, help="projection steps per face")
    parser.add_argument("--distance", default="pixels+inception")
    parser.add_argument("--out", required=True, help="JSON to write")
    parser.add_argument("--folder", required=True, help="where each face's `facegen project` folder goes")
    parser.add_argument("--picture", help="also write this PNG: real faces, projections, nearest random samples")
    args = parser.parse_args()
    record, picture = audit(args.run, args.ref, args.faces, args.randoms, args.steps, Path(args.folder), args.distance)
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), **record}
    if args.picture:
        save_png(args.picture, picture)
        record["picture"] = Path(args.picture).as_posix()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, record)
    print(json.dumps(record["summary"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
