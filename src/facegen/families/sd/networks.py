"""Stable Diffusion's parts, loaded with diffusers/transformers `from_pretrained` from a local
folder or a hub id.

The UNet is trained (every weight, or only LoRA adapters on its attention projections). The
VAE and the CLIP text encoder are frozen: `requires_grad` off, eval mode, never handed to an
optimizer, so no gradient is ever allocated for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from facegen.utils import FacegenError

SD14 = "CompVis/stable-diffusion-v1-4"  # the reference recipe's base model (hub id)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # attention projections, as in diffusers' LoRA script
SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SdParts:
    unet: nn.Module                 # UNet2DConditionModel: predicts the noise of VAE latents
    vae: nn.Module                  # AutoencoderKL: pixels <-> latents (8x smaller per side)
    text_encoder: nn.Module         # CLIPTextModel: prompt -> (L, D) embedding the UNet attends to
    tokenizer: object               # CLIPTokenizer
    scheduler_config: dict          # the pipeline's own scheduler config (its class name included)


def where_to_get(pretrained: str) -> str:
    return (f"download it with `huggingface-cli download {SD14} --local-dir {pretrained}` (accept the licence at "
            f"https://huggingface.co/{SD14} first) or pass --pretrained {SD14} on a machine with internet")


def load_parts(pretrained: str, dtype: torch.dtype = torch.float32, frozen_dtype: torch.dtype | None = None) -> SdParts:
    """The five components of a StableDiffusionPipeline folder or hub id, VAE and text encoder
    frozen; weights in `dtype` (the frozen ones in `frozen_dtype`, default the same)."""
    from diffusers import UNet2DConditionModel

    _check_local_folder(pretrained)
    try:
        unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", torch_dtype=dtype)
        vae, text_encoder = load_frozen(pretrained, frozen_dtype or dtype)
        tokenizer, scheduler_config = load_tokenizer_and_scheduler(pretrained)
    except (OSError, ValueError) as e:  # hub errors are OSErrors; a bad id is a ValueError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FacegenError(f"cannot load Stable Diffusion from {pretrained!r} ({first}); {where_to_get(pretrained)}") from None
    return SdParts(unet, vae, text_encoder, tokenizer, scheduler_config)


def load_frozen(pretrained: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    """The VAE and text encoder as the base model has them, frozen."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    vae = AutoencoderKL.from_pretrained(pretrained, subfolder="vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=dtype)
    return freeze(vae), freeze(text_encoder)


def load_tokenizer_and_scheduler(pretrained: str) -> tuple[object, dict]:
    """The two small, untrained parts (for exporting a full pipeline and sampling in training)."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    return (CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer"),
            dict(DDPMScheduler.load_config(pretrained, subfolder="scheduler")))


def vae_scale(vae: nn.Module) -> int:
    """Pixels per latent cell along a side: 8 for every SD VAE (one halving per extra block)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _check_local_folder(pretrained: str) -> None:
    """Fail fast, without touching the network, for a path that is not a pipeline folder."""
    path = Path(pretrained).expanduser()
    looks_like_path = path.exists() or pretrained.startswith((".", "/", "~")) or pretrained.count("/") != 1
    if not looks_like_path:
        return  # "owner/name": a hub id, resolved by from_pretrained
    if not path.is_dir():
        raise FacegenError(f"{pretrained}: no such folder of Stable Diffusion weights; {where_to_get(pretrained)}")
    missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
    if missing:
        raise FacegenError(f"{pretrained}: not a Stable Diffusion pipeline folder (no {', '.join(missing)}/); {where_to_get(pretrained)}")


def freeze(module: nn.Module) -> nn.Module:
    """Never trained: no gradients, eval mode (the loop only ever trains Built.nets)."""
    module.requires_grad_(False)
    return module.eval()


def add_lora(unet: nn.Module, rank: int, alpha: float | None = None) -> None:
    """Freeze the UNet's own weights and train rank-`rank` adapters on its attention projections
    (Hu et al. 2021, LoRA). Adapter weights start Gaussian-A/zero-B, so step 0 is the base model."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def lora_layers(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights in the diffusers naming that `pipeline.load_lora_weights` reads."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder: nn.Module, prompts: list[str]) -> torch.Tensor:
    """CLIP embeddings (N, L, D) of prompts padded to the tokenizer's length, as the pipeline does."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0]
