"""Training throughput of latent diffusion against pixel diffusion at the same output resolution.

    python bench/bench_ldm.py                       # tiny (64px), ~2 min on 2 cores
    python bench/bench_ldm.py --configs tiny ffhq128 --steps 3

Contestants, one optimizer step each (forward + backward + AdamW), same batch size:
- pixel: the ldm preset's UNet (same widths and depth) built by the pixel family at the image
  resolution on 3 channels, with attention at every level of 32x32 or smaller (ADM's pixel
  setting: attention at 64x64 and above costs more than it gives), trained with the pixel
  DenoisingLoss: the baseline;
- latent (cached): the ldm preset's UNet on the latents (resolution / f, latent channels),
  the latents already encoded (model.cache_latents);
- latent (encode): the same, encoding each batch with the frozen first stage on the fly.
Wall and CPU-second throughput are both reported (CPU seconds of this process are less
sensitive to other jobs on a shared machine). Steps are interleaved (pixel, cached, encode, pixel, ...) so the load of a shared machine hits
all alike; medians are reported. Untrained weights: throughput does not depend on them.
Writes bench/results/ldm.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from facegen.config import load_config
from facegen.families.ae.networks import make_autoencoder
from facegen.families.ddpm.networks import make_denoiser, make_scheduler
from facegen.families.diffusion.loss import DdpmObjective, DenoisingLoss, Latents
from facegen.families.ldm import LatentDiffusionOptions
from facegen.families.ldm.networks import make_latent_unet

CONFIGS = {  # name: (ae preset, ldm preset, resolution, batch)
    "tiny": ("ae-tiny64", "ldm-tiny64", 64, 8),
    "ffhq128": ("ae-ffhq128", "ldm-ffhq128", 128, 2),  # the GPU recipe; batch 2 so a CPU step takes seconds
}


class Contestant:
    def __init__(self, unet, loss, images_fn):
        self.unet, self.loss, self.images_fn = unet, loss, images_fn
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        self.times: list[float] = []      # wall seconds per step
        self.cpu_times: list[float] = []  # CPU seconds of this process per step: less sensitive to other jobs' load

    def step(self, batch: torch.Tensor) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, _ = self.loss("main", {"unet": self.unet}, self.images_fn(batch))
        loss.mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu_start)


def bench(name: str, steps: int) -> dict:
    ae_preset, ldm_preset, resolution, batch = CONFIGS[name]
    torch.manual_seed(0)
    ae, ldm = load_config(ae_preset)["model"], load_config(ldm_preset)["model"]
    vae = make_autoencoder(resolution, ae["downsample"], tuple(ae["channels"]), ae["latent_channels"], ae["layers_per_block"], ae["norm_groups"])
    vae.eval().requires_grad_(False)
    factor = ae["downsample"]
    levels = [resolution // 2**i for i in range(len(ldm["block_out_channels"]))]
    pixel_model = {**ldm, "attention_resolutions": [size for size in levels if size <= 32]}  # ADM's pixel setting
    scheduler = make_scheduler(LatentDiffusionOptions(**ldm))
    latent_loss = DenoisingLoss(DdpmObjective(scheduler), Latents(vae))
    contestants = {
        "pixel": Contestant(make_denoiser(LatentDiffusionOptions(**pixel_model), resolution), DenoisingLoss(DdpmObjective(scheduler)), lambda x: x),
        "latent_cached": Contestant(make_latent_unet(LatentDiffusionOptions(**ldm), vae, resolution), DenoisingLoss(DdpmObjective(scheduler)), None),
        "latent_encode": Contestant(make_latent_unet(LatentDiffusionOptions(**ldm), vae, resolution), latent_loss, lambda x: x),  # the loss encodes
    }
    images = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    cached = latent_loss.latents(images)  # what the latent cache hands the loss
    contestants["latent_cached"].images_fn = lambda x: cached
    for c in contestants.values():  # one untimed warm-up step each
        c.step(images)
        c.times.clear()
        c.cpu_times.clear()
    order = list(contestants.values())
    for i in range(steps):  # rotate the order: no contestant always pays for the previous one's freed memory
        for c in order[i % len(order):] + order[: i % len(order)]:
            c.step(images)
    result = {"resolution": resolution, "latent_shape": list(cached.shape[1:]), "batch": batch, "steps": steps,
              "unet_params_M": round(sum(p.numel() for p in contestants["pixel"].unet.parameters()) / 1e6, 2)}
    for key, c in contestants.items():
        result[f"{key}_img_per_s"] = round(batch / statistics.median(c.times), 2)
        result[f"{key}_img_per_cpu_s"] = round(batch / statistics.median(c.cpu_times), 2)
    for unit in ("img_per_s", "img_per_cpu_s"):
        for key in ("latent_cached", "latent_encode"):
            result[f"speedup_{key}_vs_pixel_{unit}"] = round(result[f"{key}_{unit}"] / result[f"pixel_{unit}"], 2)
    print(name, json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny"], choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contestant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU seconds measure the work alone)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(__file__).parent / "results" / "ldm.json"
    results = {}
    for name in args.configs:  # written after each config: a long GPU-sized config can be stopped without losing the rest
        results[name] = bench(name, args.steps)
        out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                   "torch": torch.__version__, "results": results}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
