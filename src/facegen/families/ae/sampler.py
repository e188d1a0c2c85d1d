"""An autoencoder's "sampler": a face through the encoder's posterior mode and the decoder.

It makes no new faces; the family's generator (generator.py) shows these reconstructions
in the training grids, and evaluate.py scores them on held-out faces.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """Deterministic reconstruction through the posterior mode, clamped to [-1, 1]."""
    return vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
