"""Find faces and their landmarks: dlib HOG or CNN detector, OpenCV Haar fallback, dlib landmarks.

Models are loaded lazily, once per process, and cached in `_MODELS`, so a process pool pays
the loading cost (about 0.5 s for the 68-point model) once per worker, not once per photo.
The landmark models come from the `face-recognition-models` package, loaded by file path:
importing that package needs `pkg_resources`, which recent setuptools no longer ships.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facegen.utils import FacegenError

DETECTORS = ("hog", "cnn", "haar")
LANDMARK_MODELS = {68: "shape_predictor_68_face_landmarks.dat", 5: "shape_predictor_5_face_landmarks.dat"}

# dlib's HOG detector misses faces narrower than about 80 px, so small photos are upscaled
# until their short side reaches DETECT_MIN_SIDE before detection (CelebA's 89x109 photos
# go to 2.25x: 97% found instead of 2%). Huge photos are downscaled to DETECT_MAX_SIDE:
# faces there stay well above 80 px unless the photo is a crowd.
DETECT_MIN_SIDE = 200  # px, short side
DETECT_MAX_SIDE = 1600  # px, long side
UPSAMPLE_MAX_PIXELS = 1200 * 1200  # only retry with dlib's 2x upsampling below this size
# When nothing is found, the picture is also searched turned by these angles: dlib's HOG
# detector misses some heads rolled by 20-30 degrees or more, and every sideways or upside-
# down photo (a camera turned without an EXIF orientation tag).
TURN_DEGREES = (30.0, -30.0, 90.0, -90.0, 180.0)

# The landmark model was trained on upright faces in HOG boxes. For other boxes and rolled
# heads, the landmarks from the detector's box are predicted again REFINE_STEPS times in a
# window turned upright and boxed the way HOG boxes faces (`_hog_box_from_landmarks`), so
# the result depends on the face, not on the detector's box or the head's roll.
REFINE_STEPS = 2
UPRIGHT_DEG = 8.0  # heads rolled less than this in a HOG box are not refined

_MODELS: dict[str, object] = {}


@dataclass(frozen=True)
class Face:
    """One face: its detection box (x0, y0, x1, y1) and landmarks (K, 2) as (x, y), in pixels."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (68, 2) or (5, 2) float64, (x, y) pixel coordinates
    detector: str  # which detector found the box: "hog", "cnn" or "haar"

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def models_dir() -> Path:
    """The folder of dlib model files shipped in the face-recognition-models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacegenError("face-recognition-models is not installed; run `pip install face-recognition-models==0.3.0`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model(name: str):
    """Load one model on first use in this process: 'hog', 'cnn', 'haar', 'lm68' or 'lm5'."""
    if name not in _MODELS:
        import dlib

        if name == "hog":
            _MODELS[name] = dlib.get_frontal_face_detector()
        elif name == "cnn":
            _MODELS[name] = dlib.cnn_face_detection_model_v1(str(_model_file("mmod_human_face_detector.dat")))
        elif name == "haar":
            _MODELS[name] = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        else:
            _MODELS[name] = dlib.shape_predictor(str(_model_file(LANDMARK_MODELS[int(name[2:])])))
    return _MODELS[name]


def preload(detector: str = "hog", landmarks: int = 68) -> None:
    """Load the models a worker process will need now, not on its first photo (pool initialisers)."""
    for name in (detector, "hog", "haar", f"lm{landmarks}"):
        _model(name)


def _model_file(filename: str) -> Path:
    path = models_dir() / filename
    if not path.is_file():
        raise FacegenError(f"{path} is missing; reinstall it with `pip install --force-reinstall face-recognition-models==0.3.0`")
    return path


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any uint8 picture (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> contiguous (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 picture, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W, 3) picture, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def find_faces(
    image: np.ndarray,  # (H, W, 3) uint8 RGB, any size
    *,
    detector: str = "hog",  # first detector: "hog", "cnn" or "haar"
    landmarks: int = 68,  # landmark model: 68 or 5 points
    fallback: bool = True,  # when nothing is found: dlib's 2x upsampling, turned pictures, Haar
    min_side: int = DETECT_MIN_SIDE,  # px: upscale small pictures to this short side before detecting
) -> list[Face]:
    """Every face in `image`, largest box first, with landmarks in `image`'s pixel coordinates."""
    if detector not in DETECTORS:
        raise FacegenError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if landmarks not in LANDMARK_MODELS:
        raise FacegenError(f"unknown landmark model {landmarks}; choose 68 or 5 points")
    image = as_rgb(image)

    # Detect on a copy resized into [min_side, DETECT_MAX_SIDE]; `scale` maps back.
    h, w = image.shape[:2]
    scale = min(max(1.0, min_side / min(h, w)), DETECT_MAX_SIDE / max(h, w))
    work = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    gray = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)

    found, used, turn_deg = [], detector, 0.0
    for used, upsample, turn_deg in _attempts(detector, fallback, gray.size):
        found = _detect_turned(used, work, gray, upsample, turn_deg, landmarks)
        if found:
            break

    faces = []
    for box, points in found:
        # An upright face in a HOG box is what the landmark model was trained on: refining
        # it only adds noise (~1% of the eye distance per pass), so it is left as it is.
        if used != "hog" or turn_deg != 0 or abs(_roll_deg(points)) > UPRIGHT_DEG:
            for _ in range(REFINE_STEPS):
                points = _predict_upright(gray, points, landmarks)
        faces.append(Face(box=tuple(v / scale for v in box), landmarks=(points + 0.5) / scale - 0.5, detector=used))
    return sorted(faces, key=lambda f: -f.area)


