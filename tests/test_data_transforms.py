"""resize and the square crops: geometry, antialiasing, the too-small rule."""

import numpy as np
import pytest

from facegen.data.transforms import Skip, crop_celeba, crop_center, resize


def _rows_marked(h: int, w: int) -> np.ndarray:
    """An image whose red channel is the row number and green channel the column number."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.arange(h)[:, None]
    img[:, :, 1] = np.arange(w)[None, :]
    return img


@pytest.mark.parametrize("size, expected", [(16, (16, 16, 3)), ((299, 299), (299, 299, 3)), ((20, 30), (20, 30, 3))])
def test_resize_any_size_up_or_down(size, expected):
    out = resize(np.full((64, 48, 3), 90, np.uint8), size)
    assert out.shape == expected and out.dtype == np.uint8
    assert np.all(out == 90)  # a flat image stays flat, no ringing


def test_resize_antialiases_when_shrinking():
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    small = resize(np.repeat(checker[:, :, None], 3, 2), 8)
    # Antialiased: the 1-pixel checkerboard averages to mid grey instead of aliasing to 0/255.
    assert np.abs(small.astype(int) - 127.5).max() < 10


def test_resize_same_size_is_an_independent_copy():
    img = _rows_marked(32, 32)
    out = resize(img, 32)
    assert np.array_equal(out, img) and out is not img


def test_celeba_crop_cuts_20_of_218_rows_top_and_bottom():
    # At full size 178x218 the crop is rows 20..197: resized to 178 it is the crop itself.
    img = _rows_marked(218, 178)
    out = crop_celeba(img, 178)
    assert out.shape == (178, 178, 3)
    assert out[0, 0, 0] == 20 and out[-1, 0, 0] == 197
    # At half size (89x109, the shared celeba-10k) it cuts 10 rows: rows 10..98.
    half = crop_celeba(_rows_marked(109, 89), 89)
    assert half[0, 0, 0] == 10 and half[-1, 0, 0] == 98


def test_center_crop_takes_the_middle_square():
    out = crop_center(_rows_marked(40, 100), 40)
    assert out.shape == (40, 40, 3)
    assert out[0, 0, 1] == 30 and out[0, -1, 1] == 69  # columns 30..69 of 100


def test_too_small_is_skipped_unless_upscaling_is_allowed():
    img = _rows_marked(50, 40)
    with pytest.raises(Skip, match="too small.*--allow-upscale"):
        crop_center(img, 64)
    assert crop_center(img, 64, allow_upscale=True).shape == (64, 64, 3)
