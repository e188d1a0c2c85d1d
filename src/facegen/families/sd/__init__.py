"""Stable Diffusion fine-tuning: a pretrained UNet trained on faces with one fixed prompt,
its VAE and CLIP text encoder frozen (Built.frozen).

    facegen train sd-finetune-celeba --data stores/celeba512 --out runs/sd --pretrained PATH_OR_HUB_ID

The export (RUN/model/) is a StableDiffusionPipeline folder that plain diffusers loads, or,
with LoRA, only the adapter weights (`pipeline.load_lora_weights(RUN/model)`) plus the base
model's location in facegen.json. Options are the `model:` section (SdOptions).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from facegen.families.base import NO_TRUNCATION, Built, FamilyOptions, Phase, integer, number, text
from facegen.families.diffusion.samplers import check_sampler
from facegen.families.sd.generator import UNCLAMPED
from facegen.families.sd.networks import SD14, add_lora, encode_prompts, load_parts, lora_layers, vae_scale
from facegen.utils import FacegenError, atomic_write_json

META = "facegen.json"


@dataclass(frozen=True)
class SdOptions(FamilyOptions):
    """The `model:` section of a Stable Diffusion fine-tuning run."""

    family: ClassVar[str] = "sd"
    pretrained: str = SD14                 # StableDiffusionPipeline folder or hub id (train --pretrained)
    prompt: str = "A high-resolution photo of a face"  # the one training prompt (train --prompt)
    negative_prompt: str = ""              # what guidance steers away from when sampling
    prompt_dropout: float = 0.0            # probability of training a sample on "" (keeps guidance working)
    lora_rank: int = 0                     # 0 = train every UNet weight; r > 0 = rank-r LoRA on attention projections
    lora_alpha: float | None = None        # LoRA scale is alpha / rank; None = rank (scale 1)
    gradient_checkpointing: bool = True    # recompute UNet activations in backward: much less memory, ~25% slower
    optimizer: str = "auto"                # adamw | adamw8bit (bitsandbytes) | auto = adamw8bit on GPU when importable
    cache_latents: bool = False            # encode the store once with the VAE and train on the cached latents
    ema: bool = False                      # EMA copy of the UNet (one more UNet in memory), exported instead
    sampler: str = "default"               # default = the base model's own scheduler (PNDM for SD v1.4); see diffusion.samplers
    sample_steps: int = 50                 # denoising steps when sampling
    guidance_scale: float = 7.5            # classifier-free guidance weight when sampling (1 = none)
    snr_gamma: float | None = None         # min-SNR-gamma loss weighting (Hang et al. 2023: ~3x faster convergence); None = plain MSE

    RANGES: ClassVar[dict] = {
        "prompt_dropout": number("[0, 1)"), "lora_rank": integer(low=0), "lora_alpha": number("> 0", optional=True),
        "sample_steps": integer(), "guidance_scale": number(">= 0"), "snr_gamma": number("> 0", optional=True),
    }
    # What SdGenerator.decode takes (generator.DEFAULT_OPTIONS); prompt null = the training prompt.
    SAMPLE_OPTIONS: ClassVar[dict] = {
        "sampler": text(), "steps": integer(), "guidance_scale": number(">= 0"), "prompt": text(optional=True),
        "negative_prompt": text(), "psi": NO_TRUNCATION,
    }


class SDFamily:
    name = "sd"
    options = SdOptions
    model_defaults = SdOptions.defaults()

    def build(self, cfg: dict, resolution: int) -> Built:
        from diffusers import DDPMScheduler

        from facegen.families.diffusion.loss import DdpmObjective, DenoisingLoss, Latents, Prompts

        o = SdOptions.from_config(cfg)
        _check_options(o)
        parts = load_parts(o.pretrained, frozen_dtype=frozen_dtype(cfg))
        _check_resolution(resolution, parts)
        # The UNet's sample_size (in latent cells) becomes the training size: it is what the
        # exported pipeline and our generator take as their default image size.
        parts.unet.register_to_config(sample_size=resolution // vae_scale(parts.vae))
        # The prompt never changes and the text encoder is frozen: embed it (and "") once.
        prompt_embedding, empty_embedding = encode_prompts(parts.tokenizer, parts.text_encoder, [o.prompt, ""]).split(1)
        vae, text_encoder = parts.vae, parts.text_encoder
        dataset = _cached_latents(cfg, vae) if o.cache_latents else None
        unet = parts.unet
        if o.lora_rank:
            add_lora(unet, o.lora_rank, o.lora_alpha)
        if o.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        trained = [p for p in unet.parameters() if p.requires_grad]
        # eps-prediction (or v, as the base model's config says) on VAE latents, the one prompt dropped
        # to "" with probability prompt_dropout (Rombach et al. 2022, eq. 2; min-SNR with model.snr_gamma)
        loss = DenoisingLoss(DdpmObjective(DDPMScheduler.from_config(parts.scheduler_config), o.snr_gamma),
                             Latents(vae, "moments" if dataset is not None else "images"),
                             Prompts(prompt_embedding, empty_embedding, o.prompt_dropout))
        return Built(nets={"unet": unet}, phases=[Phase("main", ["unet"], make_optimizer(trained, cfg))], loss=loss,
                     ema=["unet"] if o.ema else [], frozen={"vae": vae, "text_encoder": text_encoder}, dataset=dataset)

    def memory_advice(self, cfg: dict) -> str:
        """What to change, given these settings, when the GPU runs out of memory (train.py asks)."""
        import importlib.util

        o, tips = SdOptions.from_config(cfg), []
        if not o.gradient_checkpointing:
            tips.append("model.gradient_checkpointing=true")
        if o.optimizer == "adamw" or importlib.util.find_spec("bitsandbytes") is None:
            tips.append("8-bit AdamW (pip install bitsandbytes; model.optimizer=auto)")
        if o.ema:
            tips.append("model.ema=false")
        if not o.lora_rank:
            tips.append("LoRA instead of full fine-tuning (model.lora_rank=16, lr=1e-4)")
        return "for Stable Diffusion also try " + ", ".join(tips) + "; see docs/stable-diffusion.md" if tips else ""

    def generator(self, built: Built, cfg: dict):
        """A generator on the live training nets (for the loop's sample grids)."""
        from facegen.families.sd.generator import SdGenerator
        from facegen.families.sd.networks import SdParts, load_tokenizer_and_scheduler

        tokenizer, scheduler_config = load_tokenizer_and_scheduler(SdOptions.from_config(cfg).pretrained)
        parts = SdParts(built.nets["unet"], built.frozen["vae"], built.frozen["text_encoder"], tokenizer, scheduler_config)
        return SdGenerator(parts, _meta(cfg, _resolution(built)))

    def export(self, built: Built, cfg: dict, out_dir: Path) -> None:
        from diffusers import StableDiffusionPipeline

        from facegen.families.diffusion.samplers import make_scheduler
        from facegen.families.sd.networks import load_frozen, load_tokenizer_and_scheduler

        o, unet, out_dir = SdOptions.from_config(cfg), built.nets["unet"], Path(out_dir)
        if o.lora_rank:
            StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=lora_layers(unet))
        else:
            # The frozen parts are the base model's own, untouched: copy them from there in
            # float32 rather than the bf16 copies training may have used.
            vae, text_encoder = load_frozen(o.pretrained)
            tokenizer, scheduler_config = load_tokenizer_and_scheduler(o.pretrained)
            StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=make_scheduler("default", scheduler_config, **UNCLAMPED), safety_checker=None, feature_extractor=None,
                requires_safety_checker=False,
            ).save_pretrained(out_dir)
        atomic_write_json(out_dir / META, {**_meta(cfg, _resolution(built)), "config": cfg})

    def load_generator(self, model_dir: Path, device: torch.device | str = "cpu"):
        from facegen.families.sd.generator import SdGenerator

        model_dir = Path(model_dir)
        if not (model_dir / META).is_file():
            raise FacegenError(f"{model_dir}: no {META}; pass the model/ folder of a Stable Diffusion run")
        meta = json.loads((model_dir / META).read_text())
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32  # halves memory and time on GPU
        parts = load_parts(meta["base"] if meta["lora"] else str(model_dir), dtype)
        if meta["lora"]:
            _load_lora(parts, model_dir)
        for net in (parts.unet, parts.vae, parts.text_encoder):
            net.to(device)
        return SdGenerator(parts, meta)


