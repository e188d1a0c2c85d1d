"""Images to evaluate, read lazily: a folder of image files or a (memory-mapped) array.

Both are sequences of uint8 (H, W, 3) pictures, so feature extraction reads one batch at
a time and never holds 10,000 decoded images in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facegen.utils import FacegenError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class ImageFolder:
    """The image files directly inside a folder (not sub-folders), sorted by name."""

    def __init__(self, path: str | Path, limit: int | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FacegenError(f"{self.path}: no such folder; pass a folder of images, a run directory or a face store")
        files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise FacegenError(f"{self.path}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
                               "sample some first with `facegen sample RUN --out DIR`")
        self.files = files[:limit]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        from facegen.data.decode import decode_rgb
        from facegen.data.transforms import Skip

        try:
            return decode_rgb(self.files[i].read_bytes())
        except Skip as e:
            raise FacegenError(f"{self.files[i]}: {e.reason}; remove it from the folder") from None


def resized(images, size: int, indices=None) -> np.ndarray:
    """The pictures at `indices` (default all) resized with the project's one resize -> (n, size, size, 3)."""
    from facegen.data.transforms import resize

    indices = range(len(images)) if indices is None else indices
    return np.stack([resize(np.asarray(images[i]), size) for i in indices]) if len(indices) else np.zeros((0, size, size, 3), np.uint8)
