"""Pixels to bytes for the web: PNG faces and GIF morphs, resized on request.

Encoding is deterministic (fixed PIL options, no timestamps), so the same image always
gives the same bytes, which is what lets the server cache by seed and promise
`Cache-Control: immutable`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def resize(image: np.ndarray, size: int) -> Image.Image:
    """uint8 (H, W, 3) -> PIL image of size x size (Lanczos; a no-op at the native size)."""
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if picture.size != (size, size):
        picture = picture.resize((size, size), Image.Resampling.LANCZOS)
    return picture


def png_bytes(image: np.ndarray, size: int) -> bytes:
    buf = io.BytesIO()
    resize(image, size).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def gif_bytes(frames: np.ndarray, size: int, frame_ms: int = 80) -> bytes:
    """An endlessly looping GIF that walks forward through `frames` (N, H, W, 3) and back.

    Going back and forth (A..B..A) makes the loop seamless; the end frames are held a
    little longer so the two faces can be seen.
    """
    pictures = _one_palette([resize(f, size) for f in frames])
    walk = pictures + pictures[-2:0:-1]
    durations = [frame_ms] * len(walk)
    durations[0] = durations[len(pictures) - 1] = frame_ms * 8
    buf = io.BytesIO()
    walk[0].save(buf, format="GIF", save_all=True, append_images=walk[1:], duration=durations, loop=0, optimize=False)
    return buf.getvalue()


def _one_palette(pictures: list[Image.Image]) -> list[Image.Image]:
    """Quantise every frame to one shared 256-colour palette, so colours do not flicker
    from frame to frame as they do when each frame gets its own palette."""
    width, height = pictures[0].size
    sheet = Image.new("RGB", (width, height * len(pictures)))
    for i, picture in enumerate(pictures):
        sheet.paste(picture, (0, i * height))
    palette = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    return [picture.quantize(palette=palette) for picture in pictures]
