"""The morph view's frames: faces along the great circle between two seeds' starting noise,
or, for a generator with a mapping network (the style GAN), along the straight line between
the two seeds' w (truncated by psi as decode truncates them), StyleGAN's interpolation space.

Otherwise uses only the Generator contract (initial_noise, decode) and the shared `slerp`, so it
works for every family. A walk must be smooth, so a stochastic sampler (ddpm or euler-a, whose
per-step noise would flicker from frame to frame) is swapped for its objective's deterministic one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facegen.families.base import Generator
from facegen.families.diffusion.samplers import SAMPLERS, deterministic
from facegen.sample import decode_options
from facegen.utils import slerp, to_uint8


def morph_frames(generator: Generator, seed_a: int, seed_b: int, frames: int, **options: Any) -> np.ndarray:
    """uint8 (frames, H, W, 3): seed_a's face first, seed_b's face last."""
    options = decode_options(generator, options)  # psi checked, as for single faces
    info = generator.info()
    sampler = options.get("sampler", info.get("sampler"))
    if sampler in SAMPLERS and "objective" in info:  # a diffusion model
        options = {**options, "sampler": deterministic(sampler, info["objective"])}
    with torch.inference_mode():
        if getattr(generator, "mapped", False):  # GanGenerator.interpolate: w_a + t (w_b - w_a)
            return to_uint8(generator.interpolate(seed_a, seed_b, frames, psi=options.get("psi", 1.0)))
        noise_a, noise_b = generator.initial_noise([seed_a, seed_b])
        noise = slerp(noise_a, noise_b, torch.linspace(0, 1, frames))             # (frames, *noise shape)
        return to_uint8(generator.decode(noise, [seed_a] * frames, **options))
