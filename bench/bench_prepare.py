"""Benchmark `facegen data prepare`: speed against the in-memory writer it replaced, and peak
memory on a 10k and a 100k synthetic source.

    .venv/bin/python bench/bench_prepare.py [--celeba ../shared/data/celeba-10k] [--big 100000] [--runs 3]

Writes bench/results/prepare.json. Every prepare runs in a fresh Python (as the CLI would), so
its peak RSS (getrusage: the main process, and the largest decoding worker) is its own.

1. CelebA, 10,000 photos (89x109 JPEG) -> 64 px, a tenth held out, 2 workers: today's
   streaming writer against the in-memory writer of commit BASELINE (its prepare.py, read with
   `git show`), runs interleaved, medians compared. Also the streaming writer with 1 worker.
2. Synthetic: `--big` generated 160x160 JPEGs (smooth random pictures, ten folders of a tenth
   each) -> 128 px stores, a multi-GB store at 100k. The first folder alone (a tenth) against
   all of them, streaming writer; the in-memory writer on the first folder for comparison.
On a shared machine wall time depends on what else runs: the load average is recorded, and
CPU milliseconds per image give the cost of the work itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "3b5c68f"  # the last commit with the in-memory writer (prepare.py sorted every face in memory, then np.save)
PHOTO = 160  # side of the synthetic JPEGs


def run_one(spec: dict) -> dict:
    """One prepare in this (fresh) process: seconds, CPU and peak memory of it and its workers."""
    if spec["writer"] == "in-memory":
        import importlib.util

        code = subprocess.run(["git", "show", f"{BASELINE}:src/facegen/data/prepare.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        module_file = Path(spec["out"]).parent / "baseline_prepare.py"
        module_file.write_text(code)
        loader = importlib.util.spec_from_file_location("baseline_prepare", module_file)
        module = importlib.util.module_from_spec(loader)
        sys.modules["baseline_prepare"] = module  # its worker processes find their function by module name
        loader.loader.exec_module(module)
        _give_sources_split_of()
        prepare = module.prepare
    else:
        from facegen.data.prepare import prepare
    load, started = os.getloadavg()[0], time.perf_counter()
    store = prepare(spec["src"], spec["out"], size=spec["size"], crop="center" if spec["synthetic"] else "celeba",
                    holdout=spec["holdout"], workers=spec["workers"], progress=False)
    seconds = time.perf_counter() - started
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    faces = store.manifest["counts"]["faces"]
    store_bytes = sum(f.stat().st_size for f in Path(spec["out"]).rglob("*.npy"))
    return {
        "faces": faces,
        "seconds": round(seconds, 2),
        "ms_per_image": round(1000 * seconds / faces, 3),
        "cpu_ms_per_image": round(1000 * (own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime) / faces, 3),
        "peak_rss_mb": round(own.ru_maxrss / 1024, 1),  # the main process
        "peak_rss_worker_mb": round(workers.ru_maxrss / 1024, 1),  # the largest decoding worker (0: none)
        "store_gb": round(store_bytes / 1e9, 3),
        "load_average_before": round(load, 2),
        "content_hash": store.content_hash,
    }


def _give_sources_split_of() -> None:
    """The baseline's prepare.py reads CelebA's splits as `source.split_of`, a dict file name -> split;
    sources now keep a split code per name (`source.splits`, issue 19's compact listing)."""
    from facegen.data import sources

    if hasattr(sources.Source, "split_of"):
        return

    def split_of(source):
        if source.splits is None:
            return None
        if "_split_of" not in vars(source):  # built once: the baseline looks it up for every file
            source._split_of = {name: sources.SPLITS[code] for name, code in zip(source.names, source.splits.tolist())
                                if code != sources.UNLISTED}
        return source._split_of

    sources.Source.split_of = property(split_of)


def measure(src: Path, work: Path, writer: str, size: int, holdout: int, workers: int, synthetic: bool) -> dict:
    out = work / "store"
    spec = {"writer": writer, "src": str(src), "out": str(out), "size": size, "holdout": holdout, "workers": workers,
            "synthetic": synthetic}
    try:
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True, timeout=1200)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if done.returncode:
        sys.exit(f"{writer} prepare of {src} failed:\n{done.stderr[-3000:]}")
    return {"writer": writer, "workers": workers, **json.loads(done.stdout.splitlines()[-1])}


def median_of(runs: list[dict]) -> dict:
    """The run of median wall time, with every run's seconds beside it."""
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**best, "seconds_each_run": [r["seconds"] for r in runs]}


