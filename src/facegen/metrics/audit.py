"""The memorization audit: nearest training faces of every generated picture in three spaces.

- inception: the 2048-d FID features (semantic similarity);
- pixels: colour pictures downsampled to 32x32 and scaled to [0, 1] (near-exact copies,
  which Inception features can miss when the copy is shifted in colour);
- identity: dlib's 128-d face descriptor, on the faces that are found (the same person,
  even in another pose). Costly on a CPU, so run on the first IDENTITY_MAX_* pictures.
The maths is in memorization.py; this file gathers the arrays and draws the pairs.
"""

from __future__ import annotations

import numpy as np

from facegen.data.store import FaceStore


def pixel_features(images, side: int, count: int | None = None) -> np.ndarray:
    """(n, side*side*3) float32 in [0, 1] of the first `count` pictures."""
    from facegen.metrics.images import resized

    count = len(images) if count is None else count
    rows = [resized(images, side, range(s, min(s + 512, count))) for s in range(0, count, 512)]
    flat = np.concatenate(rows) if rows else np.zeros((0, side, side, 3), np.uint8)
    return flat.reshape(len(flat), -1).astype(np.float32) / 255


def memorization_audit(images, gen_features, store: FaceStore, batch_size: int, progress: bool,
                       identity_max_generated: int, identity_max_train: int, pixel_side: int,
                       inception_max_train: int | None = None) -> tuple[dict, bytes]:
    """Summary per space (copy share, flagged samples, closest pairs) and a PNG of the pairs.

    The pixel-space search always covers the whole train split (cheap). The Inception-space
    search covers the first `inception_max_train` training faces when given (features of a
    large train split cost minutes per thousand on a CPU); the pool size is recorded."""
    from facegen.data.store import spread_rows
    from facegen.metrics.cache import cached_array
    from facegen.metrics.inception import store_features
    from facegen.metrics.identity import identity_embeddings
    from facegen.metrics.memorization import audit_summary, nearest_training, uniqueness

    train = store.split("train")
    out: dict = {"train_count": len(train)}

    # A pool smaller than the split is spread evenly over it (a merged store lists its first
    # source first); pair indices are reported in the split's own numbering.
    n_inception = min(inception_max_train or len(train), len(train))
    spread = n_inception < len(train)
    inception = audit_summary(nearest_training(gen_features, store_features(store, "train", n_inception, batch_size, progress, spread)))
    rows = spread_rows(len(train), n_inception) if spread else np.arange(len(train))
    for pair in inception["closest_pairs"]:
        pair["train"] = int(rows[pair["train"]])
    out["inception"] = {"n_train": n_inception, "pool": "evenly spaced over the train split" if spread else "all", **inception}
    pixels = nearest_training(pixel_features(images, pixel_side), pixel_features(train, pixel_side))
    out["pixels"] = {"side": pixel_side, **audit_summary(pixels)}

    # identity: only pictures with a detected face take part on either side
    n_gen, n_train = min(identity_max_generated, len(images)), min(identity_max_train, len(train))
    id_rows = spread_rows(len(train), n_train) if n_train < len(train) else np.arange(len(train))
    key = {"store": store.content_hash, "split": "train", "count": n_train, "embedding": "dlib_resnet_v1/hog/5pt",
           **({"rows": "spread"} if n_train < len(train) else {})}
    train_ids = cached_array("identity", key, lambda: identity_embeddings(train[id_rows], progress, "training identities"))
    gen_ids = identity_embeddings([images[i] for i in range(n_gen)], progress, "generated identities")
    gen_found, train_found = ~np.isnan(gen_ids[:, 0]), ~np.isnan(train_ids[:, 0])
    identity = {"n_generated": n_gen, "faces_generated": int(gen_found.sum()), "n_train": n_train,
                "faces_train": int(train_found.sum())}
    if gen_found.sum() and train_found.sum() >= 2:
        nn = nearest_training(gen_ids[gen_found], train_ids[train_found])
        summary = audit_summary(nn)
        # report indices in the caller's numbering, not among found faces
        gen_index, train_index = np.flatnonzero(gen_found), id_rows[np.flatnonzero(train_found)]
        summary["flagged"] = [int(gen_index[i]) for i in summary["flagged"]]
        for pair in summary["closest_pairs"]:
            pair["generated"], pair["train"] = int(gen_index[pair["generated"]]), int(train_index[pair["train"]])
        # n_generated stays the number of pictures examined (the protocol), not of faces found
        identity |= summary | {"uniqueness": uniqueness(nn["d1"]), "n_generated": n_gen}
    out["identity"] = identity
    return out, pairs_picture(images, train, out, store.resolution)


def pairs_picture(images, train, audit: dict, side: int, count: int = 8) -> bytes:
    """PNG: the closest generated/training pairs, generated left, training right, closest
    first; pixel-space pairs then Inception-space pairs."""
    from facegen.metrics.images import resized
    from facegen.metrics.report import png_bytes
    from facegen.utils import make_grid

    tiles = []
    for space in ("pixels", "inception"):
        for pair in audit[space]["closest_pairs"][:count]:
            tiles += [resized(images, side, [pair["generated"]])[0], resized(train, side, [pair["train"]])[0]]
    return png_bytes(make_grid(np.stack(tiles), nrow=4))
