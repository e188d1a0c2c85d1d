"""Resize and square crops of uint8 photos (H, W, 3).

`resize` is THE resize of the project: the face store and the evaluation reference
statistics (299x299 for Inception) both go through it, so real and generated faces are
filtered identically (clean-fid's point: resize differences alone move FID).
"""

from __future__ import annotations

import numpy as np

RESIZE_FILTER = "PIL bicubic, antialiased"  # recorded in manifests and metric reports

# CelebA's standard square: 20 px cut off top and bottom of the 178x218 aligned images.
CELEBA_CUT = 20 / 218


class Skip(Exception):
    """This photo gives no face (unreadable, too small, no face found): skip it, say why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3), up or down; `size` is a side or (h, w).

    PIL's bicubic widens its kernel when shrinking, so it antialiases (unlike torch's
    default interpolate); enlarging uses plain bicubic.
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] == (h, w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC))


def crop_celeba(image: np.ndarray, size: int, allow_upscale: bool = False) -> np.ndarray:
    """CelebA crop: cut 20/218 of the height off top and bottom, centre a square, resize.

    178x218 -> 178x178 (the usual crop of face GAN/diffusion papers); 89x109 -> 89x89.
    """
    h = image.shape[0]
    cut = round(h * CELEBA_CUT)
    return crop_center(image[cut : h - cut], size, allow_upscale)


def crop_center(image: np.ndarray, size: int, allow_upscale: bool = False) -> np.ndarray:
    """The largest centred square, resized to size x size."""
    h, w = image.shape[:2]
    side = min(h, w)
    if side < size and not allow_upscale:
        raise Skip(f"too small: {side}x{side} square crop < {size} px (pass --allow-upscale to enlarge)")
    top, left = (h - side) // 2, (w - side) // 2
    return resize(image[top : top + side, left : left + side], size)
