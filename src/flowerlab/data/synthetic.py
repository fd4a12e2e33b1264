"""A small, learnable, offline stand-in for flower_photos (`flowerlab synth`).

Each class is a colour *and* a shape or texture (red circles, green squares, blue triangles,
yellow stripes, ...), drawn 1-3 times at random places and scales on a noisy, low-saturation
background, with per-image colour jitter and pixel noise, saved as JPEGs of varied sizes and
aspect ratios (120-400 px per side). A small convnet separates the classes well above chance in
a few epochs at 64-192 px, which is what the offline pipeline and its tests need: an end-to-end
run that finishes in minutes and whose accuracy means something.

The set is a pure function of (classes, per_class, seed): image i of class c comes from its own
random generator seeded with (seed, c, i), so the same settings give byte-identical files on
every machine with the same Pillow/libjpeg, and adding classes or images never changes the
existing ones. The folder is written to a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from flowerlab import schema
from flowerlab.console import configure_logging, positive_int, progress, run_command
from flowerlab.errors import ConfigError
from flowerlab.filesystem import cleanup_on_error, remove_stale_temporaries, replace_directory, temporary_dir_beside

logger = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE = 120, 400
JPEG_QUALITY = 90
NOISE_SIGMA = 10.0
COLOUR_JITTER = 25


@dataclass(frozen=True)
class ClassStyle:
    name: str
    colour: tuple[int, int, int]
    motif: str


# Ten distinct classes; the first N are used. Colours and motifs both differ, so either cue
# alone separates the classes (a model may learn either; both are robust to the noise).
STYLES: tuple[ClassStyle, ...] = (
    ClassStyle("red_circles", (215, 40, 40), "circle"),
    ClassStyle("green_squares", (40, 165, 60), "square"),
    ClassStyle("blue_triangles", (45, 80, 215), "triangle"),
    ClassStyle("yellow_stripes", (230, 205, 40), "stripes"),
    ClassStyle("purple_dots", (145, 55, 185), "dots"),
    ClassStyle("orange_rings", (240, 135, 25), "ring"),
    ClassStyle("cyan_crosses", (35, 200, 210), "cross"),
    ClassStyle("pink_diamonds", (240, 110, 180), "diamond"),
    ClassStyle("brown_checks", (125, 75, 35), "checks"),
    ClassStyle("white_zigzags", (245, 245, 245), "zigzag"),
)
MAX_CLASSES = len(STYLES)


def class_styles(classes: int) -> tuple[ClassStyle, ...]:
    if not 2 <= classes <= MAX_CLASSES:
        raise ConfigError(f"synthetic classes must be 2-{MAX_CLASSES}, got {classes}")
    return STYLES[:classes]


def class_names(classes: int) -> list[str]:
    """The class folder names for `classes` classes (also their alphabetical order)."""
    return sorted(style.name for style in class_styles(classes))


def _jittered(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    shifted = np.clip(np.asarray(colour) + rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3), 0, 255)
    return tuple(int(v) for v in shifted)


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A muted (low-saturation) vertical gradient: colour is the classes' cue, not the ground's."""
    grey = rng.uniform(70, 190)
    tint = rng.uniform(-18, 18, 3)
    top, bottom = grey + tint, grey + tint + rng.uniform(-40, 40)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = top + (bottom - top) * ramp
    return Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).clip(0, 255).astype(np.uint8))


