"""Face-identity embeddings: dlib's 128-d face descriptor (the face_recognition library's).

Two faces of the same person lie closer than 0.6 in this space (dlib reports 99.38% on
LFW at that threshold). Faces are found with the project's detector
(`facegen.data.landmarks.find_faces`, HOG + 5-point landmarks); the ResNet model file
comes from the face-recognition-models package, loaded by path (its own __init__ needs
pkg_resources).
"""

from __future__ import annotations

import functools

import numpy as np

EMBEDDING_DIM = 128
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DETECT_SIDE = 256  # small generated faces are enlarged to this side, as for the face check


@functools.lru_cache(maxsize=1)
def _recognizer():
    import dlib

    from facegen.data.landmarks import models_dir

    return dlib.face_recognition_model_v1(str(models_dir() / MODEL_FILE))


def embed_one(image: np.ndarray) -> np.ndarray | None:
    """The 128-d descriptor of the largest face in one uint8 (H, W, 3) picture; None if no face."""
    import dlib

    from facegen.data.landmarks import find_faces
    from facegen.data.transforms import resize

    image = np.asarray(image, dtype=np.uint8)
    if max(image.shape[:2]) < DETECT_SIDE:
        image = resize(image, DETECT_SIDE)
    faces = find_faces(image, detector="hog", landmarks=5, fallback=False, min_side=0)
    if not faces:
        return None
    x0, y0, x1, y1 = (int(round(v)) for v in faces[0].box)
    shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1 - 1, y1 - 1),
                                       [dlib.point(int(round(x)), int(round(y))) for x, y in faces[0].landmarks])
    return np.asarray(_recognizer().compute_face_descriptor(np.ascontiguousarray(image), shape), dtype=np.float32)


def identity_embeddings(images, progress: bool = True, label: str = "face identities") -> np.ndarray:
    """(n, 128) float32 descriptors; rows of NaN where no face was found."""
    from facegen.progress import counting_bar

    out = np.full((len(images), EMBEDDING_DIM), np.nan, dtype=np.float32)
    with counting_bar(label, len(images), enabled=progress) as advance:
        for i in range(len(images)):
            embedding = embed_one(images[i])
            if embedding is not None:
                out[i] = embedding
            advance(1)
    return out
