"""Face alignment and the face check, on photos built from the shared faces (real, or made
by the default GAN where ../shared/data is absent: see conftest.py).

Photos are made harder than the shared ones on purpose: rotated up to 30 degrees, pasted
off-centre onto a larger textured background, tiled several to a picture. The aligned
faces are then measured with check_faces: upright (roll near 0) and eyes where the FFHQ
framing puts them.
"""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import pytest
from PIL import Image

from facegen.data.align import FaceCheck, check_faces, crop_align, eye_spread, ffhq_quad
from facegen.data.landmarks import _model, find_faces, keypoints
from facegen.data.transforms import Skip

SIZE = 64
# Where the FFHQ framing puts the eye centres (fractions of the side), measured on 200
# aligned UTKFace faces (std under 0.01); a face counts as centred within EYE_TOLERANCE.
LEFT_EYE, RIGHT_EYE = (0.376, 0.475), (0.624, 0.475)
EYE_TOLERANCE = 0.05
ROLL_TOLERANCE_DEG = 5.0


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def faces(utk_dir) -> list[np.ndarray]:
    """Four 200x200 UTKFace photos (fixed names, in sorted order) whose faces align cleanly,
    looked for among about 60 spread over the folder (a failure, not a skip, if not found)."""
    paths = sorted(utk_dir.glob("*.jpg"))
    chosen = []
    for path in paths[:: max(1, len(paths) // 60)]:
        photo = load(path)
        try:
            (check,) = check_faces(np.stack(crop_align(photo, SIZE)))
        except Skip:
            continue
        if check.found and abs(check.roll_deg) < 3:
            chosen.append(photo)
        if len(chosen) == 4:
            return chosen
    raise AssertionError(f"only {len(chosen)} of the faces looked at in {utk_dir} align cleanly; 4 needed")


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth textured background (blurred noise over a gradient): no face in it."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 8)
    gradient = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
    return np.clip(0.5 * gradient + 1.5 * (noise - noise.mean()) + 60, 0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, face: np.ndarray, top: int, left: int) -> np.ndarray:
    out = canvas.copy()
    out[top : top + face.shape[0], left : left + face.shape[1]] = face
    return out


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Turn the picture counter-clockwise on screen by `degrees` about its centre."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def assert_upright_and_centred(aligned: np.ndarray) -> None:
    assert aligned.shape == (SIZE, SIZE, 3) and aligned.dtype == np.uint8
    (check,) = check_faces(aligned[None])
    assert check.num_faces == 1
    assert abs(check.roll_deg) < ROLL_TOLERANCE_DEG, check
    assert np.allclose(check.left_eye, LEFT_EYE, atol=EYE_TOLERANCE), check
    assert np.allclose(check.right_eye, RIGHT_EYE, atol=EYE_TOLERANCE), check


# ---- the alignment ---------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [-30, -15, 15, 30])
def test_rotated_faces_come_out_upright(faces, degrees):
    photo = paste(background(360, 360), faces[0], 80, 80)
    rotated = rotate(photo, degrees)
    # The input really is rotated: the check sees the head rolled by about `degrees`.
    assert abs(abs(check_faces(rotated[None], fallback=True)[0].roll_deg) - abs(degrees)) < 8
    (aligned,) = crop_align(rotated, SIZE)
    assert_upright_and_centred(aligned)


@pytest.mark.parametrize("turn", [cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180])
def test_sideways_and_upside_down_photos(faces, turn):
    photo = cv2.rotate(paste(background(300, 400, seed=7), faces[2], 50, 150), turn)
    (aligned,) = crop_align(photo, SIZE)
    assert_upright_and_centred(aligned)


def test_off_centre_face_in_a_larger_picture_is_centred(faces):
    # Face in the bottom-right corner of a 640x480 picture: the face square leaves the
    # photo, so the alignment must pad.
    photo = paste(background(480, 640, seed=1), faces[1], 480 - 200, 640 - 200)
    (aligned,) = crop_align(photo, SIZE)
    assert_upright_and_centred(aligned)


def test_tiled_faces_all_faces_returns_each_one(faces):
    photo = np.concatenate([np.concatenate(faces[:2], axis=1), np.concatenate(faces[2:], axis=1)], axis=0)
    aligned = crop_align(photo, SIZE, all_faces=True)
    assert len(aligned) == 4
    for face in aligned:
        assert_upright_and_centred(face)
    # Each tile gives its own face: aligned alone, it matches one of the four.
    alone = [crop_align(f, SIZE)[0].astype(np.float32) for f in faces]
    matches = {int(np.argmin([np.abs(face - a).mean() for a in alone])) for face in aligned}
    assert matches == {0, 1, 2, 3}


def test_default_keeps_the_largest_face(faces):
    small = cv2.resize(faces[2], (120, 120), interpolation=cv2.INTER_AREA)
    photo = paste(paste(background(300, 480, seed=2), small, 90, 20), faces[0], 50, 240)
    (aligned,) = crop_align(photo, SIZE)
    big_alone, small_alone = crop_align(faces[0], SIZE)[0], crop_align(small, SIZE)[0]
    diff = lambda a, b: np.abs(a.astype(np.float32) - b).mean()  # noqa: E731
    assert diff(aligned, big_alone) < diff(aligned, small_alone)


@pytest.mark.parametrize("other", ["haar", "cnn"])
def test_output_depends_on_landmarks_not_on_the_detector(faces, other):
    photo = paste(background(320, 320, seed=3), faces[3], 60, 60)
    by_hog = find_faces(photo, detector="hog")[0]
    by_other = find_faces(photo, detector=other)[0]
    assert by_hog.detector == "hog" and by_other.detector == other
    assert by_hog.box != by_other.box  # different boxes...
    hog = crop_align(photo, SIZE, detector="hog")[0].astype(np.float32)
    aligned = crop_align(photo, SIZE, detector=other)[0].astype(np.float32)
    # ...nearly the same face square: corners within 2% of its side, pixels within ~2%.
    quad_hog, quad_other = (ffhq_quad(keypoints(f.landmarks)) for f in (by_hog, by_other))
    side = np.hypot(*(quad_hog[3] - quad_hog[0]))
    assert np.abs(quad_hog - quad_other).max() < 0.02 * side
    assert np.abs(hog - aligned).mean() < 6.0


@pytest.mark.parametrize("degrees", [20, 180])
def test_five_point_landmarks_align_too(faces, degrees):
    photo = rotate(paste(background(360, 360, seed=4), faces[1], 80, 80), degrees)
    (aligned,) = crop_align(photo, SIZE, landmarks=5)
    assert_upright_and_centred(aligned)


def test_zoom_frames_tighter(faces):
    normal, zoomed = crop_align(faces[0], SIZE)[0], crop_align(faces[0], SIZE, zoom=1.5)[0]
    spread = [np.subtract(c.right_eye, c.left_eye)[0] for c in check_faces(np.stack([normal, zoomed]))]
    assert spread[1] == pytest.approx(1.5 * spread[0], rel=0.1)


def test_large_photo_and_portrait_orientation(faces):
    face = cv2.resize(faces[2], (700, 700), interpolation=cv2.INTER_CUBIC)
    photo = paste(background(2400, 1500, seed=5), face, 1200, 300)  # taller than wide
    (aligned,) = crop_align(photo, 128)
    assert aligned.shape == (128, 128, 3)
    assert_upright_and_centred(cv2.resize(aligned, (SIZE, SIZE), interpolation=cv2.INTER_AREA))


def is_upright_and_centred(aligned: np.ndarray) -> bool:
    try:
        assert_upright_and_centred(aligned)
        return True
    except AssertionError:
        return False


def test_small_celeba_photos_align(celeba_dir):
    # 89x109 photos, faces ~45 px wide; some are profiles or tilted heads, so count.
    photos = [load(p) for p in sorted(celeba_dir.glob("*.jpg"))[:8]]
    aligned = []
    for photo in photos:
        with contextlib.suppress(Skip):
            aligned.append(crop_align(photo, SIZE)[0])
    assert len(aligned) >= 6
    assert sum(is_upright_and_centred(a) for a in aligned) >= 5


def test_face_too_small_for_the_size_is_skipped(celeba_dir):
    photo = load(sorted(celeba_dir.glob("*.jpg"))[0])
    with pytest.raises(Skip, match="face too small to align at 256"):
        crop_align(photo, 256)


@pytest.mark.parametrize("kind", ["noise", "plain", "gradient", "tiny"])
def test_pictures_without_a_face_are_skipped(kind):
    rng = np.random.default_rng(0)
    picture = {
        "noise": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
        "plain": np.full((200, 200, 3), (90, 140, 200), dtype=np.uint8),
        "gradient": background(240, 400, seed=6),  # landscape-like: smooth sky-to-ground texture
        "tiny": np.zeros((1, 1, 3), dtype=np.uint8),
    }[kind]
    with pytest.raises(Skip) as caught:
        crop_align(picture, SIZE)
    assert caught.value.reason == "no face found"


def test_grey_and_rgba_photos_align_and_bad_arrays_are_skipped(faces):
    grey = cv2.cvtColor(faces[0], cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([faces[0], np.full(faces[0].shape[:2], 255, np.uint8)])
    for photo in (grey, rgba):
        (aligned,) = crop_align(photo, SIZE)
        assert aligned.shape == (SIZE, SIZE, 3)
    with pytest.raises(Skip, match=r"alignment failed \(ValueError: expected a uint8 picture"):
        crop_align(faces[0].astype(np.float32), SIZE)


def test_models_load_once_per_process():
    assert _model("lm68") is _model("lm68")
    assert _model("hog") is _model("hog")


# ---- the face check --------------------------------------------------------------------


def test_check_faces_on_small_generated_size_faces(faces):
    aligned = np.stack([crop_align(f, 32)[0] for f in faces])  # as small as generated faces get
    checks = check_faces(aligned)
    assert sum(c.found for c in checks) >= 3
    noise = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert [c.num_faces for c in check_faces(noise)] == [0, 0]
    assert check_faces(noise)[0].roll_deg is None


def test_eye_spread_is_the_std_of_eye_centres():
    checks = [
        FaceCheck(1, 0.0, (0.35, 0.45), (0.65, 0.45)),
        FaceCheck(1, 0.0, (0.39, 0.49), (0.61, 0.47)),
        FaceCheck(0),
    ]
    spread = eye_spread(checks)
    assert spread["n"] == 3 and spread["detected"] == 2
    assert spread["left_x_std"] == pytest.approx(0.02)
    assert spread["right_y_std"] == pytest.approx(0.01)
    assert spread["max_std"] == pytest.approx(0.02)
    assert eye_spread([FaceCheck(0)])["max_std"] is None


def test_data_info_prints_eye_centre_agreement(faces, tmp_path):
    from typer.testing import CliRunner

    from facegen.cli import app
    from facegen.data.store import write_store

    aligned = np.stack([crop_align(f, SIZE)[0] for f in faces])
    write_store(tmp_path / "store", {"train": aligned}, {"size": SIZE, "crop": "align"})
    result = CliRunner().invoke(app, ["data", "info", str(tmp_path / "store"), "--eyes", "4", "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "eye centres: face found in 4/4 random faces" in result.output
    assert "(max 0." in result.output  # under 1% of the side for these four


def test_unknown_detector_is_a_user_error(faces):
    from facegen.utils import FacegenError

    with pytest.raises(FacegenError, match="unknown face detector 'yolo'; choose one of hog, cnn, haar"):
        crop_align(faces[0], SIZE, detector="yolo")
