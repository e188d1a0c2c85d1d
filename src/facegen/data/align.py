"""FFHQ-style face alignment, and the face check used on generated images.

The recipe is the one of the FFHQ dataset script (`recreate_aligned_images` in NVlabs'
ffhq-dataset/download_ffhq.py): the eye centres and the mouth centre define an oriented
square, which is cut out of the photo (reflect-padded and blurred where it leaves the photo)
and resampled to the output size with antialiasing. The square depends only on the
landmarks, so the detector that found the face does not change the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facegen.data.landmarks import Face, as_rgb, find_faces, keypoints
from facegen.data.transforms import Skip
from facegen.utils import FacegenError

# Refuse to enlarge the face square more than this: an aligned face blown up from a tiny
# patch is blur, not a face (CelebA's 89x109 photos still align at 128 px).
MAX_UPSCALE = 2.0

# The face check enlarges generated images (32-128 px) to this long side before running
# dlib's HOG detector, which misses faces under ~80 px; an FFHQ-framed face fills about
# half the picture, so it becomes ~130 px.
CHECK_SIDE = 256


def crop_align(
    image: np.ndarray,  # (H, W, 3) uint8 RGB photo, any size
    size: int,  # px, side of the square output
    *,
    all_faces: bool = False,  # every face of a group photo, not only the largest
    zoom: float = 1.0,  # > 1 frames the face tighter, < 1 leaves more margin; 1 = FFHQ framing
    detector: str = "hog",  # "hog", "cnn" or "haar"; Haar is also the fallback of the others
    landmarks: int = 68,  # landmark model: 68 or 5 points
) -> list[np.ndarray]:
    """Aligned uint8 (size, size, 3) faces, largest first; raises Skip(reason) when there is none."""
    try:
        faces = find_faces(image, detector=detector, landmarks=landmarks)
        if not faces:
            raise Skip("no face found")
        faces = faces if all_faces else faces[:1]
        quads = [ffhq_quad(keypoints(f.landmarks), zoom) for f in faces]
        big_enough = [q for q in quads if _quad_side(q) * MAX_UPSCALE >= size]
        if not big_enough:
            raise Skip(f"face too small to align at {size} px ({_quad_side(quads[0]):.0f} px face square)")
        image = as_rgb(image)
        return [warp_quad(image, q, size) for q in big_enough]
    except (Skip, FacegenError):
        raise
    except Exception as e:  # one odd photo (shape, dlib or OpenCV refusal) must not stop a whole run
        raise Skip(f"alignment failed ({type(e).__name__}: {e})") from None


def ffhq_quad(points: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """(4, 2) corners of the face square: top-left, bottom-left, bottom-right, top-right.

    `points` are keypoints() output: image-left eye, image-right eye, mouth centre.
    Same maths and constants as the FFHQ script.
    """
    eye_left, eye_right, mouth = np.asarray(points, dtype=np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth - eye_avg
    # x: half the square's top edge, y: half its left edge (x turned by 90 degrees).
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / zoom
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _quad_side(quad: np.ndarray) -> float:
    return float(np.hypot(*(quad[3] - quad[0])))


def warp_quad(image: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Resample the square `quad` (pixel coordinates of `image`) to a size x size picture."""
    quad = np.asarray(quad, dtype=np.float64)
    qsize = _quad_side(quad)

    # Cut out the part of the photo under the square's bounding box plus a border.
    lo, hi = _bounds(quad, qsize)
    h, w = image.shape[:2]
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    patch = image[y0 : min(hi[1], h), x0 : min(hi[0], w)]
    quad = quad - [x0, y0]

    # Shrink by an integer factor first (area filter) so the final resample is at most
    # ~4x, as FFHQ does; the square is then sampled at ~1 px per source px and area-resized.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        ph, pw = patch.shape[:2]
        patch = cv2.resize(patch, (max(1, round(pw / shrink)), max(1, round(ph / shrink))), interpolation=cv2.INTER_AREA)
        quad = (quad + 0.5) * [patch.shape[1] / pw, patch.shape[0] / ph] - 0.5
        qsize = _quad_side(quad)

    # Pad where the square leaves the photo; a few pixels over the edge are left to the
    # warp's reflecting border, as in FFHQ (`max(pad) > border - 4`).
    lo, hi = _bounds(quad, qsize)
    pad = (max(-lo[0], 0), max(-lo[1], 0), max(hi[0] - patch.shape[1], 0), max(hi[1] - patch.shape[0], 0))
    if max(pad) > max(int(np.rint(qsize * 0.1)), 3) - 4:
        patch, offset = _pad_like_ffhq(patch, pad, qsize)
        quad = quad + offset
    side = max(size, int(np.ceil(qsize)))
    out = cv2.warpAffine(patch, _square_to_quad(quad, side), (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    if side != size:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out, dtype=np.uint8)


def _bounds(quad: np.ndarray, qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (x, y) corners of the square's bounding box grown by FFHQ's border (10%)."""
    border = max(int(np.rint(qsize * 0.1)), 3)
    return np.floor(quad.min(0)).astype(int) - border, np.ceil(quad.max(0)).astype(int) + border


def _square_to_quad(quad: np.ndarray, side: int) -> np.ndarray:
    """2x3 affine map from output pixel (u, v) of a side x side picture into `quad`.

    Output pixel centres sit at (u + 0.5) / side along the square's edges, the same
    half-pixel convention as PIL's QUAD transform with FFHQ's `quad + 0.5`.
    """
    top_left, bottom_left, _, top_right = quad
    ex, ey = (top_right - top_left) / side, (bottom_left - top_left) / side
    origin = top_left + 0.5 * (ex + ey)
    return np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]]], dtype=np.float64)


def _pad_like_ffhq(patch: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect-pad (left, top, right, bottom), then blur and fade the padding to the median colour.

    Plain reflection shows mirrored half-faces at the edges; FFHQ hides them by blurring
    the padding more the further it is from the photo. Returns the padded patch and the
    (x, y) shift of coordinates.
    """
    pad = np.maximum(pad, max(1, int(np.rint(qsize * 0.3))))  # FFHQ pads generously once it pads at all
    left, top, right, bottom = (int(p) for p in pad)
    padded = np.pad(patch, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = padded.shape[:2]
    y, x = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    # Below 0 inside the photo, 0 at its edge, rising to 1 at the outer edge of the padding.
    mask = np.maximum(1.0 - np.minimum(x / left, (w - 1 - x) / right), 1.0 - np.minimum(y / top, (h - 1 - y) / bottom))[:, :, None]
    # Blurring the uint8 picture is ~3x faster than float and differs by under one level.
    img = padded.astype(np.float32)
    blurred = cv2.GaussianBlur(padded, (0, 0), max(qsize * 0.02, 0.5)).astype(np.float32)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    # The median colour of a ~10,000-pixel subsample: the same colour as FFHQ's full median
    # to within a level or two, for a fraction of the time.
    step = max(1, int(np.sqrt(h * w / 10_000)))
    img += (np.median(img[::step, ::step], axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), np.array([left, top], dtype=np.float64)


# ----------------------------------------------------------------------------------------
# The face check: does a (generated) picture hold one face, how is it rolled and framed?


@dataclass(frozen=True)
class FaceCheck:
    """What the face detector sees in one picture. Positions are fractions of width/height.

    Eyes are those of the largest face; "left" is left in the picture. `roll_deg` is the
    angle of the eye line, positive when the face leans clockwise on screen (the image-
    right eye lower). Fields other than num_faces are None when no face was found.
    """

    num_faces: int
    roll_deg: float | None = None
    left_eye: tuple[float, float] | None = None
    right_eye: tuple[float, float] | None = None
    mouth: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) of the detection

    @property
    def found(self) -> bool:
        return self.num_faces > 0


def check_faces(
    images: np.ndarray,  # (N, H, W, 3) uint8, e.g. generated 64x64 faces
    *,
    detector: str = "hog",  # "hog" (default, strict), "cnn" or "haar"
    fallback: bool = False,  # also try the Haar cascade when the detector finds nothing
) -> list[FaceCheck]:
    """One FaceCheck per picture. Pictures are enlarged to CHECK_SIDE px before detection."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    return [_check_one(image, detector, fallback) for image in images]


def _check_one(image: np.ndarray, detector: str, fallback: bool) -> FaceCheck:
    h, w = image.shape[:2]
    scale = CHECK_SIDE / max(h, w)
    if scale > 1:
        # Bicubic enlargement: smoother edges for HOG than the blocky nearest-neighbour.
        image = cv2.resize(np.ascontiguousarray(image), (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    faces: list[Face] = find_faces(image, detector=detector, fallback=fallback, min_side=0)
    if not faces:
        return FaceCheck(num_faces=0)
    H, W = image.shape[:2]
    eye_l, eye_r, mouth = keypoints(faces[0].landmarks)
    dx, dy = eye_r - eye_l
    x0, y0, x1, y1 = faces[0].box

    def norm(p) -> tuple[float, float]:
        return (float((p[0] + 0.5) / W), float((p[1] + 0.5) / H))

    return FaceCheck(
        num_faces=len(faces),
        roll_deg=float(np.degrees(np.arctan2(dy, dx))),
        left_eye=norm(eye_l),
        right_eye=norm(eye_r),
        mouth=norm(mouth),
        box=(x0 / W, y0 / H, x1 / W, y1 / H),
    )


def eye_spread(checks: list[FaceCheck]) -> dict:
    """How well eye centres agree over a set of pictures (std as a fraction of width/height).

    `max_std` is the largest of the four std's: the figure the 2%-of-width target applies to.
    """
    found = [c for c in checks if c.found]
    out = {"n": len(checks), "detected": len(found), "detection_rate": len(found) / len(checks) if checks else 0.0}
    if len(found) < 2:
        return out | {"max_std": None}
    eyes = np.array([[*c.left_eye, *c.right_eye] for c in found])  # (n, 4): lx, ly, rx, ry
    names = ("left_x", "left_y", "right_x", "right_y")
    out |= {f"{k}_mean": float(v) for k, v in zip(names, eyes.mean(0))}
    out |= {f"{k}_std": float(v) for k, v in zip(names, eyes.std(0))}
    out["max_std"] = float(eyes.std(0).max())
    out["roll_std_deg"] = float(np.std([c.roll_deg for c in found]))
    return out


def print_eye_spread(store, faces: int = 500, seed: int = 0) -> dict:
    """Run the face check on up to `faces` random training faces of a store; print and return eye_spread.

    A sample keeps `facegen data info` fast (~10 ms a face); 500 faces put the std within
    about 3% of its value over the whole store.
    """
    from rich.console import Console
    from rich.progress import track

    from facegen.data.store import FaceStore

    store = store if isinstance(store, FaceStore) else FaceStore(store)
    train = store.split("train")
    picks = np.sort(np.random.default_rng(seed).choice(len(train), min(faces, len(train)), replace=False))
    console = Console(stderr=True)
    checks = [check_faces(train[i][None])[0] for i in track(picks, description="face check", console=console, transient=True)]
    spread = eye_spread(checks)
    line = f"eye centres: face found in {spread['detected']}/{spread['n']} random faces"
    if spread["max_std"] is not None:
        line += (f"; std left eye x {spread['left_x_std']:.2%} y {spread['left_y_std']:.2%}, right eye "
                 f"x {spread['right_x_std']:.2%} y {spread['right_y_std']:.2%} of the side (max {spread['max_std']:.2%})")
    Console().print(line, markup=False)
    return spread
