"""A trained GAN behind the family-independent `Generator` contract: seed k -> z_k ->
G(truncate(z_k, psi)) (sampler.py says why truncation pulls toward the mean)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import Module as GNet  # any G with .z_dim and .resolution

from facegen.families.gan.sampler import truncate
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
        return self.G(truncate(noise.to(self.device), psi)).clamp(-1, 1)

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
