"""Sampling a trained GAN: a seed gives a z, one forward pass of G gives the face.

Truncation (`psi`, 0 < psi <= 1) trades variety for typical, cleaner faces, the
"truncation trick" of BigGAN (Brock et al. 2019, sec. 3.1) and StyleGAN (Karras et al.
2019). StyleGAN pulls w toward its mean, w' = w_avg + psi * (w - w_avg); these generators
have no mapping network, so the same pull is applied to z, whose mean is 0: z' = psi * z.
BigGAN instead resamples the components of z beyond a threshold (a truncated normal).
Pulling toward the mean is chosen because it keeps a face a function of its seed alone:
the same seed is the same face at every psi, only less extreme, and psi = 1 is exactly
the untruncated sampler.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from torch.nn import Module as GNet  # any G with .z_dim and .resolution
from facegen.utils import slerp


class GanGenerator:
    """The exported (EMA) generator behind the family-independent `Generator` contract."""

    family = "gan"
    truncation = True                     # decode takes psi (facegen.sample.decode_options checks it)

    def __init__(self, G: GNet, name: str, resolution: int, device: torch.device | str = "cpu"):
        self.G = G.to(device).eval()      # eval: batch norm uses its running statistics, so a face never depends on its batch
        self.name, self.resolution, self.device = name, resolution, torch.device(device)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """z (N, z_dim) ~ N(0, I), each row from its own torch.Generator seeded by its seed."""
        z = [torch.randn(self.G.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(z).to(self.device)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, seeds: Sequence[int] = (), psi: float = 1.0, **options: Any) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1]: one deterministic forward pass of G on psi * z
        (truncation toward the mean of z, see the module docstring); other options are ignored."""
        z = psi * noise.to(self.device)       # psi = 1: x * 1.0 is exact, so the untruncated face bit for bit
        return self.G(z).clamp(-1, 1)

    def interpolate(self, seed_a: int, seed_b: int, steps: int = 8) -> torch.Tensor:
        """`steps` images walking from seed_a's face to seed_b's along the great circle of z (slerp)."""
        za, zb = self.initial_noise([seed_a, seed_b])
        t = torch.linspace(0, 1, steps, device=self.device)
        return self.decode(slerp(za, zb, t))

    # The page's psi when a request names none (facegen.json `recommended_psi`); sampling and
    # evaluation never apply it unasked, so their numbers stay the untruncated model's.
    recommended_psi = 1.0

    def info(self) -> dict:
        return {"name": self.name, "family": self.family, "resolution": self.resolution, "sampler": "one forward pass",
                "steps": 1, "z_dim": self.G.z_dim, "device": str(self.device), "recommended_psi": self.recommended_psi}



@torch.no_grad()
def standing_stats(G: GNet, n: int = 256, batch: int = 64) -> GNet:
    """Recompute G's batch-norm statistics as the average over n fresh z (in place; returns G).

    The loop averages G's weights (EMA) but not its batch-norm running statistics, which
    belong to the raw weights; re-measuring them for the weights actually exported is
    BigGAN's "standing statistics" (Brock et al. 2019, appendix C.1). Its own seeded z keep
    the export deterministic and leave the training RNG alone."""
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return G
    was_training, device = G.training, next(G.parameters()).device
    g = torch.Generator().manual_seed(0)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                          # None: a cumulative average over the batches below
    G.train()
    for i in range(0, n, batch):
        G(torch.randn(min(batch, n - i), G.z_dim, generator=g).to(device))
    for m in norms:
        m.momentum = 0.1                           # torch's default, as the nets were built
    return G.train(was_training)
