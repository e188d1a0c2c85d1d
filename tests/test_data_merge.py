"""`facegen data prepare SRC1 SRC2 ...`: several photo folders/archives merged into one store."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from facegen.data.prepare import prepare
from facegen.utils import FacegenError


def photos(folder, n, seed, size=40):
    """n smooth random 'photos' (PNG, lossless) in folder; returns their arrays."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(n):
        a = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        Image.fromarray(a).save(folder / f"{i:03d}.png")
        arrays.append(a)
    return arrays


def test_two_sources_make_one_store_with_every_face_named_by_its_source(tmp_path):
    a, b = photos(tmp_path / "celeb", 6, 0), photos(tmp_path / "utk", 4, 1)
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as z:  # an archive merges like a folder
        for i in range(3):
            z.write(tmp_path / "celeb" / f"{i:03d}.png", f"x/{i:03d}.png")  # exact duplicates of celeb's first 3
    store = prepare([tmp_path / "celeb", tmp_path / "utk", tmp_path / "more.zip"], tmp_path / "merged", size=40,
                    crop="center", holdout=2, workers=1, progress=False)
    m = store.manifest
    assert m["source"]["kind"] == "multi" and set(m["source"]["sources"]) == {"celeb", "utk", "more.zip"}
    assert m["counts"]["files"] == 13 and m["counts"]["duplicates"] == 3
    assert m["splits"] == {"train": 8, "holdout": 2}
    faces = np.concatenate([store.split("train"), store.split("holdout")])
    want = {x.tobytes() for x in a + b}
    assert {f.tobytes() for f in faces} == want      # every face once, none lost, duplicates across sources dropped
    assert all(s["file"].startswith("more.zip/") for s in m["skipped"])


def test_merged_store_is_the_same_whatever_the_order_of_the_sources(tmp_path):
    photos(tmp_path / "one", 3, 0), photos(tmp_path / "two", 3, 1)
    ab = prepare([tmp_path / "one", tmp_path / "two"], tmp_path / "ab", size=40, crop="center", holdout=1, workers=1, progress=False)
    ba = prepare([tmp_path / "two", tmp_path / "one"], tmp_path / "ba", size=40, crop="center", holdout=1, workers=1, progress=False)
    assert ab.content_hash == ba.content_hash


def test_a_source_given_twice_or_missing_is_a_clear_error(tmp_path):
    photos(tmp_path / "one", 2, 0)
    with pytest.raises(FacegenError, match="given twice"):
        prepare([tmp_path / "one", tmp_path / "one"], tmp_path / "x", size=40, crop="center", workers=1, progress=False)
    with pytest.raises(FacegenError, match="no such folder"):
        prepare([tmp_path / "one", tmp_path / "nope"], tmp_path / "x", size=40, crop="center", workers=1, progress=False)


def test_the_cli_takes_several_sources(tmp_path, facegen):
    photos(tmp_path / "one", 3, 0), photos(tmp_path / "two", 3, 1)
    result = facegen("data", "prepare", str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "s"), "--size", "40",
                     "--crop", "center", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "s" / "manifest.json").is_file()
