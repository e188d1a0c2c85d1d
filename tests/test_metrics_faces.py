"""Face identity embeddings and face checks on a few UTKFace faces (dlib, CPU); the default
GAN's faces framed like them where ../shared/data is absent (conftest.py)."""

import cv2
import numpy as np
import pytest

from facegen.data.transforms import resize
from facegen.metrics.faces import QUANTITIES, check_array, face_plot, face_summary
from facegen.metrics.identity import embed_one, identity_embeddings
from facegen.metrics.images import ImageFolder
from facegen.metrics.memorization import SAME_IDENTITY, nearest_training, uniqueness


@pytest.fixture(scope="module")
def faces(utk_dir):
    utk = ImageFolder(utk_dir)
    picks = np.random.default_rng(1).choice(len(utk), 6, replace=False)
    return [resize(utk[i], 128) for i in picks]


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def test_identity_same_picture_close_other_people_far_noise_none(faces):
    ids = identity_embeddings(faces, progress=False)
    found = ~np.isnan(ids[:, 0])
    assert found.sum() >= 5, "dlib should find most faces of utk_dir"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert embed_one(noise) is None
    # the same face, mirrored and shrunk to 64 px: still the same identity
    k = int(np.flatnonzero(found)[0])
    variant = embed_one(resize(faces[k][:, ::-1].copy(), 64))
    assert variant is not None and np.linalg.norm(variant - ids[k]) < SAME_IDENTITY
    # a generated set holding that variant among strangers: one non-unique face
    others = ids[found][1:]
    nn = nearest_training(np.stack([variant, *others[:2]]), ids[found])
    assert nn["nearest"][0] == 0 and nn["d1"][0] < SAME_IDENTITY
    assert uniqueness(nn["d1"][:1]) == 0.0


def test_face_checks_see_tilted_faces(faces):
    upright = check_array(faces)
    tilted = check_array([rotate(f, -20) for f in faces])  # 20 degrees clockwise on screen
    assert upright.shape == (6, 1 + len(QUANTITIES))
    summary = face_summary(tilted, upright)
    assert summary["reference"]["one_face_share"] >= 5 / 6
    assert 12 < summary["wasserstein1"]["roll_deg"] < 28  # the roll distribution moved by about 20 degrees
    same = face_summary(upright, upright)
    assert all(v == 0 for v in same["wasserstein1"].values())
    assert face_plot(tilted, upright)[:8] == b"\x89PNG\r\n\x1a\n"
