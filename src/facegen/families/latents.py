"""The face store encoded once by a frozen VAE, so training skips the VAE encoder (ldm and sd).

The cache holds each training face's posterior moments (mean and log-variance, float16),
for both orientations when flips are on: (N, flips, 2 * latent_channels, h, w). A family
trains on it as its Built.dataset, addressed like data.stream.FlippedFaces by (index, flip);
the loss still samples a latent from the moments at every step, as from a live encoding.
The file, latents-<key>.npy, is named by a hash of the store's content, the VAE's weights
and the flips, so a retrained VAE never reuses another's latents. It lives in facegen's
cache folder ($FACEGEN_CACHE, else ~/.cache/facegen) or in a folder the family chooses
(ldm: RUN_AE/latents/), and is written under a temporary name and renamed when complete:
an interrupted encoding leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from facegen.data.store import FaceStore
from facegen.utils import from_uint8, weights_hash


class CachedLatents(Dataset):
    """Moments (2C, h, w) float32 of one face, addressed like data.stream.FlippedFaces by (index, flip)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._moments: np.ndarray | None = None  # memory-mapped lazily, once per process (DataLoader workers)
        self._len, self.flips = np.load(self.path, mmap_mode="r").shape[:2]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, item: tuple[int, bool]) -> torch.Tensor:
        index, flip = item
        if self._moments is None:
            self._moments = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self._moments[index, int(flip) % self.flips], dtype=np.float32))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_moments": None}  # never ship an open memory map to a worker


def latent_cache(store: FaceStore, vae: torch.nn.Module, hflip: bool, folder: Path | None = None,
                 batch_size: int = 16) -> CachedLatents:
    """The cache for (store, VAE weights, flips) in `folder` (None: facegen's cache folder),
    encoding the store on a miss (GPU if there is one)."""
    from accelerate import PartialState

    from facegen.metrics.cache import cache_dir

    key = {"store": store.content_hash, "vae": weights_hash(vae), "flips": bool(hflip)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = Path(folder or cache_dir()) / f"latents-{digest}.npy"
    with PartialState().main_process_first():  # one process encodes; the others then read its file
        if not path.is_file():
            encode_store(store, vae, path, 2 if hflip else 1, batch_size)
    return CachedLatents(path)


@torch.no_grad()
def encode_store(store: FaceStore, vae: torch.nn.Module, path: Path, flips: int, batch_size: int) -> None:
    from rich.progress import Progress

    faces = store.split("train")                                            # (N, H, W, 3) uint8, memory-mapped
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = next(vae.parameters()).dtype
    home = vae.device
    vae.to(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    os.close(fd)
    try:
        out = None
        with Progress(transient=True) as bar:
            task = bar.add_task(f"encoding {len(faces)} faces with the VAE", total=len(faces) * flips)
            for start in range(0, len(faces), batch_size):
                x = from_uint8(faces[start : start + batch_size], device, dtype)  # (b, 3, H, W)
                for flip in range(flips):
                    moments = vae.encode(x.flip(-1) if flip else x).latent_dist.parameters  # (b, 2C, h, w)
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(faces), flips, *moments.shape[1:]))
                    out[start : start + len(x), flip] = moments.float().cpu().numpy()
                    bar.advance(task, len(x))
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        vae.to(home)
