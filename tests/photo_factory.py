"""Small images generated on the fly for the data-stage tests (no binary fixtures in the repo)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED, GREEN, BLUE, YELLOW = (230, 20, 20), (20, 200, 20), (20, 20, 230), (230, 220, 20)


def noise_image(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random image: every seed gives different pixels, hence a different file and sha256."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "CMYK": 4, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0, **options: object) -> bytes:
    return encode(noise_image(width, height, seed), "JPEG", quality=90, **options)


def write_jpeg(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    return write(path, jpeg_bytes(width, height, seed))


def bands_image(width: int, height: int, colours: list[tuple[int, int, int]], vertical: bool = True) -> Image.Image:
    """Equal bands of `colours`, left to right (vertical bands) or top to bottom."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    count = len(colours)
    for index, colour in enumerate(colours):
        if vertical:
            pixels[:, index * width // count : (index + 1) * width // count] = colour
        else:
            pixels[index * height // count : (index + 1) * height // count, :] = colour
    return Image.fromarray(pixels)


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def png_16bit_gray(width: int = 32, height: int = 24, value: int = 65535) -> bytes:
    pixels = np.full((height, width), value, dtype=np.uint16)
    return encode(Image.fromarray(pixels), "PNG")


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def photo_tree(root: Path, per_class: dict[str, int], width: int = 64, height: int = 48, seed: int = 0) -> dict[str, list[Path]]:
    """ROOT/<class>/<class>_<i>.jpg with distinct random JPEGs; returns the paths per class."""
    paths: dict[str, list[Path]] = {}
    for class_index, (name, count) in enumerate(sorted(per_class.items())):
        paths[name] = [
            write_jpeg(root / name / f"{name}_{i:03d}.jpg", width, height, seed=seed * 100_003 + class_index * 1000 + i)
            for i in range(count)
        ]
    return paths
