"""Face folders shaped like ../shared/data's, made from the embedded default GAN.

The tests use the real CelebA and UTKFace photos when ../shared/data holds them; elsewhere
they use these instead, so every test runs anywhere (the real photos are never committed:
their licence does not allow it). The GAN makes believable faces that dlib detects (one
face in 98.7 % of its samples), so the face checks and alignment tests still measure real
outcomes. Each face is placed where the real folder puts its faces: the eye positions below
are the means dlib measured on 40 photos of each real folder.

    python tests/synthetic_faces.py /tmp/faces   # writes both folders there, to look at
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# (frame height, width), eye midpoint (x, y) and eye distance in pixels, measured on the real folders.
CELEBA = {"frame": (109, 89), "eyes": (44.0, 55.9), "eye_distance": 19.5}   # celeba-10k: aligned, half size
UTK = {"frame": (200, 200), "eyes": (98.0, 59.9), "eye_distance": 77.3}     # utkface: tight face crops
# The same for the GAN's 64x64 faces (aligned, --zoom 1.3), measured on its first 64 seeds.
GAN_EYES, GAN_EYE_DISTANCE = (31.2, 29.7), 22.3

CELEBA_COUNT = 512  # celeba_store32 prepares the first 512 files
UTK_COUNT = 100     # the most any test reads is 80 random faces (test_metrics_real_faces)
UTK_FIRST_SEED = 100_000  # UTK-like faces never share a GAN seed with the CelebA-like ones

# 1 inside the GAN's square, falling linearly to 0 over its outer 8 pixels.
_ramp = np.minimum(np.arange(64), np.arange(64)[::-1]) / 8
FADE = np.clip(np.minimum(_ramp[:, None], _ramp[None, :]), 0, 1).astype(np.float32)


def gan_faces(seeds) -> np.ndarray:
    """uint8 (N, 64, 64, 3) faces of the embedded default model, on the CPU so that every
    machine makes the same pixels. One torch thread: on a busy 2-core machine it is faster."""
    import torch

    from facegen.sample import generate, load_generator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return generate(load_generator(None, device="cpu"), seeds, batch_size=32)
    finally:
        torch.set_num_threads(threads)


def place(face: np.ndarray, shape: dict, rng: np.random.Generator) -> np.ndarray:
    """The face scaled and moved so its eyes land where the real folder has them (give or
    take a pixel or two and a few percent of scale, as real photos do). Outside the GAN's
    square the picture is a heavily blurred copy of its border: a plain background with no
    second face in it, faded into the face over 8 of the GAN's pixels so no square edge shows."""
    (h, w), (ex, ey) = shape["frame"], shape["eyes"]
    scale = shape["eye_distance"] / GAN_EYE_DISTANCE * rng.uniform(0.95, 1.05)
    dx, dy = rng.uniform(-1.5, 1.5, 2) * shape["eye_distance"] / 20
    m = np.float32([[scale, 0, ex + dx - scale * GAN_EYES[0]], [0, scale, ey + dy - scale * GAN_EYES[1]]])
    sharp = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    soft = cv2.stackBlur(sharp, (w | 1, w | 1))  # a Gaussian-like blur whose cost does not grow with its width
    alpha = cv2.warpAffine(FADE, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    return np.clip(alpha * sharp + (1 - alpha) * soft, 0, 255).astype(np.uint8)


def save_jpeg(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, quality=90)


def write_celeba_like(out: Path, count: int = CELEBA_COUNT) -> Path:
    """89x109 JPEGs named 000001.jpg, 000002.jpg, ... as in celeba-10k. The second half are
    the first half's faces mirrored and placed again (other pixels, no exact duplicate): the
    GAN is the slow part, and only the 512-face store reads past the first half."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    faces = gan_faces(range((count + 1) // 2))
    faces = np.concatenate([faces, faces[:, :, ::-1]])[:count]
    for i, face in enumerate(faces, 1):
        save_jpeg(out / f"{i:06d}.jpg", place(face, CELEBA, rng))
    return out


def write_utk_like(out: Path, count: int = UTK_COUNT) -> Path:
    """200x200 JPEGs named age_gender_race_date.jpg.chip.jpg as in UTKFace (made-up labels)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    seeds = range(UTK_FIRST_SEED, UTK_FIRST_SEED + count)
    for seed, face in zip(seeds, gan_faces(seeds)):
        age, gender, race = rng.integers(1, 90), rng.integers(0, 2), rng.integers(0, 5)
        save_jpeg(out / f"{age}_{gender}_{race}_20170116{seed:09d}.jpg.chip.jpg", place(face, UTK, rng))
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1])
    print(write_celeba_like(root / "celeba-like"), write_utk_like(root / "utk-like"))
