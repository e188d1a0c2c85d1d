"""Small helpers shared by every part of facegen: user errors, atomic writes, seeds, grids.

Shared helpers live here and nowhere else (STYLE G12): no per-module copies.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class FacegenError(Exception):
    """A user mistake (bad path, bad option, missing file).

    The CLI prints the message as one line and exits with status 2, no traceback. The
    message names the file and says how to fix it.
    """


# ----------------------------------------------------------------------------------------
# Atomic writes: a reader sees the old file/folder or the new one, never half of one.


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, unsafe to toggle from threads


def _umask() -> int:
    return _UMASK


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success rename it to `final`.

    On any exception (Ctrl-C included) the temporary folder is removed and `final` is
    untouched, so an interrupted job never leaves half a store, checkpoint or export.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    try:
        yield tmp
        replace_dir(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, final: Path, overwrite: bool = False) -> None:
    """Rename the finished folder `new` to `final`, replacing an existing `final` if `overwrite`."""
    old = final.with_name(f".{final.name}.old")  # may be left by a swap killed between its renames
    if final.exists():
        if not overwrite:
            raise FacegenError(f"{final} already exists; pass --overwrite to replace it")
        # Move the old one aside first so the swap is two renames, not a slow delete.
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# Weights: what keys every artefact made by a net (sample folders, latent caches, ETags).


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim). False where there is none.

    A long loop that allocates and frees many buffers of a few kilobytes (photo bytes, pickled
    chunks) leaves them free but resident between live ones: the process's memory creeps up
    with the run's length although what it holds does not (prepare calls this at each
    checkpoint; BENCHMARKS.md, "Data preparation")."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, found among the symbols the process already has; None elsewhere."""
    import ctypes

    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)  # None on macOS and musl
    except (OSError, TypeError):  # Windows: no handle for the process itself
        return None


def weights_hash(*nets) -> str:
    """sha256 of every tensor of the state dicts of `nets` (names, dtypes, shapes and bytes).

    Hashing the tensors in memory, rather than files, covers live training nets and fused
    LoRA alike, and a net loaded in another dtype (float16 on a GPU) hashes differently, as
    its pixels differ. About a second per GB of weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for net in nets:
        for name, tensor in net.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name} {t.dtype} {tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# Seeds: every image is addressed by an integer seed (STYLE G9).


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """'0-3,10' -> [0, 1, 2, 3, 10] (ranges include both ends). Accepts an int or a list as they are.
    An empty range ('5-1') is refused: it is a typo, not a request for no faces."""
    if isinstance(text, int):
        return [text]
    if not isinstance(text, str):
        return [int(s) for s in text]
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise FacegenError(f"bad seed list {text!r}: use non-negative integers and ranges such as 0-99,200") from None
        if last < first:  # an empty range would sample nothing and say "0 written"
            raise FacegenError(f"bad seed list {text!r}: the range {part} is empty; write the smaller seed first, e.g. {last}-{first}")
        seeds.extend(range(first, last + 1))
    return seeds


# ----------------------------------------------------------------------------------------
# Pictures.


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one uint8 picture, `nrow` images per row."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) images, got shape {images.shape}")
    n, h, w, c = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save a uint8 (H, W, 3) array as PNG, atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def from_uint8(pixels, device=None, dtype=None):
    """Faces as stored, uint8 (..., H, W, C) numpy or torch -> float torch (..., C, H, W) in
    [-1, 1]: the one conversion into the models' range (to_uint8 is its inverse). A numpy
    input is copied first, so a read-only memory map of a store is fine."""
    import torch

    x = torch.from_numpy(np.array(pixels)) if isinstance(pixels, np.ndarray) else pixels
    return from_uint8_channels_first(x.movedim(-1, -3).to(device), dtype)


def from_uint8_channels_first(x, dtype=None):
    """A uint8 tensor already laid out (..., C, H, W) -> float in [-1, 1], same values as
    from_uint8, in the same memory format (a batch gathered on the device: data/device.py)."""
    import torch

    y = x.to(dtype or torch.float32)
    return (y.clone() if y is x else y).div_(127.5).sub_(1.0)  # in place on the fresh copy: half the memory traffic


def to_uint8(x) -> np.ndarray:
    """Model output in [-1, 1], torch (N, C, H, W) -> uint8 numpy (N, H, W, C)."""
    import torch

    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def slerp(a, b, t):
    """Spherical interpolation between two same-shaped noise tensors at fractions t (T,) -> (T, *a.shape).

    High-dimensional Gaussian noise lies near a sphere, so every point on the great circle
    is still typical noise, while a straight line would pass through low-norm, washed-out
    samples (White 2016, "Sampling Generative Networks"). Parallel inputs fall back to a line.
    """
    import torch

    flat_a, flat_b = a.flatten().double(), b.flatten().double()
    t = t.to(flat_a)[:, None]                                                   # (T, 1)
    omega = torch.arccos((flat_a @ flat_b / (flat_a.norm() * flat_b.norm())).clamp(-1, 1))
    if omega.abs() < 1e-6:
        out = (1 - t) * flat_a + t * flat_b
    else:
        out = (torch.sin((1 - t) * omega) * flat_a + torch.sin(t * omega) * flat_b) / torch.sin(omega)
    return out.to(a.dtype).view(len(t), *a.shape)
