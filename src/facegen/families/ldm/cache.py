"""A one-off cache of the encoder's posterior for every face of a store (and its mirror image).

Keyed by image content (a hash of the uint8 pixels), so the loop's data order, flips and
splits need no coordination: a batch whose faces are all cached is looked up, any other is
encoded as usual. Stored as RUN_AE/latents/<store hash>/{keys,moments}.npy, written
atomically (a killed pass leaves no half cache), memory-mapped on read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from facegen.utils import atomic_dir


def image_key(face: np.ndarray) -> int:
    """64-bit content hash of one uint8 (h, w, 3) face."""
    return int.from_bytes(hashlib.blake2b(np.ascontiguousarray(face).data, digest_size=8).digest(), "little")


class LatentCache:
    def __init__(self, folder: Path):
        self.moments = np.load(folder / "moments.npy", mmap_mode="r")  # (n, 2, c, h, w) float16: mean, std
        self.rows = {int(k): i for i, k in enumerate(np.load(folder / "keys.npy"))}

    @classmethod
    @torch.no_grad()
    def build(cls, vae, pixels: np.ndarray, folder: Path, batch: int = 32) -> "LatentCache":
        """Encode every face and its mirror once; reuse the cache when it exists."""
        from facegen.progress import counting_bar

        folder = Path(folder)
        if not (folder / "moments.npy").is_file():
            device = next(vae.parameters()).device
            keys, moments = [], []
            with atomic_dir(folder, overwrite=True) as tmp, counting_bar("caching latents", len(pixels)) as advance:
                for i in range(0, len(pixels), batch):
                    faces = np.asarray(pixels[i : i + batch])
                    for view in (faces, faces[:, :, ::-1]):  # as stored, mirrored (the loader's hflip)
                        x = torch.from_numpy(np.array(view)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                        posterior = vae.encode(x.to(device)).latent_dist
                        moments.append(torch.stack([posterior.mean, posterior.std], 1).half().cpu().numpy())
                        keys.extend(image_key(f) for f in view)
                    advance(len(faces))
                np.save(tmp / "moments.npy", np.concatenate(moments))
                np.save(tmp / "keys.npy", np.array(keys, dtype=np.uint64))
        return cls(folder)

    def lookup(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Posterior (mean, std) for a batch (b, 3, h, w) in [-1, 1], or None if any face is not cached."""
        faces = ((images.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        rows = [self.rows.get(image_key(f)) for f in faces]
        if None in rows:
            return None
        m = torch.from_numpy(np.stack([self.moments[r] for r in rows])).to(images.device, torch.float32)
        return m[:, 0], m[:, 1]
