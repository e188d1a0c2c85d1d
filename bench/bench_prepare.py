"""Benchmark `facegen data prepare`: the 10k CelebA images at 64x64, 2 workers vs 1.

    .venv/bin/python bench/bench_prepare.py [--src ../shared/data/celeba-10k] [--size 64]

Writes bench/results/prepare.json. The baseline (one worker, no process pool) runs in the
same invocation on the same files, so the ratio holds whatever the machine. Each variant
runs once after a warm-up pass that fills the page cache (we time decoding, not the disk).
On a shared machine wall time depends on what else runs: the load average is recorded,
and CPU milliseconds per image give the cost of the work itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from facegen.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_prepare(src: Path, size: int, workers: int, limit: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        load, cpu, started = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
        store = prepare(src, Path(tmp) / "store", size=size, crop="celeba", holdout=(limit or 10_000) // 10, limit=limit, workers=workers, progress=False)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        faces = store.manifest["counts"]["faces"]
        return {
            "workers": workers,
            "faces": faces,
            "seconds": round(seconds, 2),
            "images_per_s": round(faces / seconds, 1),
            "cpu_ms_per_image": round(1000 * cpu / faces, 3),  # work per image, whatever else runs
            "load_average_before": round(load, 2),  # other processes competing for the cores
            "content_hash": store.content_hash,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-10k")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="fewer files for a quick check")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prepare.json")
    args = parser.parse_args()

    for file in sorted(args.src.iterdir())[: args.limit]:  # warm the page cache
        file.read_bytes()
    baseline = timed_prepare(args.src, args.size, workers=1, limit=args.limit)
    parallel = timed_prepare(args.src, args.size, workers=2, limit=args.limit)
    result = {
        "benchmark": "facegen data prepare, CelebA crop, a tenth held out",
        "source": str(args.src),
        "size": args.size,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(), "platform": platform.platform()},
        "baseline_workers_1": baseline,
        "workers_2": parallel,
        "speedup_2_vs_1": round(baseline["seconds"] / parallel["seconds"], 2),
        "same_store": baseline["content_hash"] == parallel["content_hash"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
