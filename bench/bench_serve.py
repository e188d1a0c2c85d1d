"""Benchmark `facegen serve`: 200 face requests at concurrency 16 on 127.0.0.1, micro-batching vs none.

    .venv/bin/python bench/bench_serve.py [--requests 200] [--concurrency 16] [--family ddpm|gan]

A tiny random-weight model (pixel diffusion by default: 32x32, 4 DDIM steps) is exported
to a temporary run, and `facegen serve` runs it in its own process, once with batching
(--max-batch 16 --window-ms 5) and once with --max-batch 1, the baseline, in the same
invocation. Every request asks for a distinct seed, so the cache never answers. Writes
bench/results/serve.json: throughput, p50/p95 latency, errors (must be 0), and the speed-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def export_tiny_model(family_name: str, out: Path) -> None:
    """A random-weight model through the family's own build/export, as a trained run would be."""
    from facegen.families import get_family

    family = get_family(family_name)
    if family_name == "ddpm":
        model = {**family.model_defaults, "block_out_channels": [16, 32], "layers_per_block": 1, "attention_resolutions": [],
                 "norm_num_groups": 8, "sampler": "ddim", "sample_steps": 4}
        cfg = {"name": "bench-ddpm", "lr": 1e-4, "adam_betas": [0.9, 0.999], "weight_decay": 0.0, "model": model}
    else:
        cfg = {"name": "bench-gan", "model": {"z_dim": 64, "g_channels": 128}}
    family.export(family.build(cfg, 32), cfg, out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, max_batch: int, window_ms: float, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "facegen.cli", "serve", str(run), "--port", str(port),
               "--max-batch", str(max_batch), "--window-ms", str(window_ms), "--queue", "256"]
    # Torch's threads spin while they wait; on a small shared machine they fight other
    # processes (and the load generator) for cores, so the thread count is fixed and recorded.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"facegen serve exited: {server.stderr.read().decode()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("facegen serve did not start within 180 s")


async def load(url: str, seeds: list[int], concurrency: int) -> tuple[list[float], list[str], float]:
    """Request every seed once with `concurrency` clients; latencies (s), errors, wall seconds."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for seed in seeds:
        queue.put_nowait(seed)
    latencies: list[float] = []
    errors: list[str] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            seed = queue.get_nowait()
            started = time.perf_counter()
            try:
                r = await http.get(f"{url}/face.png", params={"seed": seed})
                if r.status_code != 200 or r.headers.get("content-type") != "image/png":
                    errors.append(f"seed {seed}: HTTP {r.status_code}")
            except httpx.HTTPError as e:
                errors.append(f"seed {seed}: {type(e).__name__}")
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def measure(run: Path, max_batch: int, window_ms: float, first_seed: int, requests: int, concurrency: int, threads: int) -> dict:
    server, url = start_server(run, max_batch, window_ms, threads)
    try:
        asyncio.run(load(url, list(range(10**6, 10**6 + 2 * concurrency)), concurrency))   # warm-up: first calls are slow
        latencies, errors, seconds = asyncio.run(load(url, list(range(first_seed, first_seed + requests)), concurrency))
        serving = httpx.get(url + "/info").json()["serving"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = np.array(latencies) * 1000
    return {"max_batch": max_batch, "window_ms": window_ms, "requests": requests, "concurrency": concurrency,
            "seconds": round(seconds, 2), "requests_per_s": round(requests / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "errors": len(errors), "error_examples": errors[:5],
            "mean_batch": round(serving["images"] / max(serving["batches"], 1), 2), "largest_batch": serving["largest_batch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--family", choices=["ddpm", "gan"], default="ddpm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server process")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        export_tiny_model(args.family, run / "model")
        info = json.loads((run / "model" / "facegen.json").read_text())
        baseline = measure(run, max_batch=1, window_ms=0, first_seed=0, requests=args.requests, concurrency=args.concurrency, threads=args.threads)
        batched = measure(run, max_batch=16, window_ms=5, first_seed=0, requests=args.requests, concurrency=args.concurrency, threads=args.threads)
    result = {
        "benchmark": f"facegen serve: {args.requests} GET /face.png (distinct seeds) at concurrency {args.concurrency}, 127.0.0.1",
        "model": {k: info.get(k) for k in ("name", "family", "resolution", "sampler", "steps")},
        "baseline": baseline,
        "batched": batched,
        "speedup": round(batched["requests_per_s"] / baseline["requests_per_s"], 2),
        "machine": {"cpus": os.cpu_count(), "server_torch_threads": args.threads, "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1m": round(os.getloadavg()[0], 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if baseline["errors"] or batched["errors"]:
        raise SystemExit("errors during the benchmark (see error_examples)")


if __name__ == "__main__":
    main()
