"""Every photo source gives the same faces: folder, zip, tar, tar.gz, CelebA layout, hf:."""

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegen.data.prepare import prepare
from facegen.utils import FacegenError


def _photos(n: int = 6) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    files = {}
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(buf, format="PNG")
        files[f"{'sub/' if i % 2 else ''}{i:03d}.png"] = buf.getvalue()
    return files


def _write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _prepare(src, out, **kw):
    return prepare(src, out, size=16, crop="center", workers=1, progress=False, **kw)


@pytest.fixture
def folder_store(tmp_path):
    return _prepare(_write_folder(tmp_path / "photos", _photos()), tmp_path / "from-folder")


def test_folder_is_searched_recursively(folder_store):
    assert folder_store.manifest["source"]["kind"] == "folder"
    assert folder_store.split("train").shape == (6, 16, 16, 3)


def test_zip_gives_the_same_faces_as_the_folder(tmp_path, folder_store):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in _photos().items():
            z.writestr(name, data)
        z.writestr("__MACOSX/._000.png", b"resource fork junk")  # ignored, not a photo
    store = _prepare(archive, tmp_path / "from-zip")
    assert store.manifest["source"]["kind"] == "zip" and store.manifest["skipped"] == []
    assert store.content_hash == folder_store.content_hash


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_tar_gives_the_same_faces_as_the_folder(tmp_path, folder_store, mode, suffix):
    archive = tmp_path / f"photos{suffix}"
    with tarfile.open(archive, mode) as tar:
        for name, data in reversed(list(_photos().items())):  # archive order != name order
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    store = _prepare(archive, tmp_path / "from-tar")
    assert store.manifest["source"]["kind"] == "tar"
    assert store.content_hash == folder_store.content_hash


@pytest.mark.parametrize("partition_file, as_zip", [("list_eval_partition.txt", False), ("list_eval_partition.csv", True)])
def test_celeba_layout_keeps_its_train_val_test_split(tmp_path, partition_file, as_zip):
    photos = list(_photos(7).values())
    files = {f"img_align_celeba/{i + 1:06d}.png": data for i, data in enumerate(photos)}
    # 3 train, 2 val, 1 test; the 7th image is not listed and must be reported.
    rows = [(f"{i + 1:06d}.png", split) for i, split in enumerate("000112")]
    if partition_file.endswith(".csv"):
        files[partition_file] = ("image_id,partition\n" + "".join(f"{n},{s}\n" for n, s in rows)).encode()
    else:
        files[partition_file] = "".join(f"{n} {s}\n" for n, s in rows).encode()
    files["list_attr_celeba.txt"] = b"attributes are not photos\n"
    src = _write_folder(tmp_path / "celeba", files)
    if as_zip:  # the Kaggle download: everything inside one folder of a zip
        src = tmp_path / "celeba.zip"
        with zipfile.ZipFile(src, "w") as z:
            for name, data in files.items():
                z.writestr(f"celeba/{name}", data)
    store = _prepare(src, tmp_path / "store", holdout=1)

    assert store.manifest["source"]["kind"] == ("celeba-zip" if as_zip else "celeba-folder")
    assert store.manifest["splits"] == {"train": 2, "holdout": 1, "val": 2, "test": 1}
    unlisted = ("celeba/" if as_zip else "") + "img_align_celeba/000007.png"
    assert store.manifest["skipped"] == [{"file": unlisted, "reason": "not listed in list_eval_partition"}]


def test_hf_dataset_saved_to_disk(tmp_path, folder_store, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = _write_folder(tmp_path / "photos", _photos())
    names = sorted(_photos())
    ds = datasets.Dataset.from_dict({"image": [str(folder / n) for n in names], "label": list(range(6))})
    ds = ds.cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 1])}).save_to_disk(tmp_path / "saved")

    store = _prepare(f"hf:{tmp_path / 'saved'}", tmp_path / "from-hf")
    assert store.manifest["source"]["kind"] == "hf" and store.manifest["source"]["split"] == "train"
    assert store.content_hash == folder_store.content_hash  # same photos in the same order
    test_split = _prepare(f"hf:{tmp_path / 'saved'}:test", tmp_path / "from-hf-test")
    assert len(test_split) == 2
    with pytest.raises(FacegenError, match="splits train, test"):
        _prepare(f"hf:{tmp_path / 'saved'}:nope", tmp_path / "never")


def test_hf_local_imagefolder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = _write_folder(tmp_path / "imagefolder", {f"train/{n}": d for n, d in _photos().items()})
    store = _prepare(f"hf:{folder}", tmp_path / "store")
    assert store.split("train").shape == (6, 16, 16, 3)


def test_missing_and_empty_sources_are_user_errors(tmp_path):
    with pytest.raises(FacegenError, match="no such folder"):
        _prepare(tmp_path / "nowhere", tmp_path / "store")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacegenError, match="holds no files"):
        _prepare(tmp_path / "empty", tmp_path / "store")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FacegenError, match="not a folder, .zip or .tar"):
        _prepare(tmp_path / "notes.txt", tmp_path / "store")
    _write_folder(tmp_path / "junk", {"a.txt": b"x", "b.txt": b""})
    with pytest.raises(FacegenError, match="no usable face"):
        _prepare(tmp_path / "junk", tmp_path / "store")
    assert not (tmp_path / "store").exists()
