"""Photo file bytes -> uint8 RGB (H, W, 3), whatever the file's mode; Skip when unusable.

Every kind of bad input becomes a Skip with a reason, never a crash: empty files,
non-images, corrupt or truncated JPEGs. Unusual modes are converted with care: alpha is
composited on white (its hidden colour is often garbage), 16-bit is scaled (not clipped),
and the EXIF orientation is applied so a phone photo stands upright.
"""

from __future__ import annotations

import io

import numpy as np

from facegen.data.transforms import Skip

# Leading bytes of JPEG, PNG, GIF, BMP, WebP (RIFF) and TIFF: such a file that PIL cannot
# open is a corrupt photo, not some other kind of file.
IMAGE_SIGNATURES = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def decode_rgb(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Decode one photo file to uint8 (H, W, 3), upright.

    With `min_side`, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling) while both sides stay >= min_side: a 12-megapixel photo bound for a 64 px
    face then decodes several times faster, with no visible loss.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise Skip("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if min_side and img.format == "JPEG":
                img.draft(img.mode, (min_side, min_side))
            img.load()  # decodes now: truncated/corrupt data fails here, not later
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except UnidentifiedImageError:
        if data.startswith(IMAGE_SIGNATURES):
            raise Skip("corrupt image (image header, undecodable data)") from None
        raise Skip("not an image (unrecognised file format)") from None
    except Image.DecompressionBombError as e:
        raise Skip(f"image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise Skip(f"corrupt or truncated image ({e})") from None


def to_rgb(img) -> np.ndarray:
    """A decoded PIL image of any mode -> uint8 (H, W, 3)."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey (PNG/TIFF): scale 0..65535 to 0..255; convert("L") would clip at 255.
        grey = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and grey.max() <= 255:
            grey = grey * 257  # a 32-bit container holding 8-bit values
        grey = np.clip(np.round(grey / 257), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        grey = np.clip(np.round(np.asarray(img)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if {"A", "a"} & set(img.getbands()) or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    # RGB, L, 1, P, CMYK (PIL undoes Adobe's inverted CMYK itself), YCbCr, ...
    return np.asarray(img.convert("RGB"))
