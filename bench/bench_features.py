"""Evaluation speed: Inception feature extraction and the Frechet distance.

    .venv/bin/python bench/bench_features.py [--images 64] [--dim 2048]

1. Feature extraction (images/s, 64x64 CelebA faces -> 299x299 -> 2048-d), which bounds
   every evaluation on a CPU. Baseline in the same run: the same images on one thread.
   Also the plain (not frozen) TorchScript network on all threads, the cost the freeze saves.
2. The Frechet distance at d=2048 through the eigen route (facegen.metrics.fid) against
   scipy.linalg.sqrtm (the pytorch-fid / clean-fid route), same matrices, same run, both
   with one BLAS thread: on a shared 2-core machine OpenBLAS threads spin against other
   jobs and the wall time measures the load, not the method.
Writes bench/results/features.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS (see above)

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "features.json"
CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-10k"


def faces(count: int) -> tuple[np.ndarray, str]:
    """`count` 64x64 CelebA faces, or random pictures when the folder is absent (speed
    does not depend on content)."""
    from facegen.data.transforms import crop_celeba
    from facegen.metrics.images import ImageFolder

    if CELEBA.is_dir():
        folder = ImageFolder(CELEBA, limit=count)
        return np.stack([crop_celeba(folder[i], 64) for i in range(count)]), "celeba-10k 64x64"
    return np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8), "random 64x64"


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench_extraction(images: np.ndarray) -> dict:
    import torch

    from facegen.metrics import inception

    inception.extract_features(images[:4], progress=False)  # load + freeze outside the clock
    cores = os.cpu_count() or 1
    out = {}
    for label, threads in (("1 thread (baseline)", 1), (f"{cores} threads", cores)):
        wall, cpu, _ = timed(lambda: inception.extract_features(images, threads=threads, progress=False))
        out[label] = {"images_per_s": len(images) / wall, "images_per_cpu_s": len(images) / cpu, "seconds": wall}
    # the unfrozen network: what torch.jit.freeze + optimize_for_inference saves
    plain = torch.jit.load(str(inception.network_path()), map_location="cpu").eval()
    batch = inception.network_input(inception.clean_resized(images, range(len(images))))
    torch.set_num_threads(cores)
    with torch.inference_mode():
        plain(batch[:4])
        wall, cpu, _ = timed(lambda: [plain(batch[i : i + 32]) for i in range(0, len(batch), 32)])
    out[f"plain TorchScript, {cores} threads, network only"] = {"images_per_s": len(images) / wall,
                                                                "images_per_cpu_s": len(images) / cpu, "seconds": wall}
    base = out["1 thread (baseline)"]["images_per_s"]
    for v in out.values():
        v["ratio_to_baseline"] = v["images_per_s"] / base
    return out


def bench_frechet(dim: int, repeats: int = 2) -> dict:
    import scipy.linalg

    from facegen.metrics.fid import frechet_distance, gaussian_stats

    rng = np.random.default_rng(0)
    # two covariance matrices shaped like Inception features: 4,096 samples of a skewed spectrum
    scale = rng.gamma(0.5, 1.0, dim)
    mu_a, s_a = gaussian_stats(rng.normal(size=(4096, dim)) * scale)
    mu_b, s_b = gaussian_stats(rng.normal(size=(4096, dim)) * scale * 1.1 + 0.05)

    def scipy_route():
        covmean = scipy.linalg.sqrtm(s_a @ s_b).real
        return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))

    ours = [timed(lambda: frechet_distance(mu_a, s_a, mu_b, s_b)) for _ in range(repeats)]
    ref = [timed(scipy_route) for _ in range(repeats)]
    ms_ours, ms_ref = min(t[0] for t in ours) * 1e3, min(t[0] for t in ref) * 1e3
    cpu_ours, cpu_ref = min(t[1] for t in ours) * 1e3, min(t[1] for t in ref) * 1e3
    return {"dim": dim, "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
            "eigen_route_ms": ms_ours, "scipy_sqrtm_ms (baseline)": ms_ref, "speedup": ms_ref / ms_ours,
            "eigen_route_cpu_ms": cpu_ours, "scipy_sqrtm_cpu_ms": cpu_ref, "speedup_cpu": cpu_ref / cpu_ours,
            "value_eigen": ours[0][2], "value_scipy": ref[0][2], "relative_difference": abs(ours[0][2] - ref[0][2]) / abs(ref[0][2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args()
    from facegen.utils import atomic_write_json

    images, source = faces(args.images)
    result = {
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor(), "load_average_at_start": os.getloadavg()},
        "images": {"count": len(images), "source": source},
        "extraction": bench_extraction(images),
        "frechet": bench_frechet(args.dim),
    }
    result["machine"]["load_average_at_end"] = os.getloadavg()
    atomic_write_json(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
