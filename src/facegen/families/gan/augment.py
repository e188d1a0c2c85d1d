"""Differentiable augmentation for data-efficient GANs (DiffAugment, Zhao et al. 2020).

The same random colour, translation and cutout are applied to every image D sees, real and
fake, in both phases, so D cannot memorise a small training set and G still gets gradients
through the augmentation. Follows the authors' reference implementation
(github.com/mit-han-lab/data-efficient-gans, DiffAugment_pytorch.py). Random numbers come
from torch's global RNG, which the loop seeds and checkpoints.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image."""
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy + dy + 1, 0, h + 1)           # +1: index into the zero-padded image
    gx = torch.clamp(gx + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])                   # (b, c, h+2, w+2)
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of `ratio` times the image size per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij")
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


def diff_augment(policy: Sequence[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The composed augmentation for a policy such as ["color", "translation", "cutout"]."""
    unknown = [p for p in policy if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; use some of {POLICIES}")
    funcs = {"color": color, "translation": translation, "cutout": cutout}

    def augment(x: torch.Tensor) -> torch.Tensor:
        for name in policy:
            x = funcs[name](x)
        return x

    return augment
