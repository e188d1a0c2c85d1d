"""The memorization audit: nearest training faces of every generated picture in three spaces.

- inception: the 2048-d FID features (semantic similarity);
- pixels: colour pictures downsampled to 32x32 and scaled to [0, 1] (near-exact copies,
  which Inception features can miss when the copy is shifted in colour);
- identity: dlib's 128-d face descriptor, on the faces that are found (the same person,
  even in another pose). Costly on a CPU, so run on IDENTITY_MAX_* pictures spread over each set.
The maths is in memorization.py; this file gathers the arrays and draws the pairs.
"""

from __future__ import annotations

import numpy as np

from facegen.data.store import FaceStore, subset_rows


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

    `store` is the one searched: its train split (evaluate passes the store a run trained
    on when it is known). The pixel-space search always covers the whole split (cheap). The
    Inception-space search covers `inception_max_train` training faces when given (features
    of a large split cost minutes per thousand on a CPU), the identity search
    `identity_max_train`; every pool smaller than its set is spread over it
    (`FaceStore.subset_rows`: a merged store lists its first source first), and its size is
    recorded. Pairs are reported by their row in the train split."""
    from facegen.metrics.cache import cached_array
    from facegen.metrics.inception import store_features
    from facegen.metrics.identity import identity_embeddings
    from facegen.metrics.memorization import audit_summary, nearest_training, uniqueness

    train = store.split("train")
    out: dict = {"train_count": len(train)}

    pool_rows = store.subset_rows("train", inception_max_train)
    inception = audit_summary(nearest_training(gen_features, store_features(store, "train", len(pool_rows), batch_size, progress)))
    for pair in inception["closest_pairs"]:
        pair["train"] = int(pool_rows[pair["train"]])
    pool = "evenly spaced over the train split" if len(pool_rows) < len(train) else "all"
    out["inception"] = {"n_train": len(pool_rows), "pool": pool, **inception}
    pixels = nearest_training(pixel_features(images, pixel_side), pixel_features(train, pixel_side))
    out["pixels"] = {"side": pixel_side, **audit_summary(pixels)}

    # identity: only pictures with a detected face take part on either side
    gen_rows = subset_rows(len(images), identity_max_generated)
    id_rows = store.subset_rows("train", identity_max_train)
    key = {"store": store.content_hash, "split": "train", "count": len(id_rows), "embedding": "dlib_resnet_v1/hog/5pt",
           **({"rows": "spread"} if len(id_rows) < len(train) else {})}
    train_ids = cached_array("identity", key, lambda: identity_embeddings(store.subset("train", identity_max_train), progress,
                                                                          "training identities"))
    gen_ids = identity_embeddings([images[i] for i in gen_rows], progress, "generated identities")
    gen_found, train_found = ~np.isnan(gen_ids[:, 0]), ~np.isnan(train_ids[:, 0])
    identity = {"n_generated": len(gen_rows), "faces_generated": int(gen_found.sum()), "n_train": len(id_rows),
                "faces_train": int(train_found.sum())}
    if gen_found.sum() and train_found.sum() >= 2:
        nn = nearest_training(gen_ids[gen_found], train_ids[train_found])
        summary = audit_summary(nn)
        # report indices in the caller's numbering, not among found faces
        gen_index, train_index = gen_rows[np.flatnonzero(gen_found)], id_rows[np.flatnonzero(train_found)]
        summary["flagged"] = [int(gen_index[i]) for i in summary["flagged"]]
        for pair in summary["closest_pairs"]:
            pair["generated"], pair["train"] = int(gen_index[pair["generated"]]), int(train_index[pair["train"]])
        # n_generated stays the number of pictures examined (the protocol), not of faces found
        identity |= summary | {"uniqueness": uniqueness(nn["d1"]), "n_generated": len(gen_rows)}
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
