"""Training and sampling throughput of facegen's loop against a plain reference loop, same run.

    python bench/bench_train.py                       # tiny (ddpm-tiny32) and celeba64, ~5 min on 2 cores
    python bench/bench_train.py --configs tiny --rounds 5

Reference: the way diffusers' examples/unconditional_image_generation/train_unconditional.py
trains: fp32, torch's default threads, contiguous tensors, no compile, AdamW with its default
(for-loop) CPU implementation, EMAModel without foreach, and `loss.item()` every step.
Candidate: facegen.train.Loop.train_step with the preset's options (threads, EMA foreach, ...).
Both start from the same weights and are fed the same batches and the same noise (each keeps
its own RNG state while they are interleaved), so their per-step losses must agree: that is
the "loss curve unchanged" check. Steps are interleaved (reference, candidate, reference, ...)
so that the load of a shared machine hits both alike; medians are reported.

FLOP/s: torch.utils.flop_counter counts one training step (forward + backward); the peak is a
measured fp32 matmul at the same thread count. Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegen.config import load_config
from facegen.data.store import write_store
from facegen.train import Loop

CONFIGS = {
    # name: (preset, overrides). celeba64 keeps its 35.7M-parameter UNet but uses batch 2 and
    # one untimed-warm-up-free step per contestant: one step at batch 32 takes minutes on this CPU.
    "tiny": ("ddpm-tiny32", ["model.prediction_type=epsilon"]),  # the reference trains epsilon (train_unconditional)
    "celeba64": ("ddpm-celeba64", ["batch_size=2", "channels_last=false", "threads=1", "num_workers=0"]),
}
COMMON = ["tensorboard=false", "warmup_steps=10", "log_every=1000", "sample_every=100000", "checkpoint_every=100000"]
DEFAULT_THREADS = torch.get_num_threads()


class ReferenceLoop:
    """diffusers train_unconditional's inner loop, on the candidate's initial weights and data order."""

    def __init__(self, loop: Loop, cfg: dict, store):
        from diffusers.training_utils import EMAModel

        from facegen.data.loader import FaceDataset
        from facegen.data.stream import FaceStream, FlippedFaces, StreamBatches

        self.unet = copy.deepcopy(loop.nets["unet"]).to(memory_format=torch.contiguous_format).train()
        self.scheduler = loop.built.loss.scheduler
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
        warmup = cfg["warmup_steps"]
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        e = cfg["ema"]
        self.ema = EMAModel(self.unet.parameters(), decay=e["decay"], use_ema_warmup=e["warmup"], inv_gamma=e["inv_gamma"], power=e["power"])
        faces = FlippedFaces(FaceDataset(store, "train"))
        batches = StreamBatches(FaceStream(len(faces), cfg["seed"], cfg["hflip"]), cfg["batch_size"])
        self.data = iter(torch.utils.data.DataLoader(faces, batch_sampler=batches, generator=torch.Generator()))

    def train_step(self) -> float:
        clean_images = next(self.data)
        noise = torch.randn(clean_images.shape, dtype=clean_images.dtype)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (clean_images.shape[0],))
        noisy_images = self.scheduler.add_noise(clean_images, noise, timesteps)
        model_output = self.unet(noisy_images, timesteps).sample
        loss = F.mse_loss(model_output.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad()
        self.ema.step(self.unet.parameters())
        return loss.detach().item()  # the example logs every step


class Side:
    """One contestant with its own RNG stream and thread count."""

    def __init__(self, name: str, step, threads: int, seed: int):
        self.name, self.step, self.threads = name, step, threads
        torch.manual_seed(seed)
        self.rng = torch.get_rng_state()
        self.times: list[float] = []
        self.losses: list[float] = []

    def run(self, timed: bool) -> None:
        torch.set_num_threads(self.threads)
        torch.set_rng_state(self.rng)
        start = time.perf_counter()
        loss = self.step()
        elapsed = time.perf_counter() - start
        self.rng = torch.get_rng_state()
        self.losses.append(loss)
        if timed:
            self.times.append(elapsed)


def matmul_peak(threads: int, n: int = 768, repeats: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(unet, batch: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    unet = copy.deepcopy(unet)
    t = torch.randint(0, 1000, (len(batch),))
    with FlopCounterMode(display=False) as counter:
        unet(batch, t).sample.square().mean().backward()
    return counter.get_total_flops()


def sampling_speed(loop: Loop, cfg: dict, sampler: str, steps: int, n: int, threads: int) -> float:
    """Images per second of facegen.sample.generate (the path `facegen sample` uses)."""
    from facegen.sample import generate

    torch.set_num_threads(threads)
    generator = loop.family.generator(loop.built, cfg)
    generate(generator, [0], batch_size=1, sampler=sampler, steps=1)  # warm-up
    seconds = _timed(lambda: generate(generator, range(n), batch_size=n, sampler=sampler, steps=steps))
    return n / seconds


def reference_sampling_speed(loop: Loop, sampler_steps: int, n: int) -> float:
    """DDPMPipeline with a DDIM scheduler at torch's default threads: the plain diffusers way."""
    from diffusers import DDIMScheduler, DDPMPipeline

    torch.set_num_threads(DEFAULT_THREADS)
    pipe = DDPMPipeline(unet=copy.deepcopy(loop.nets["unet"]).eval(), scheduler=DDIMScheduler.from_config(loop.built.loss.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    pipe(batch_size=1, num_inference_steps=1, output_type="np")
    seconds = _timed(lambda: pipe(batch_size=n, num_inference_steps=sampler_steps, generator=torch.Generator().manual_seed(0), output_type="np"))
    return n / seconds


def bench_config(name: str, rounds: int, warmup: bool, workdir: Path) -> dict:
    preset, overrides = CONFIGS[name]
    cfg = load_config(preset, [*overrides, *COMMON])
    res = cfg["resolution"]
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (64, res // 4, res // 4, 3)).astype(np.uint8).repeat(4, 1).repeat(4, 2)
    store = write_store(workdir / f"store-{name}", {"train": faces}, {"size": res, "source": "synthetic"})
    cfg["resolution"], cfg["name"], cfg["data"] = res, name, str(store.path)
    loop = Loop(cfg, store, workdir / f"run-{name}", resume=False)
    reference = ReferenceLoop(loop, cfg, store)
    ours_threads = cfg["threads"] or DEFAULT_THREADS

    def ours_step() -> float:
        loop.train_step()
        return float(loop.loss_sums.pop("loss"))  # the loop's own deferred sum, read here for the loss check

    # The reference again at the candidate's thread count separates "threads" from "the loop".
    same_threads = ReferenceLoop(loop, cfg, store)
    sides = [Side("reference", reference.train_step, DEFAULT_THREADS, cfg["seed"] + 1),
             Side("reference_same_threads", same_threads.train_step, ours_threads, cfg["seed"] + 1),
             Side("facegen", ours_step, ours_threads, cfg["seed"] + 1)]
    if warmup:
        for side in sides:  # warm-up step (allocations, oneDNN primitive caches), untimed
            side.run(timed=False)
    for _ in range(rounds):
        for side in sides:
            side.run(timed=True)
    batch = cfg["batch_size"]
    result = {"preset": preset, "overrides": overrides, "batch_size": batch, "resolution": res,
              "parameters": sum(p.numel() for p in loop.nets["unet"].parameters()), "timed_steps": rounds}
    flops = step_flops(reference.unet, torch.randn(batch, 3, res, res))
    for side in sides:
        seconds = statistics.median(side.times)
        peak = matmul_peak(side.threads)
        result[side.name] = {"threads": side.threads, "seconds_per_step": seconds, "train_img_per_s": batch / seconds,
                             "step_seconds": side.times, "losses": side.losses,
                             "flop_per_s": flops / seconds, "matmul_peak_flop_per_s": peak, "fraction_of_peak": flops / seconds / peak}
    ref, ours = result["reference"], result["facegen"]
    result["train_speedup"] = ours["train_img_per_s"] / ref["train_img_per_s"]
    result["train_speedup_same_threads"] = ours["train_img_per_s"] / result["reference_same_threads"]["train_img_per_s"]
    result["loss_max_rel_diff"] = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"], ours["losses"]))
    result["flops_per_step"] = flops
    steps, n = (25, 4) if name == "tiny" else (3, 1)
    result["sampling"] = {"sampler": "ddim", "steps": steps, "images": n,
                          "facegen_img_per_s": sampling_speed(loop, cfg, "ddim", steps, n, ours_threads),
                          "reference_img_per_s": reference_sampling_speed(loop, steps, n)}
    result["sampling"]["speedup"] = result["sampling"]["facegen_img_per_s"] / result["sampling"]["reference_img_per_s"]
    loop.accelerator.end_training()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,celeba64")
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per contestant (tiny); celeba64 uses 1 and no warm-up")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()
    results = {"machine": {"cpu_count": __import__("os").cpu_count(), "torch": torch.__version__, "platform": platform.platform(),
                           "default_threads": DEFAULT_THREADS, "load_average_start": list(__import__("os").getloadavg())}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            start = time.perf_counter()
            tiny = name == "tiny"
            results[name] = bench_config(name, args.rounds if tiny else 1, tiny, Path(tmp))
            results[name]["bench_seconds"] = time.perf_counter() - start
            r = results[name]
            print(f"{name}: train {r['facegen']['train_img_per_s']:.2f} img/s vs reference {r['reference']['train_img_per_s']:.2f} "
                  f"({r['train_speedup']:.2f}x; {r['train_speedup_same_threads']:.2f}x at equal threads), loss max rel diff {r['loss_max_rel_diff']:.1e}, "
                  f"{r['facegen']['fraction_of_peak']:.1%} of matmul peak; sampling {r['sampling']['facegen_img_per_s']:.2f} img/s "
                  f"vs {r['sampling']['reference_img_per_s']:.2f} ({r['sampling']['speedup']:.2f}x)", flush=True)
    results["machine"]["load_average_end"] = list(__import__("os").getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