def _draw_motif(draw: ImageDraw.ImageDraw, motif: str, box: tuple[float, float, float, float],
                colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    """One instance of the class's shape or texture inside `box` (left, top, right, bottom)."""
    left, top, right, bottom = box
    cx, cy, r = (left + right) / 2, (top + bottom) / 2, (right - left) / 2
    line = max(2, int(r / 5))
    if motif == "circle":
        draw.ellipse(box, fill=colour)
    elif motif == "square":
        angle = rng.uniform(0, math.pi / 2)
        corners = [(cx + r * math.cos(angle + k * math.pi / 2), cy + r * math.sin(angle + k * math.pi / 2)) for k in range(4)]
        draw.polygon(corners, fill=colour)
    elif motif == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
        corners = [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
        draw.polygon(corners, fill=colour)
    elif motif == "diamond":
        draw.polygon([(cx, top), (right, cy), (cx, bottom), (left, cy)], fill=colour)
    elif motif == "ring":
        draw.ellipse(box, outline=colour, width=line)
    elif motif == "cross":
        draw.line([(left, cy), (right, cy)], fill=colour, width=line)
        draw.line([(cx, top), (cx, bottom)], fill=colour, width=line)
    elif motif == "stripes":
        step = max(6, int(r / 3))
        for x in range(int(left), int(right), step):
            draw.rectangle([x, top, x + step // 2, bottom], fill=colour)
    elif motif == "dots":
        step = max(8, int(r / 3))
        for y in range(int(top), int(bottom), step):
            for x in range(int(left), int(right), step):
                draw.ellipse([x, y, x + step / 2, y + step / 2], fill=colour)
    elif motif == "checks":
        step = max(6, int(r / 3))
        for j, y in enumerate(range(int(top), int(bottom), step)):
            for i, x in enumerate(range(int(left), int(right), step)):
                if (i + j) % 2 == 0:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=colour)
    elif motif == "zigzag":
        step = max(6, int(r / 3))
        points = [(x, top + (bottom - top) * (0.25 if k % 2 else 0.75)) for k, x in enumerate(range(int(left), int(right) + 1, step))]
        draw.line(points, fill=colour, width=line, joint="curve")
    else:
        raise ValueError(f"unknown motif {motif!r}")


def make_image(style: ClassStyle, rng: np.random.Generator) -> Image.Image:
    """One labelled picture of `style`: varied size and aspect, 1-3 motifs, noise."""
    width, height = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    image = _background(width, height, rng)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    # Motifs stay inside the central square, the part that survives the pipeline's centre
    # crop, so that no training image loses its label's cue.
    left, top = (width - short) / 2, (height - short) / 2
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(0.18, 0.38) * short
        cx = left + rng.uniform(radius, short - radius)
        cy = top + rng.uniform(radius, short - radius)
        _draw_motif(draw, style.motif, (cx - radius, cy - radius, cx + radius, cy + radius),
                    _jittered(style.colour, rng), rng)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, NOISE_SIGMA, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def image_rng(seed: int, class_index: int, image_index: int) -> np.random.Generator:
    """The generator of one image: independent of how many classes or images are made."""
    return np.random.default_rng([seed & 0xFFFFFFFF, class_index, image_index])


def jpeg_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def synthesize(out: str | os.PathLike[str], classes: int = 5, per_class: int = 40, seed: int = 0) -> dict[str, int]:
    """Write the synthetic set to `out` (replacing it) as out/<class>/<class>_NNNN.jpg.

    Returns the number of images per class. `out` appears only once complete.
    """
    styles = class_styles(classes)
    if per_class < 1:
        raise ConfigError(f"synthetic images per class must be at least 1, got {per_class}")
    out = Path(out)
    remove_stale_temporaries(out)
    staging = temporary_dir_beside(out)
    with cleanup_on_error(staging), progress(classes * per_class, "synthesize", "img") as bar:
        for class_index, style in enumerate(styles):
            folder = staging / style.name
            folder.mkdir()
            for image_index in range(per_class):
                picture = make_image(style, image_rng(seed, class_index, image_index))
                (folder / f"{style.name}_{image_index:04d}.jpg").write_bytes(jpeg_bytes(picture))
                bar.update()
        replace_directory(staging, out)
    logger.info("wrote %d synthetic images (%d classes x %d) to %s", classes * per_class, classes, per_class, out)
    return {style.name: per_class for style in styles}


def cli(argv: list[str]) -> int:
    """`flowerlab synth --out DIR --classes N --per-class M --seed S`."""
    parser = argparse.ArgumentParser(
        prog=f"flowerlab {argv[0]}", description="Generate a small, learnable labelled image set."
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to create (replaced if present)")
    parser.add_argument("--classes", type=positive_int, default=schema.default("synthetic", "classes"),
                        help=f"number of classes, 2-{MAX_CLASSES}")
    parser.add_argument("--per-class", type=positive_int, default=schema.default("synthetic", "images_per_class"),
                        help="images per class")
    parser.add_argument("--seed", type=int, default=schema.default("synthetic", "seed"),
                        help="the set is a pure function of this seed")
    args = parser.parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: synthesize(args.out, args.classes, args.per_class, args.seed))
