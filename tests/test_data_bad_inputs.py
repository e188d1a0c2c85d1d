"""Every kind of awkward or broken photo: converted correctly, or skipped with its reason."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facegen.data.decode import decode_rgb
from facegen.data.prepare import prepare
from facegen.data.transforms import Skip


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(seed: int, side: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_alpha_is_composited_on_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (200, 0, 0, 255)  # opaque red left, fully transparent (black) right
    out = decode_rgb(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out.shape == (40, 40, 3)
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[0, -1]) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey16 = np.full((40, 40), 32896, np.uint16)  # mid grey in 16 bits = 128 * 257
    out = decode_rgb(_encode(Image.fromarray(grey16), "PNG"))
    assert out.dtype == np.uint8 and np.all(out == 128)


def test_grayscale_palette_and_cmyk_become_rgb():
    grey = decode_rgb(_encode(Image.new("L", (40, 40), 77), "PNG"))
    assert grey.shape == (40, 40, 3) and np.all(grey == 77)
    palette = decode_rgb(_encode(Image.new("RGB", (40, 40), (0, 0, 255)).convert("P"), "PNG"))
    assert tuple(palette[5, 5]) == (0, 0, 255)
    cmyk = decode_rgb(_encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95))
    assert cmyk[5, 5, 0] > 230 and cmyk[5, 5, 1] < 25 and cmyk[5, 5, 2] < 25  # red


def test_exif_orientation_is_honoured():
    img = np.zeros((40, 60, 3), np.uint8)  # stored landscape: red left half, blue right half
    img[:, :30] = (255, 0, 0)
    img[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = decode_rgb(_encode(Image.fromarray(img), "JPEG", exif=exif, quality=95))
    assert out.shape == (60, 40, 3)  # upright: portrait
    assert out[5, 20, 0] > 200 and out[-5, 20, 2] > 200  # the left half is now on top


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"name,age\nada,36\n", "not an image"),
        (_encode(_noise(0), "JPEG")[:300], "corrupt or truncated"),
        (_encode(_noise(0), "JPEG")[:20] + bytes(500), "corrupt image"),
    ],
    ids=["zero-byte", "non-image", "truncated-jpeg", "corrupt-jpeg"],
)
def test_unreadable_files_raise_skip(data, reason):
    with pytest.raises(Skip, match=reason):
        decode_rgb(data)


def _mixed_folder(root: Path) -> dict[str, str]:
    """Good photos in every awkward format plus every bad kind; returns {bad file: reason}."""
    good = {
        "a-good/rgb.jpg": _encode(_noise(1), "JPEG", quality=95),
        "a-good/alpha.png": _encode(_noise(2).convert("RGBA"), "PNG"),
        "a-good/grey.png": _encode(_noise(3).convert("L"), "PNG"),
        "a-good/cmyk.jpg": _encode(_noise(4).convert("CMYK"), "JPEG"),
        "a-good/deep16.png": _encode(Image.fromarray(np.full((48, 48), 40000, np.uint16)), "PNG"),
        "a-good/palette.gif": _encode(_noise(5).convert("P"), "GIF"),
        "a-good/nested/deeper/rgb.bmp": _encode(_noise(6), "BMP"),
    }
    bad = {
        "bad/empty.jpg": (b"", "empty file"),
        "bad/notes.txt": (b"not a photo at all", "not an image"),
        "bad/truncated.jpg": (_encode(_noise(7), "JPEG")[:200], "corrupt or truncated"),
        "bad/corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(400), "corrupt image"),
        "bad/tiny.png": (_encode(_noise(8, side=16), "PNG"), "too small"),
        "copies/same-as-rgb.bmp": (_encode(_noise(6), "BMP"), "exact duplicate of a-good/nested/deeper/rgb.bmp"),
        "copies/same-pixels.png": (_encode(_noise(6), "PNG"), "exact duplicate of a-good/nested/deeper/rgb.bmp"),
    }
    for name, data in {**good, **{k: v[0] for k, v in bad.items()}}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return {name: reason for name, (_, reason) in bad.items()}


def test_a_folder_of_good_and_bad_files_keeps_the_good_and_lists_the_bad(tmp_path):
    expected_skips = _mixed_folder(tmp_path / "photos")
    store = prepare(tmp_path / "photos", tmp_path / "store", size=32, crop="center", workers=1, progress=False)

    assert len(store) == 7 and store.split("train").shape == (7, 32, 32, 3)
    skipped = {s["file"]: s["reason"] for s in store.manifest["skipped"]}
    assert set(skipped) == set(expected_skips)
    for name, reason in expected_skips.items():
        assert reason in skipped[name], (name, skipped[name])
    assert store.manifest["counts"] == {"files": 14, "faces": 7, "skipped": 7, "duplicates": 2}


def test_allow_upscale_keeps_small_photos(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "tiny.png").write_bytes(_encode(_noise(8, side=16), "PNG"))
    store = prepare(tmp_path / "photos", tmp_path / "store", size=32, crop="center", allow_upscale=True, workers=1, progress=False)
    assert store.split("train").shape == (1, 32, 32, 3) and store.manifest["skipped"] == []


def test_big_jpegs_decode_at_reduced_scale_to_the_same_face():
    from facegen.data.transforms import crop_center

    y, x = np.mgrid[0:1200, 0:1600]
    smooth = np.stack([x / 8 % 256, y / 6 % 256, (x + y) / 15 % 256], -1).astype(np.uint8)
    data = _encode(Image.fromarray(smooth), "JPEG", quality=92)
    full, reduced = decode_rgb(data), decode_rgb(data, min_side=96)
    assert full.shape == (1200, 1600, 3) and reduced.shape == (150, 200, 3)  # 1/8 scale
    diff = np.abs(crop_center(full, 32).astype(int) - crop_center(reduced, 32))
    assert diff.mean() < 1 and diff.max() <= 3