def _attempts(detector: str, fallback: bool, pixels: int):
    """(detector, dlib upsampling, turn in degrees) to try in order until one finds a face."""
    yield detector, 0, 0.0
    if not fallback or detector == "haar":
        return
    if detector == "hog" and pixels <= UPSAMPLE_MAX_PIXELS:
        yield "hog", 1, 0.0
    for turn_deg in TURN_DEGREES:
        yield "hog", 0, turn_deg
    yield "haar", 0, 0.0


def _detect_turned(name: str, rgb: np.ndarray, gray: np.ndarray, upsample: int, turn_deg: float, model: int) -> list:
    """[(box, first landmarks)] found in the picture turned by `turn_deg`, in unturned coordinates."""
    if turn_deg == 0:
        boxes = _drop_overlaps(_detect(name, rgb, gray, upsample))
        return [(box, _predict(gray, box, model)) for box in boxes]
    # Turn counter-clockwise on screen on a canvas large enough to hold the whole picture.
    h, w = gray.shape
    cos, sin = abs(np.cos(np.radians(turn_deg))), abs(np.sin(np.radians(turn_deg)))
    size = (int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos)))  # (w, h)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), turn_deg, 1.0)
    m[:, 2] += np.array(size) / 2 - np.array([w / 2, h / 2])
    turned_rgb, turned_gray = (cv2.warpAffine(a, m, size, borderMode=cv2.BORDER_REPLICATE) for a in (rgb, gray))
    back = cv2.invertAffineTransform(m)
    found = []
    for x0, y0, x1, y1 in _drop_overlaps(_detect(name, turned_rgb, turned_gray, upsample)):
        points = _apply(back, _predict(turned_gray, (x0, y0, x1, y1), model))
        corners = _apply(back, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
        found.append((tuple(float(v) for v in (*corners.min(0), *corners.max(0))), points))
    return found


def _detect(name: str, rgb: np.ndarray, gray: np.ndarray, upsample: int) -> list[tuple[float, float, float, float]]:
    """Boxes (x0, y0, x1, y1) in pixels of the picture given."""
    if name == "hog":
        return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1) for r in _model("hog")(gray, upsample)]
    if name == "cnn":
        return [(d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1) for d in _model("cnn")(rgb, upsample)]
    # Haar: minNeighbors=5 gave no false positives on noise, flat colours or gradients.
    min_face = max(24, min(gray.shape) // 10)
    found = _model("haar").detectMultiScale(cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
    return [(float(x), float(y), float(x + bw), float(y + bh)) for x, y, bw, bh in found]


def _drop_overlaps(boxes: list, max_iou: float = 0.3) -> list:
    """Keep the larger of any two boxes overlapping more than `max_iou` (Haar repeats faces)."""
    kept: list = []
    for box in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        if all(_iou(box, k) <= max_iou for k in kept):
            kept.append(box)
    return kept


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _predict(gray: np.ndarray, box, model: int) -> np.ndarray:
    import dlib

    rect = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])) - 1, int(round(box[3])) - 1)
    shape = _model(f"lm{model}")(gray, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _predict_upright(gray: np.ndarray, points: np.ndarray, model: int) -> np.ndarray:
    """Predict again in a window turned so the eye line is level, boxed as HOG would box it.

    The landmark model was trained on near-upright faces: on a head rolled by 30 degrees
    it reports about 15. Turning the face upright first fixes that.
    """
    roll_deg = _roll_deg(points)
    x0, y0, x1, y1 = _hog_box_from_landmarks(points)
    centre, window = ((x0 + x1) / 2, (y0 + y1) / 2), int(np.ceil(2 * (x1 - x0)))
    # Turn counter-clockwise on screen by the roll about the face centre, centred in the window.
    m = cv2.getRotationMatrix2D(centre, roll_deg, 1.0)
    m[:, 2] += np.array([window / 2, window / 2]) - centre
    patch = cv2.warpAffine(gray, m, (window, window), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    upright = _predict(patch, _hog_box_from_landmarks(_apply(m, points)), model)
    return _apply(cv2.invertAffineTransform(m), upright)


def _roll_deg(points: np.ndarray) -> float:
    """Angle of the eye line in degrees, positive when the image-right eye is lower."""
    eye_l, eye_r, _ = keypoints(points)
    return float(np.degrees(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])))


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """2x3 affine map applied to (K, 2) points."""
    return points @ m[:, :2].T + m[:, 2]


