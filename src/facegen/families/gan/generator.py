"""A trained GAN behind the family-independent `Generator` contract: seed k -> z_k -> one forward
pass of G, truncated by psi in w for a generator with a mapping network (the style G) and in z
for the others (sampler.py says why truncation pulls toward the mean, and why w is better)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.nn import Module as GNet  # any G with .z_dim and .resolution

from facegen.families.gan.sampler import truncate
from facegen.utils import FacegenError, slerp


def maps_to_w(G: GNet) -> bool:
    """Whether G has a mapping network z -> w (then truncation, mixing and interpolation act on w)."""
    return getattr(G, "truncation_space", "z") == "w"


@torch.no_grad()
def w_interpolation(G: GNet, z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
    """Images along the straight line from z_a's w to z_b's (w' = w_a + t (w_b - w_a) for each t):
    StyleGAN's interpolation space, laid out by the mapping network so that straight lines stay
    among faces. t = 0 and t = 1 are the two faces exactly (torch.lerp returns its ends)."""
    w_a, w_b = G.map(torch.stack([z_a, z_b]), psi)
    return G.synthesis(torch.lerp(w_a, w_b, t[:, None].to(w_a.dtype)))


class GanGenerator:
    """The exported (EMA) generator behind the family-independent `Generator` contract."""

    family = "gan"
    truncation = True                     # decode takes psi (facegen.sample.decode_options checks it)

    def __init__(self, G: GNet, name: str, resolution: int, device: torch.device | str = "cpu"):
        # eval: batch norm uses its running statistics and the style G its fixed noise, so a face never depends on its batch
        self.G = G.to(device).eval()
        self.name, self.resolution, self.device = name, resolution, torch.device(device)
        self.mapped = maps_to_w(G)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """z (N, z_dim) ~ N(0, I), each row from its own torch.Generator seeded by its seed."""
        z = [torch.randn(self.G.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(z).to(self.device)

    @torch.no_grad()
    def decode(self, noise: torch.Tensor, seeds: Sequence[int] = (), psi: float = 1.0, **options: Any) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1]: one deterministic forward pass of G, truncated by psi
        (in w for a mapped G, else psi * z; see sampler.py). Style mixing (mapped G only):
        options mix_seed (the layers from mix_layer on take that seed's w) and mix_layer
        (default num_ws // 2: coarse styles from the face's own seed, fine ones from mix_seed).
        Other options are ignored."""
        z = noise.to(self.device)
        mix_seed = options.get("mix_seed")
        if not self.mapped:
            if mix_seed is not None:
                raise FacegenError("style mixing (mix_seed) needs a generator with a mapping network (model.g_arch=style)")
            return self.G(truncate(z, psi)).clamp(-1, 1)
        if mix_seed is None:
            return self.G(z, psi=psi).clamp(-1, 1)
        layer = options.get("mix_layer")
        layer = self.G.num_ws // 2 if layer is None else int(layer)
        if not 0 <= layer <= self.G.num_ws:
            raise FacegenError(f"mix_layer {layer} is out of range: use 0..{self.G.num_ws} (this generator has {self.G.num_ws} ws)")
        mix_z = self.initial_noise([mix_seed]).expand(len(z), -1)
        return self.G(z, psi=psi, mix_z=mix_z, mix_layer=layer).clamp(-1, 1)

    def interpolate(self, seed_a: int, seed_b: int, steps: int = 8, psi: float = 1.0) -> torch.Tensor:
        """`steps` images walking from seed_a's face to seed_b's: along a straight line in w for a
        mapped G (w_interpolation), along the great circle of z (slerp) for the others."""
        za, zb = self.initial_noise([seed_a, seed_b])
        t = torch.linspace(0, 1, steps, device=self.device)
        if self.mapped:
            return w_interpolation(self.G, za, zb, t, psi).clamp(-1, 1)
        return self.decode(slerp(za, zb, t), psi=psi)

    # ---- w space (a mapped G only): what projection (facegen.project) and the morph need ----

    def _need_mapping(self, what: str) -> None:
        if not self.mapped:
            raise FacegenError(f"{what} needs a generator with a mapping network (g_arch: style); this {self.name} generator maps z to faces directly")

    @torch.no_grad()
    def seed_ws(self, seeds: Sequence[int], psi: float = 1.0) -> torch.Tensor:
        """w (N, w_dim) of each seed, truncated toward w_avg by psi: the w that decode(seed) synthesises."""
        self._need_mapping("w of a seed")
        return self.G.map(self.initial_noise(seeds), psi)

    @torch.no_grad()
    def decode_ws(self, ws: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] from w (N, w_dim), one w for every layer, or ws
        (N, num_ws, w_dim), one per layer ("W+"), with the fixed sampling noise."""
        self._need_mapping("decoding from w")
        return self.G.synthesis(ws.to(self.device), noise_mode="const").clamp(-1, 1)

    def noise_images(self) -> dict[str, torch.Tensor]:
        """The synthesis's fixed per-layer noise images (1, 1, r, r) by buffer name, in layer order:
        the buffers themselves, so a change to them changes every face (projection changes a copy's)."""
        self._need_mapping("the noise images")
        return {name: buf for name, buf in self.G.named_buffers() if name.endswith("noise_const")}

    # The page's psi when a request names none (facegen.json `recommended_psi`); sampling and
    # evaluation never apply it unasked, so their numbers stay the untruncated model's.
    recommended_psi = 1.0

    def info(self) -> dict:
        return {"name": self.name, "family": self.family, "resolution": self.resolution, "sampler": "one forward pass",
                "steps": 1, "z_dim": self.G.z_dim, "device": str(self.device), "recommended_psi": self.recommended_psi}
