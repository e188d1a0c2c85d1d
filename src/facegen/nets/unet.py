"""UNet2DModel factory for pixel (and latent) diffusion, with weight-standardised convolutions.

Weight standardisation (Qiao et al. 2019, "Micro-Batch Training with Batch-Channel
Normalization and Weight Standardization"; used with GroupNorm in the DDPM reimplementation
of lucidrains' denoising-diffusion-pytorch) normalises each output filter of a conv to zero
mean and unit variance before it is applied. We add it as a torch parametrization on the
ResNet convs (conv1, conv2 of every ResnetBlock2D), so the module stays a plain
UNet2DModel. `plain_copy` bakes the standardised weights into ordinary conv weights: the
exported UNet computes exactly the same function and loads with plain diffusers
(`UNet2DModel.from_pretrained`, `DDPMPipeline.from_pretrained`), no facegen needed.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn
from torch.nn.utils import parametrize

from facegen.utils import FacegenError


class StandardizedWeight(nn.Module):
    """W -> (W - mean) / sqrt(var + eps) over each output filter (fan-in dims)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, weight.ndim))  # (out, in, kh, kw): standardise over in, kh, kw
        mean = weight.mean(dim=dims, keepdim=True)
        var = weight.var(dim=dims, keepdim=True, unbiased=False)
        return (weight - mean) * torch.rsqrt(var + self.eps)


def make_unet(
    resolution: int,                     # pixels of the square input
    block_out_channels: list[int],       # channels per level; the level count sets the downsamplings
    layers_per_block: int = 2,           # ResNet blocks per level
    attention_resolutions: list[int] = (16,),  # feature-map sizes (pixels) that get self-attention
    attention_head_dim: int = 8,         # channels per attention head (capped at the narrowest level)
    dropout: float = 0.0,
    norm_num_groups: int | None = None,  # GroupNorm groups; None = 32 or the largest that divides every level
    weight_standardized: bool = False,   # standardise the ResNet conv weights (see module docstring)
    in_channels: int = 3,
) -> UNet2DModel:
    """A UNet2DModel whose level i works at resolution / 2**i, with attention where asked."""
    sizes = [resolution // 2**i for i in range(len(block_out_channels))]
    attention = [size in set(attention_resolutions) for size in sizes]
    groups = norm_num_groups or math.gcd(32, *block_out_channels)
    if any(c % groups for c in block_out_channels):
        raise FacegenError(f"model.norm_num_groups={groups} does not divide every block_out_channels {block_out_channels}")
    unet = UNet2DModel(
        sample_size=resolution,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        attention_head_dim=min(attention_head_dim, *block_out_channels),  # at least one head per attention layer
        dropout=dropout,
        norm_num_groups=groups,
    )
    if weight_standardized:
        standardize_resnet_convs(unet)
    return unet


def standardize_resnet_convs(unet: nn.Module) -> None:
    for block in unet.modules():
        if isinstance(block, ResnetBlock2D):
            for conv in (block.conv1, block.conv2):
                parametrize.register_parametrization(conv, "weight", StandardizedWeight())


def plain_copy(unet: UNet2DModel) -> UNet2DModel:
    """A new plain UNet2DModel with every parametrization baked into ordinary weights (same outputs)."""
    plain = UNet2DModel.from_config(unet.config)
    state = {}
    with torch.no_grad():
        for key, value in unet.state_dict().items():
            if ".parametrizations." in key:  # "<module>.parametrizations.weight.original" -> "<module>.weight"
                module_name, _, rest = key.partition(".parametrizations.")
                name = rest.split(".")[0]
                state[f"{module_name}.{name}"] = getattr(unet.get_submodule(module_name), name).detach().clone()
            else:
                state[key] = value.detach().clone()
    plain.load_state_dict(state)
    return plain.to(next(unet.parameters()).device).eval()