# The HOG box around a face, relative to its landmarks: centre = eye_mid + a * (mouth - eye_mid)
# and side = b * max(|eye_to_eye|, |eye_to_mouth|): the means over 394 UTKFace/CelebA HOG boxes.
HOG_BOX_CENTRE = 0.50
HOG_BOX_SIDE = 2.29


def _hog_box_from_landmarks(points: np.ndarray) -> tuple[float, float, float, float]:
    eye_l, eye_r, mouth = keypoints(points)
    eye_mid = (eye_l + eye_r) / 2
    centre = eye_mid + HOG_BOX_CENTRE * (mouth - eye_mid)
    half = HOG_BOX_SIDE * max(np.hypot(*(eye_r - eye_l)), np.hypot(*(mouth - eye_mid))) / 2
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


# The 5-point model has eye corners and the nose base but no mouth. The mouth centre is put
# on the eye-midpoint -> nose line at this multiple of the eye-nose distance, the mean ratio
# measured by running both models on the same 196 UTKFace and CelebA faces (std 0.15).
MOUTH_FROM_NOSE = 1.37


def keypoints(points: np.ndarray) -> np.ndarray:
    """(3, 2): centre of the image-left eye, of the image-right eye, and of the mouth.

    "Left" means left in the picture (the subject's right eye), as in the FFHQ script.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 68:
        eye_l, eye_r = points[36:42].mean(0), points[42:48].mean(0)
        mouth = (points[48] + points[54]) / 2
    elif len(points) == 5:
        # dlib's 5 points: corners of the image-right eye, of the image-left eye, nose base.
        eye_r, eye_l, nose = points[0:2].mean(0), points[2:4].mean(0), points[4]
        eye_mid = (eye_l + eye_r) / 2
        mouth = eye_mid + MOUTH_FROM_NOSE * (nose - eye_mid)
    else:
        raise ValueError(f"expected 68 or 5 landmarks, got {len(points)}")
    return np.stack([eye_l, eye_r, mouth])
