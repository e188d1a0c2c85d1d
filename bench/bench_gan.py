"""Benchmark GAN training: images/s of the shared loop for the 64 and 96 presets.

    .venv/bin/python bench/bench_gan.py [--steps 8] [--presets dcgan-tiny64,gan-cpu64,gan-resnet64,dcgan-celeba96,wgan-gp-celeba96]
    .venv/bin/python bench/bench_gan.py --presets gan-resnet64,stylegan-tiny32,stylegan-r3gan-tiny32 \
        --set resolution=32 batch_size=32 --threads 1 --out bench/results/gan-style.json   # the new nets vs the SN-GAN

For each preset, the same nets and loss are trained twice in the same run:
  baseline  a bare PyTorch loop (phases, backward, optimizer steps; no accelerate, EMA,
            data loading, logging), on one fixed batch;
  loop      `facegen train` itself (facegen.train.train) on a synthetic face store.
The ratio loop/baseline is what the shared loop costs (or saves). Images/s counts the
images of a generator step (`batch_size`); a WGAN critic also reads n_critic batches per
step. The 96px presets run with batch_size 16 so that the benchmark stays in minutes on a
CPU (recorded in the JSON). On a shared CPU, two torch threads can spin against each other
and run several times slower than one: images per CPU-second of the baseline is recorded
too, and `--threads 1` (or OMP_NUM_THREADS=1 for `facegen train`) is the remedy.
Writes bench/results/gan.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facegen.config import load_config
from facegen.data.store import write_store
from facegen.families import get_family
from facegen.train import train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESETS = "dcgan-tiny64,gan-cpu64,gan-resnet64,dcgan-celeba96,wgan-gp-celeba96"
CPU_BATCH_96 = 16


def synthetic_store(folder: Path, size: int, n: int = 256) -> Path:
    if (folder / f"s{size}").is_dir():
        return folder / f"s{size}"
    faces = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return write_store(folder / f"s{size}", {"train": faces}, {"size": size, "source": "synthetic"}).path


def bare_loop(cfg: dict, steps: int) -> dict:
    """The baseline: the family's phases in a plain loop on one batch, after one warm-up step."""
    torch.manual_seed(0)
    built = get_family(cfg["family"]).build(cfg, cfg["resolution"])
    images = torch.rand(cfg["batch_size"], 3, cfg["resolution"], cfg["resolution"]) * 2 - 1

    def step():
        for phase in built.phases:
            for _ in range(phase.repeats):
                loss, _ = built.loss(phase.name, built.nets, images)
                phase.optimizer.zero_grad(set_to_none=True)
                loss.mean().backward()
                phase.optimizer.step()
                if phase.after_step:
                    phase.after_step()

    step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = steps * cfg["batch_size"]
    return {"img_per_s": n / wall, "img_per_cpu_s": n / cpu, "steps": steps}


def shared_loop(preset: str, overrides: list[str], store: Path, steps: int, out: Path) -> dict:
    """`facegen train` for 1 + steps steps; img/s is the median of the per-step rows after the first."""
    cpu = time.process_time()
    train(preset, store, out, [*overrides, "log_every=1", "tensorboard=false", "sample_every=100000",
                               "checkpoint_every=100000", "sample_seeds=0-3"], steps=steps + 1)
    cpu = time.process_time() - cpu
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    return {"img_per_s": statistics.median(r["img_per_s"] for r in rows), "steps": len(rows),
            "cpu_s_whole_command": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; 1 on a busy machine)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every preset, e.g. resolution=32 batch_size=32 to race nets at one size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gan.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, preset in enumerate(args.presets.split(",")):
            cfg = load_config(preset)
            overrides = [f"batch_size={CPU_BATCH_96}"] if cfg["resolution"] >= 96 and not torch.cuda.is_available() else []
            overrides += args.set
            cfg = load_config(preset, overrides)
            load_before = os.getloadavg()[0]
            base = bare_loop(cfg, args.steps)
            loop = shared_loop(preset, overrides, synthetic_store(tmp, cfg["resolution"]), args.steps, tmp / f"run{i}")
            row = {"preset": preset, "resolution": cfg["resolution"], "batch_size": cfg["batch_size"],
                   "n_critic": cfg["model"]["n_critic"], "baseline_bare_loop": base, "shared_loop": loop,
                   "ratio_loop_vs_bare": loop["img_per_s"] / base["img_per_s"], "load_average": [load_before, os.getloadavg()[0]]}
            print(f"{preset:18s} {cfg['resolution']}px batch {cfg['batch_size']:3d}: bare {base['img_per_s']:7.1f} img/s "
                  f"({base['img_per_cpu_s']:.1f}/CPU-s), loop {loop['img_per_s']:7.1f} img/s, ratio {row['ratio_loop_vs_bare']:.2f}",
                  flush=True)
            if results:  # against the first preset, measured in this run (these machines are noisy)
                row["loop_img_per_s_vs_first"] = loop["img_per_s"] / results[0]["shared_loop"]["img_per_s"]
            results.append(row)
    report = {"benchmark": "gan training", "overrides": args.set, "device": "cuda" if torch.cuda.is_available() else "cpu",
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
