"""An autoencoder makes no new faces; its training grids show reconstructions instead.

`Reconstructions` fits the Generator contract the loop's preview grids use: seed k is
face k of the store's holdout split (or of train, when there is no holdout), and
`decode` returns its deterministic reconstruction (the posterior mode through the decoder).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from facegen.families.ae.sampler import reconstruct
from facegen.utils import from_uint8


class Reconstructions:
    family = "ae"

    def __init__(self, vae, faces: np.ndarray, name: str = "ae"):
        self.vae, self.faces, self.name = vae, faces, name  # faces: uint8 (N, H, W, 3)
        self.resolution = int(faces.shape[1])

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        x = np.stack([self.faces[int(s) % len(self.faces)] for s in seeds])
        return from_uint8(x, next(self.vae.parameters()).device)  # (n, 3, h, w)

    def decode(self, noise: torch.Tensor, seeds: Sequence[int], **options) -> torch.Tensor:
        was_training = self.vae.training
        self.vae.eval()
        try:
            return reconstruct(self.vae, noise)
        finally:
            self.vae.train(was_training)

    def info(self) -> dict:
        return {"name": self.name, "family": self.family, "resolution": self.resolution, "device": str(next(self.vae.parameters()).device)}
