"""One photo -> one square training image: orient, convert to RGB, fill-resize, centre-crop, JPEG.

This is the course's notebook-03 preprocessing (resize keeping the aspect ratio so the image
*fills* the square, bilinear, centre crop, JPEG at quality 95 with optimised Huffman tables and
no chroma subsampling), done with Pillow instead of TensorFlow so that worker processes stay
light and the result is byte-identical across runs and worker counts. Two deliberate
differences from the course, both for correctness of odd inputs:

- EXIF orientation is applied (`ImageOps.exif_transpose`): a phone photo stored sideways with
  an orientation tag is shown upright by every viewer, so its label describes the upright view.
- Any pixel mode becomes RGB correctly: CMYK JPEGs, grayscale, palette images, 16-bit PNGs
  (scaled 65535 -> 255, not clipped), and transparent images composited on white.

Pillow's bilinear filter widens its support when shrinking (it anti-aliases), while the
course's `tf.image.resize(..., "bilinear")` samples without anti-aliasing; the images are
therefore slightly smoother than the course's, with less aliasing.

This module does not import TensorFlow.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from typing import IO

import numpy as np
from PIL import Image, ImageOps

EXIF_ORIENTATION_TAG = 0x0112
# Orientations 5-8 rotate by 90 degrees: the displayed width is the stored height.
ORIENTATIONS_SWAPPING_AXES = frozenset({5, 6, 7, 8})
TRANSPARENT_BACKGROUND = (255, 255, 255)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

ImageSource = str | os.PathLike[str] | bytes | IO[bytes]


def open_image(source: ImageSource) -> Image.Image:
    """Open (lazily: header only) a photo from a path, its bytes, or a binary file object.

    Pillow's own decompression-bomb limit is lifted here: callers check sizes themselves
    against the study's `max_pixels` (the inventory does, before anything is decoded). Pillow
    keeps that limit in a module global, so it is lifted for the duration of this call only;
    flowerlab opens images from worker processes, never from concurrent threads.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8); 1 (as stored) when absent or invalid."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation is applied."""
    width, height = img.size
    if exif_orientation(img) in ORIENTATIONS_SWAPPING_AXES:
        return height, width
    return width, height


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, faithfully.

    - 16-bit grayscale (`I;16*`) and 32-bit integer (`I`, as some PNG/TIFF readers return) are
      scaled from 0-65535 to 0-255; `convert("RGB")` would clip them to white.
    - Float images (`F`) are taken as 0-255 and clipped.
    - Transparency (RGBA, LA, PA, palette with a transparent colour) is composited on white,
      the usual page colour, rather than dropped (which exposes arbitrary hidden pixels).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img, dtype=np.float64)
        scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if mode == "F":
        values = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(values).convert("RGB")
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, TRANSPARENT_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def fill_crop_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The centred source rectangle that, scaled to size x size, fills the square.

    Equivalent to "resize keeping the aspect ratio so that the shorter side becomes `size`,
    then crop the centre size x size": the box is the largest centred square of the source.
    Float coordinates keep the centre exact for odd differences.
    """
    side = min(width, height)
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    return (left, top, left + side, top + side)


def draft_request(width: int, height: int, size: int) -> tuple[int, int]:
    """The smallest decoded size that still covers the fill-resized image.

    Pillow's JPEG `draft` decodes at 1/2, 1/4 or 1/8 scale (in the DCT, far cheaper than a
    full decode followed by a resize) only while the result stays at least this big, so the
    later bilinear resize never upscales: image quality is kept, the work is cut.
    """
    scale = size / min(width, height)
    return (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))


def fill_resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Orient, convert to RGB, fill-resize (bilinear) and centre-crop `img` to size x size.

    `img` may be freshly opened (not yet decoded): JPEGs at least twice the needed size are
    then decoded at reduced scale with `draft`. The result is a new RGB image.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    width, height = oriented_size(img)
    if img.format == "JPEG" and img.tile:  # tile is emptied once decoded
        # `draft` works in stored (unrotated) axes: ask for the stored-axis version of the need.
        need_w, need_h = draft_request(width, height, size)
        if exif_orientation(img) in ORIENTATIONS_SWAPPING_AXES:
            need_w, need_h = need_h, need_w
        img.draft(None, (need_w, need_h))
    img.load()
    if exif_orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    rgb = to_rgb(img)
    box = fill_crop_box(rgb.width, rgb.height, size)
    return rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """JPEG bytes as the course wrote them: optimised Huffman tables, no chroma subsampling.

    No EXIF or other metadata is copied, so the bytes depend only on the pixels and `quality`.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1-100, got {quality}")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality, optimize=True, subsampling=0)
    return out.getvalue()


def prepare_photo(source: ImageSource, size: int, quality: int) -> bytes:
    """The whole chain for one photo: open, orient, RGB, fill-resize-crop, encode as JPEG."""
    with open_image(source) as img:
        square = fill_resize_crop(img, size)
    return encode_jpeg(square, quality)
