"""One photo -> one square JPEG: geometry, orientation, pixel modes, encoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from photo_factory import (
    BLUE,
    GREEN,
    RED,
    YELLOW,
    bands_image,
    encode,
    jpeg_with_orientation,
    png_16bit_gray,
)
from PIL import Image, JpegImagePlugin

from flowerlab.data import images
from flowerlab.data.images import encode_jpeg, fill_crop_box, fill_resize_crop, open_image, prepare_photo, to_rgb


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def pixels_of(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [(400, 200, (100, 0, 300, 200)), (200, 400, (0, 100, 200, 300)), (300, 300, (0, 0, 300, 300)),
     (301, 200, (50.5, 0, 250.5, 200))],
)
def test_fill_crop_box_is_the_largest_centred_square(width, height, box):
    assert fill_crop_box(width, height, 192) == box


def test_landscape_keeps_the_centre_bands():
    # 4 vertical bands of 100 px: the centred 200x200 square holds exactly green and blue.
    square = fill_resize_crop(bands_image(400, 200, [RED, GREEN, BLUE, YELLOW]), 192)
    assert square.size == (192, 192) and square.mode == "RGB"
    px = pixels_of(square)
    assert close_to(px[96, 2], GREEN) and close_to(px[96, 189], BLUE)
    assert close_to(px[0, 40], GREEN) and close_to(px[191, 150], BLUE)
    reds = np.all(np.abs(px.astype(int) - RED) < 60, axis=-1).sum()
    yellows = np.all(np.abs(px.astype(int) - YELLOW) < 60, axis=-1).sum()
    assert reds == 0 and yellows == 0


def test_portrait_keeps_the_centre_bands():
    square = fill_resize_crop(bands_image(200, 400, [RED, GREEN, BLUE, YELLOW], vertical=False), 192)
    px = pixels_of(square)
    assert close_to(px[2, 96], GREEN) and close_to(px[189, 96], BLUE)


def test_tiny_image_is_upscaled_to_fill():
    square = fill_resize_crop(bands_image(30, 20, [RED, GREEN, BLUE]), 192)
    assert square.size == (192, 192)
    px = pixels_of(square)
    # The centred 20x20 square of a 30-wide image spans x 5..25: red|green|blue bands at 0-10-20-30.
    assert close_to(px[96, 0], RED, 80) and close_to(px[96, 96], GREEN) and close_to(px[96, 191], BLUE, 80)


def test_large_jpeg_is_decoded_at_reduced_scale(monkeypatch):
    requests = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        requests.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = encode(bands_image(1600, 800, [RED, GREEN, BLUE, YELLOW]), "JPEG", quality=95)
    img = open_image(data)
    square = fill_resize_crop(img, 192)
    # Needs at least 384x192 to cover the fill-resize: draft may decode at 1/4 (400x200).
    assert requests == [(384, 192)]
    assert img.size == (400, 200)
    px = pixels_of(square)
    assert close_to(px[96, 2], GREEN) and close_to(px[96, 189], BLUE)


def test_exif_orientation_is_applied():
    # Stored 300x200 with red left, blue right; orientation 6 = rotate 90 degrees clockwise
    # to display, so the displayed (200x300) photo is red on top and blue at the bottom.
    data = jpeg_with_orientation(bands_image(300, 200, [RED, BLUE]), 6)
    assert images.oriented_size(open_image(data)) == (200, 300)
    px = pixels_of(fill_resize_crop(open_image(data), 64))
    assert close_to(px[3, 32], RED) and close_to(px[60, 32], BLUE)


def test_exif_orientation_with_reduced_scale_decode():
    data = jpeg_with_orientation(bands_image(1200, 800, [RED, BLUE]), 8)  # rotate 90 counter-clockwise
    px = pixels_of(fill_resize_crop(open_image(data), 96))
    assert close_to(px[3, 48], BLUE) and close_to(px[92, 48], RED)


def test_modes_convert_to_rgb_faithfully():
    cmyk = open_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert cmyk.mode == "CMYK"
    assert close_to(pixels_of(to_rgb(cmyk))[8, 8], (255, 0, 0))

    grey = to_rgb(Image.new("L", (4, 4), 100))
    assert grey.mode == "RGB" and tuple(pixels_of(grey)[0, 0]) == (100, 100, 100)

    sixteen = open_image(png_16bit_gray(value=32896))  # 128 * 257
    assert sixteen.mode.startswith("I")
    assert tuple(pixels_of(to_rgb(sixteen))[0, 0]) == (128, 128, 128)
    assert tuple(pixels_of(to_rgb(open_image(png_16bit_gray(value=65535))))[0, 0]) == (255, 255, 255)

    transparent = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert tuple(pixels_of(to_rgb(transparent))[0, 0]) == (255, 255, 255)
    half = to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 128)))
    assert close_to(pixels_of(half)[0, 0], (127, 127, 127), 2)

    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert tuple(pixels_of(to_rgb(palette))[0, 0]) == (255, 255, 255)


def test_encode_jpeg_like_the_course():
    square = fill_resize_crop(bands_image(400, 200, [RED, GREEN, BLUE, YELLOW]), 64)
    data = encode_jpeg(square, 95)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG" and decoded.size == (64, 64)
    assert JpegImagePlugin.get_sampling(decoded) == 0  # 4:4:4, no chroma subsampling
    assert data == encode_jpeg(square, 95)  # deterministic
    assert len(encode_jpeg(square, 20)) < len(data)
    with pytest.raises(ValueError):
        encode_jpeg(square, 0)


def test_prepare_photo_any_format_gives_the_same_geometry():
    picture = bands_image(160, 80, [RED, GREEN, BLUE, YELLOW])  # centre square: green | blue
    for fmt in ("PNG", "GIF", "WEBP", "BMP", "JPEG"):
        out = Image.open(io.BytesIO(prepare_photo(encode(picture, fmt), 32, 95)))
        assert out.size == (32, 32) and out.mode == "RGB", fmt
        px = np.asarray(out)
        assert close_to(px[16, 1], GREEN, 60) and close_to(px[16, 30], BLUE, 60), fmt


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        fill_resize_crop(Image.new("RGB", (4, 4)), 0)
