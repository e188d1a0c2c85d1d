"""Pixel-space diffusion (DDPM/DDIM, or EDM): a UNet2DModel denoising 3-channel images directly.

The export is a DDPMPipeline folder (unet/, scheduler/, model_index.json) plus facegen.json,
so `DDPMPipeline.from_pretrained(RUN/model)` works with plain diffusers. An EDM model's
scheduler/ is an EDMEulerScheduler: sample it with a loop that applies init_noise_sigma and
scale_model_input (StableDiffusionPipeline's), not DDPMPipeline's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDPMPipeline, UNet2DModel

from facegen.families.base import NO_TRUNCATION, Built, FamilyOptions, Phase, Range, integer, integers, number, option, refuse_outside, text
from facegen.families.ddpm.generator import DiffusionGenerator
from facegen.families.ddpm.networks import make_denoiser, make_objective, make_scheduler
from facegen.families.diffusion.loss import DenoisingLoss
from facegen.families.diffusion.samplers import OBJECTIVES, check_sampler
from facegen.nets.unet import plain_copy
from facegen.utils import FacegenError, atomic_write_json


@dataclass(frozen=True)
class DiffusionOptions(FamilyOptions):
    """The `model:` section of a ddpm run (the ldm family extends it)."""

    family: ClassVar[str] = "ddpm"
    # UNet
    block_out_channels: list = option([128, 256, 256, 256])  # channels per level (resolution halves at each)
    layers_per_block: int = 2
    attention_resolutions: list = option([16])   # feature-map sizes with self-attention
    attention_head_dim: int = 8                  # channels per attention head
    dropout: float = 0.0
    norm_num_groups: int | None = None           # None = 32 or the largest that divides every level
    weight_standardized: bool = False            # weight-standardised ResNet convs (exported baked in)
    # objective: ddpm (discrete betas, epsilon/v target) or edm (Karras et al. 2022: sigmas, preconditioning)
    objective: str = "ddpm"
    # ddpm objective: noise schedule and target
    num_train_timesteps: int = 1000              # 1000, 1500, 2000, ...
    beta_schedule: str = "linear"                # linear | scaled_linear | squaredcos_cap_v2 (cosine)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"             # epsilon | v_prediction
    snr_gamma: float | None = None               # min-SNR-gamma loss weighting (Hang et al. 2023); None = plain MSE
    # edm objective (prediction_type, betas and snr_gamma do not apply: EDM has its own target and weighting)
    sigma_data: float = 0.5                      # std of the data (faces in [-1, 1]: 0.5, EDM's)
    sigma_min: float = 0.002                     # sampling's noise range
    sigma_max: float = 80.0
    p_mean: float = -1.2                         # training noise levels: ln sigma ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    rho: float = 7.0                             # sampling's sigma spacing (Karras schedule)
    # sampling defaults written into the export (facegen sample can override them)
    sampler: str = "ddim"                        # a name of diffusion.samplers.SAMPLERS for the objective (edm: heun)
    sample_steps: int = 50

    RANGES: ClassVar[dict] = {
        "block_out_channels": integers(non_empty=True), "layers_per_block": integer(), "attention_resolutions": integers(),
        "attention_head_dim": integer(), "dropout": number("[0, 1)"), "norm_num_groups": integer(optional=True),
        "num_train_timesteps": integer(), "beta_start": number("(0, 1)"), "beta_end": number("(0, 1)"),
        "snr_gamma": number("> 0", optional=True), "sample_steps": integer(), "sigma_data": number("> 0"),
        "sigma_min": number("> 0"), "sigma_max": number("> 0"), "p_mean": number("[-10, 10]"), "p_std": number("> 0"),
        "rho": number("> 0"),
    }
    # What DiffusionGenerator.decode takes (the sampler's name is checked in config.samplers).
    SAMPLE_OPTIONS: ClassVar[dict] = {"sampler": text(), "steps": integer(), "eta": number("[0, 1]"), "psi": NO_TRUNCATION}

    def check(self, sample_options: dict) -> None:
        super().check(sample_options)
        if self.objective not in OBJECTIVES:
            raise FacegenError(f"model.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        check_sampler(self.sampler, self.objective, "model.sampler")
        if "sampler" in sample_options and sample_options["sampler"] != "default":
            check_sampler(sample_options["sampler"], self.objective, "sample_options.sampler")
        if self.objective == "edm":
            if self.snr_gamma is not None:
                raise FacegenError("model.snr_gamma weights the ddpm objective; EDM has its own loss weighting: drop it or use model.objective=ddpm")
            if self.sigma_min >= self.sigma_max:
                raise FacegenError(f"model.sigma_min must be below model.sigma_max, got {self.sigma_min!r} and {self.sigma_max!r}")
            return  # the steps of EDM samplers are not bounded by training timesteps
        if self.beta_start >= self.beta_end:
            raise FacegenError(f"model.beta_start must be below model.beta_end (0 < beta_start < beta_end < 1), "
                               f"got {self.beta_start!r} and {self.beta_end!r}")
        # A sampler cannot take more steps than there are training timesteps (diffusers refuses them).
        at_most = Range(f"at most model.num_train_timesteps ({self.num_train_timesteps})", lambda v: v <= self.num_train_timesteps)
        refuse_outside("model.sample_steps", self.sample_steps, at_most)
        if "steps" in sample_options:
            refuse_outside("sample_options.steps", sample_options["steps"], at_most)


class DDPMFamily:
    name = "ddpm"
    options = DiffusionOptions
    model_defaults = DiffusionOptions.defaults()

    def build(self, cfg: dict, resolution: int) -> Built:
        o = DiffusionOptions.from_config(cfg)
        o.check({})
        unet = make_denoiser(o, resolution)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
        loss = DenoisingLoss(make_objective(o, make_scheduler(o)))
        return Built(nets={"unet": unet}, phases=[Phase("main", ["unet"], optimizer)], loss=loss, ema=["unet"])

    def generator(self, built: Built, cfg: dict) -> DiffusionGenerator:
        """A generator on the live training nets (the loop swaps the EMA weights in first)."""
        o = DiffusionOptions.from_config(cfg)
        return DiffusionGenerator(built.nets["unet"], make_scheduler(o).config, cfg.get("name", "ddpm"), o.sampler, o.sample_steps)

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        unet = plain_copy(built.nets["unet"])  # weight standardisation baked in: plain diffusers loads it
        o = DiffusionOptions.from_config(cfg)
        DDPMPipeline(unet=unet, scheduler=make_scheduler(o)).save_pretrained(out_dir)
        atomic_write_json(Path(out_dir) / "facegen.json", {
            "family": self.name,
            "name": cfg.get("name", Path(out_dir).parent.name),
            "resolution": int(unet.config.sample_size),
            "objective": o.objective,
            "sampler": o.sampler,
            "steps": o.sample_steps,
            "config": cfg,
        })

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu") -> DiffusionGenerator:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "facegen.json").read_text())
        unet = UNet2DModel.from_pretrained(model_dir / "unet").to(device).eval()
        return DiffusionGenerator(unet, scheduler_config(model_dir), meta.get("name", model_dir.name), meta["sampler"], meta["steps"])


def scheduler_config(model_dir: Path) -> dict:
    """The exported training scheduler's config (DDPMScheduler's, or EDMEulerScheduler's)."""
    return json.loads((Path(model_dir) / "scheduler" / "scheduler_config.json").read_text())


FAMILY = DDPMFamily()

__all__ = ["FAMILY", "DiffusionGenerator", "DiffusionOptions"]
