"""`facegen data prepare` and `facegen data info` from the command line."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facegen.cli import app


def facegen(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facegen.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_prepare_then_info_writes_store_and_contact_sheet(celeba_dir, tmp_path):
    done = facegen("data", "prepare", celeba_dir, "--out", tmp_path / "s", "--size", "32", "--limit", "40", "--holdout", "8")
    assert done.returncode == 0, done.stderr
    assert "32 train + 8 holdout faces at 32x32" in done.stderr
    info = facegen("data", "info", tmp_path / "s", "--faces", "16", "--eyes", "0")  # eye check: tests/test_align.py
    assert info.returncode == 0, info.stderr
    assert "train 32, holdout 8" in info.stdout
    sheet = np.asarray(Image.open(tmp_path / "s" / "contact-sheet.png"))
    assert sheet.shape == (4 * 34 + 2, 4 * 34 + 2, 3)  # 4x4 faces of 32 px, 2 px gaps


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "prepare", "{tmp}/nowhere", "--out", "{tmp}/s", "--size", "32"], "no such folder"),
        (["data", "prepare", "{celeba}", "--out", "{tmp}/s", "--size", "32", "--zoom", "1.2"], "only apply to --crop align"),
        (["data", "info", "{tmp}/nowhere"], "no such face store"),
    ],
    ids=["missing-src", "zoom-without-align", "info-missing-store"],
)
def test_user_errors_exit_2_with_one_line(args, message, celeba_dir, tmp_path):
    done = facegen(*[a.format(tmp=tmp_path, celeba=celeba_dir) for a in args])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_existing_store_exits_2_with_one_line(celeba_store32, celeba_dir):
    done = facegen("data", "prepare", celeba_dir, "--out", celeba_store32.path, "--size", "32")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "already exists; pass --overwrite" in done.stderr


def test_align_options_reach_prepare(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("facegen.data.prepare.prepare", lambda *a, **kw: seen.update(kw))
    args = ["data", "prepare", "x", "--out", tmp_path / "s", "--size", "64", "--crop", "align", "--all-faces", "--zoom", "1.3", "--detector", "haar"]
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert seen["crop"] == "align" and seen["crop_options"] == {"all_faces": True, "zoom": 1.3, "detector": "haar"}


def test_align_crop_hook_gets_the_options(monkeypatch):
    from facegen.data.prepare import crop_faces

    calls = []

    def fake_align(image, size, **options):
        calls.append((image.shape, size, options))
        return [np.zeros((size, size, 3), np.uint8)] * 2

    monkeypatch.setattr("facegen.data.align.crop_align", fake_align)
    faces = crop_faces(np.zeros((90, 80, 3), np.uint8), "align", 32, crop_options={"all_faces": True, "zoom": 0.9})
    assert len(faces) == 2 and calls == [((90, 80, 3), 32, {"all_faces": True, "zoom": 0.9})]


def test_read_only_store_gets_its_sheet_beside_it(celeba_store32, monkeypatch, tmp_path):
    import facegen.data.info as info

    real_access = info.os.access
    monkeypatch.setattr(info.os, "access", lambda p, mode: p != celeba_store32.path and real_access(p, mode))
    assert info.default_sheet_path(celeba_store32.path) == celeba_store32.path.parent / "celeba32-contact-sheet.png"
    written = info.store_info(celeba_store32, sheet=tmp_path / "sheet.png", faces=9)
    assert written == tmp_path / "sheet.png" and Image.open(written).size == (3 * 34 + 2, 3 * 34 + 2)


def test_a_prepare_that_finds_no_face_leaves_no_work_folder(tmp_path, facegen):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.jpg").write_text("not a picture")
    done = facegen("data", "prepare", photos, "--out", tmp_path / "s", "--size", "32", "--workers", "1")
    assert done.returncode == 2 and "no usable face" in done.stderr and "stay in" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no .s.partial, no s


def test_a_holdout_beyond_the_limit_is_refused_before_decoding(celeba_dir, tmp_path, facegen, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr("facegen.data.prepare._run", never)
    done = facegen("data", "prepare", celeba_dir, "--out", tmp_path / "s", "--size", "32", "--limit", "5", "--holdout", "10")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "--holdout 10" in lines[0] and "--limit 5" in lines[0], done.stderr
    assert not list(tmp_path.iterdir())


def test_info_describes_a_limited_store_without_holdout(celeba_dir, tmp_path, facegen):
    from facegen.data.prepare import prepare

    store = prepare(celeba_dir, tmp_path / "s", size=32, limit=6, workers=1, progress=False)
    done = facegen("data", "info", store.path, "--faces", "4", "--eyes", "0")
    text = " ".join(done.stdout.replace("│", " ").split())  # the table's cells, whatever their wrapping
    assert done.returncode == 0 and "the first 6 of its" in text and "(--limit 6)" in text, text
    assert "holdout none: every face is for training" in text and "0 faces chosen" not in text