def synthetic_photo(index: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, (PHOTO // 8, PHOTO // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(coarse).resize((PHOTO, PHOTO), Image.BILINEAR).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_photos(args: tuple) -> None:
    folder, first, count = args
    for i in range(first, first + count):
        (folder / f"{i:07d}.jpg").write_bytes(synthetic_photo(i))


def make_synthetic(root: Path, total: int) -> list[Path]:
    """Ten folders of total/10 JPEGs: the first is the small source, the parent the big one."""
    tenth = total // 10
    folders = [root / f"part{k}" for k in range(10)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folders[k], k * tenth + j, min(1000, tenth - j)) for k in range(10) for j in range(0, tenth, 1000)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(write_photos, jobs))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-10k")
    parser.add_argument("--big", type=int, default=100_000, help="photos of the big synthetic source (the small one: a tenth)")
    parser.add_argument("--size", type=int, default=128, help="face size of the synthetic stores")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each writer on CelebA")
    parser.add_argument("--work", type=Path, default=None, help="folder for the photos and stores (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prepare.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(dir=args.work, prefix="bench-prepare-"))
    try:
        files = list(args.celeba.iterdir())
        for file in files:  # warm the page cache: we time decoding, not the disk
            file.read_bytes()
        holdout = len(files) // 10
        print("CelebA 10k: in-memory vs streaming writer, interleaved", file=sys.stderr)
        runs: dict[str, list] = {"in-memory": [], "streaming": []}
        for _ in range(args.runs):
            for writer in runs:
                runs[writer].append(measure(args.celeba, work, writer, 64, holdout, 2, synthetic=False))
                print(f"  {writer}: {runs[writer][-1]['seconds']} s", file=sys.stderr)
        old, new = median_of(runs["in-memory"]), median_of(runs["streaming"])
        one_worker = measure(args.celeba, work, "streaming", 64, holdout, 1, synthetic=False)
        celeba = {
            "source": os.path.relpath(args.celeba, ROOT),  # relative to the repository: no machine paths in results
            "size": 64, "crop": "celeba", "holdout": holdout,
            "in_memory_writer": {**old, "commit": BASELINE},
            "streaming_writer": new,
            "streaming_writer_1_worker": one_worker,
            "wall_per_image_streaming_vs_in_memory": round(new["ms_per_image"] / old["ms_per_image"], 3),
            "cpu_per_image_streaming_vs_in_memory": round(new["cpu_ms_per_image"] / old["cpu_ms_per_image"], 3),
            "speedup_2_vs_1_worker": round(one_worker["seconds"] / new["seconds"], 2),
            "same_store": len({r["content_hash"] for r in runs["in-memory"] + runs["streaming"] + [one_worker]}) == 1,
        }

        print(f"synthetic: writing {args.big:,} JPEGs", file=sys.stderr)
        t = time.perf_counter()
        folders = make_synthetic(work / "photos", args.big)
        generated_s = time.perf_counter() - t
        small_new = measure(folders[0], work, "streaming", args.size, 0, 2, synthetic=True)
        print(f"  streaming, {args.big // 10:,}: {small_new['seconds']} s", file=sys.stderr)
        small_old = measure(folders[0], work, "in-memory", args.size, 0, 2, synthetic=True)
        print(f"  in-memory, {args.big // 10:,}: {small_old['seconds']} s", file=sys.stderr)
        big_new = measure(work / "photos", work, "streaming", args.size, 0, 2, synthetic=True)
        print(f"  streaming, {args.big:,}: {big_new['seconds']} s", file=sys.stderr)
        synthetic = {
            "photos": f"generated {PHOTO}x{PHOTO} JPEGs (smooth random pictures, quality 90), {generated_s:.0f} s to write",
            "size": args.size, "crop": "center", "holdout": 0,
            f"streaming_{args.big // 10}": small_new,
            f"in_memory_{args.big // 10}": small_old,
            f"streaming_{args.big}": big_new,
            "peak_rss_main_big_vs_small": round(big_new["peak_rss_mb"] / small_new["peak_rss_mb"], 3),
            "peak_rss_worker_big_vs_small": round(big_new["peak_rss_worker_mb"] / small_new["peak_rss_worker_mb"], 3),
            "same_store_small": small_new["content_hash"] == small_old["content_hash"],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "benchmark": "facegen data prepare: streaming writer vs the in-memory one, and peak memory at 10x the photos",
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(), "platform": platform.platform()},
        "load_average": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "celeba_10k": celeba,
        "synthetic": synthetic,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
