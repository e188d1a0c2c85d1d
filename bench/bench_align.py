"""Benchmark face alignment: faces/s on 250x250 photos with background, 2 processes vs 1.

    .venv/bin/python bench/bench_align.py [--src ../shared/data/utkface] [--photos 200] [--size 64]

Each photo is a shared UTKFace face shrunk to 100-160 px and pasted at a random place on a
250x250 textured background, so detection has to search the whole picture. The baseline
(one process) and the pool of two processes align the same photos in the same run, so the
ratio holds whatever the machine; both load the dlib models before the clock starts. On a
shared machine the wall-clock ratio says little: faces per CPU-second is also recorded.
Also times the face check on 64x64 aligned faces (one process), as used by evaluation.
Writes bench/results/align.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facegen.data.align import check_faces, crop_align
from facegen.data.landmarks import preload
from facegen.data.transforms import Skip

ROOT = Path(__file__).resolve().parents[1]
PHOTO_SIDE = 250


def make_photos(src: Path, n: int, seed: int = 0) -> np.ndarray:
    """(n, 250, 250, 3) uint8: a shared face on a smooth random background each."""
    rng = np.random.default_rng(seed)
    files = sorted(src.glob("*.jpg"))
    photos = []
    for path in rng.choice(files, n, replace=False):
        face = np.asarray(Image.open(path).convert("RGB"))
        side = int(rng.integers(100, 161))
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        noise = cv2.GaussianBlur(rng.uniform(0, 255, (PHOTO_SIDE, PHOTO_SIDE, 3)).astype(np.float32), (0, 0), 8)
        photo = np.clip(1.5 * (noise - noise.mean()) + rng.uniform(60, 200, 3), 0, 255).astype(np.uint8)
        top, left = rng.integers(0, PHOTO_SIDE - side + 1, 2)
        photo[top : top + side, left : left + side] = face
        photos.append(photo)
    return np.stack(photos)


def align_all(photos: np.ndarray, size: int) -> tuple[int, float]:
    """(faces aligned from `photos`, CPU seconds this process spent on it); skips count zero."""
    started, found = time.process_time(), 0
    for photo in photos:
        try:
            found += len(crop_align(photo, size))
        except Skip:
            pass
    return found, time.process_time() - started


def warm_up(size: int) -> None:
    """Load the detector and landmark models in this process (once per worker)."""
    cv2.setNumThreads(1)  # one process per core: OpenCV's own threads would only compete
    preload()


def timed(photos: np.ndarray, size: int, processes: int) -> dict:
    chunks = np.array_split(photos, 8 * processes)
    if processes == 1:
        warm_up(size)
        started = time.perf_counter()
        results = [align_all(c, size) for c in chunks]
    else:
        with ProcessPoolExecutor(processes, initializer=warm_up, initargs=(size,)) as pool:
            list(pool.map(time.sleep, [0.5] * processes))  # wait until every worker is warm
            started = time.perf_counter()
            results = list(pool.map(align_all, chunks, [size] * len(chunks)))
    seconds = time.perf_counter() - started
    faces, cpu_seconds = sum(r[0] for r in results), sum(r[1] for r in results)
    # faces per CPU-second: what one uncontended core does, even when the machine is shared.
    return {"processes": processes, "photos": len(photos), "faces": faces, "seconds": round(seconds, 2),
            "faces_per_s": round(faces / seconds, 1), "cpu_seconds": round(cpu_seconds, 2),
            "faces_per_cpu_s": round(faces / cpu_seconds, 1)}


def timed_check(photos: np.ndarray, size: int) -> dict:
    aligned = []
    for photo in photos:
        try:
            aligned.append(crop_align(photo, size)[0])
        except Skip:
            pass
    started, cpu_started = time.perf_counter(), time.process_time()
    checks = check_faces(np.stack(aligned))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"images": len(aligned), "size": size, "seconds": round(seconds, 2), "images_per_s": round(len(aligned) / seconds, 1),
            "images_per_cpu_s": round(len(aligned) / cpu_seconds, 1), "detected": sum(c.found for c in checks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "align.json")
    args = parser.parse_args()

    photos = make_photos(args.src, args.photos)
    baseline = timed(photos, args.size, processes=1)
    parallel = timed(photos, args.size, processes=2)
    result = {
        "benchmark": f"crop_align (HOG + 68 landmarks + FFHQ warp) on {PHOTO_SIDE}x{PHOTO_SIDE} photos with background, output {args.size}x{args.size}",
        "source": os.path.relpath(args.src, ROOT),  # relative to the repository: no machine paths in results
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_avg_1min": round(os.getloadavg()[0], 1),
                    "python": platform.python_version(), "platform": platform.platform()},
        "baseline_processes_1": baseline,
        "processes_2": parallel,
        "speedup_2_vs_1": round(parallel["faces_per_s"] / baseline["faces_per_s"], 2),
        "face_check_1_process": timed_check(photos[:100], args.size),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