def make_optimizer(params: list, cfg: dict) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (optimizer state in 8 bits: ~2 bytes/param instead of 8)."""
    choice = SdOptions.from_config(cfg).optimizer
    kwargs = dict(lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), weight_decay=cfg["weight_decay"])
    if choice in ("auto", "adamw8bit"):
        try:
            import bitsandbytes
        except ImportError:
            if choice == "adamw8bit":
                raise FacegenError("model.optimizer=adamw8bit needs bitsandbytes: `pip install bitsandbytes` (CUDA only), or use adamw") from None
        else:
            if torch.cuda.is_available():
                return bitsandbytes.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def frozen_dtype(cfg: dict) -> torch.dtype:
    """bf16/fp16 copies of the frozen parts on GPU (as the UNet's autocast computes), float32 on CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    return {"no": torch.float32, "fp16": torch.float16}.get(cfg["mixed_precision"], torch.bfloat16)


def _cached_latents(cfg: dict, vae):
    from facegen.data.store import FaceStore
    from facegen.families.latents import latent_cache

    if not cfg.get("data"):
        raise FacegenError("model.cache_latents needs the face store: train with `facegen train ... --data STORE`")
    return latent_cache(FaceStore(cfg["data"]), vae, cfg["hflip"])


def _check_options(o: SdOptions) -> None:
    if o.optimizer not in ("auto", "adamw", "adamw8bit"):
        raise FacegenError(f"model.optimizer must be auto, adamw or adamw8bit, got {o.optimizer!r}")
    check_sampler(o.sampler, "ddpm", "model.sampler")
    if not 0 <= o.prompt_dropout < 1:
        raise FacegenError(f"model.prompt_dropout is a probability in [0, 1), got {o.prompt_dropout!r}")
    if not isinstance(o.lora_rank, int) or o.lora_rank < 0:
        raise FacegenError(f"model.lora_rank must be 0 (full fine-tuning) or a positive integer, got {o.lora_rank!r}")


def _check_resolution(resolution: int, parts) -> None:
    """The VAE works in 8x8 pixel cells; SD is trained at one size and degrades far from it."""
    cell = vae_scale(parts.vae)
    native = parts.unet.config.sample_size * cell
    if resolution % cell:
        raise FacegenError(f"face store resolution {resolution} is not a multiple of {cell}, which the VAE needs; "
                           f"prepare the store with --size {native} (the model's native size)")
    if not native / 2 <= resolution <= native * 2:
        warnings.warn(f"training Stable Diffusion at {resolution}px, far from its native {native}px: expect poor faces; "
                      f"prepare the store with --size {native}", stacklevel=3)


def _resolution(built: Built) -> int:
    return int(built.nets["unet"].config.sample_size * vae_scale(built.frozen["vae"]))


def _meta(cfg: dict, resolution: int) -> dict:
    o = SdOptions.from_config(cfg)
    pretrained = o.pretrained
    base = str(Path(pretrained).expanduser().resolve()) if Path(pretrained).expanduser().exists() else pretrained
    return {"family": "sd", "name": cfg.get("name", "sd"), "resolution": resolution, "prompt": o.prompt,
            "base": base, "lora": bool(o.lora_rank),
            "sample_options": {"sampler": o.sampler, "steps": o.sample_steps,
                               "guidance_scale": o.guidance_scale, "negative_prompt": o.negative_prompt}}


def _load_lora(parts, model_dir: Path) -> None:
    """Apply the exported adapters (what `pipeline.load_lora_weights(model_dir)` does for the
    UNet) and fuse them into its weights, so sampling costs what the base model costs."""
    parts.unet.load_lora_adapter(str(model_dir), weight_name="pytorch_lora_weights.safetensors", prefix="unet", adapter_name="facegen")
    parts.unet.fuse_lora()


FAMILY = SDFamily()
