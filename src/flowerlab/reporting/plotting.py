"""What every report figure shares: the style, a new figure, colours per architecture, saving.

Figures are built with matplotlib's object-oriented API on the Agg canvas (no pyplot, so no
global figure registry, no display needed, and nothing to close), styled by seaborn inside a
context manager so that importing a figure module changes no global setting.

`save_figure(fig, name, caption, out_dir)` writes `name.png` and `name.svg` atomically and
records the caption in `out_dir/captions.json`, which the landing page reads.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator, PercentFormatter

from flowerlab import filesystem
from flowerlab.errors import DataError
from flowerlab.reporting.captions import record_caption

PNG_DPI = 150


# Colours: one per architecture, stable across figures (same architecture, same colour).
PALETTE = "colorblind"



@contextlib.contextmanager
def style() -> Iterator[None]:
    """seaborn's look for the axes created inside, without touching global rcParams for good."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def _blank_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def new_figure(
    rows: int = 1, columns: int = 1, *, width: float = 7.0, height: float = 4.5, **subplot_kwargs: Any
) -> tuple[Figure, np.ndarray]:
    """A Figure on the Agg canvas and its axes as a 2-D array (always 2-D, even for 1x1)."""
    figure = _blank_figure(width, height)
    return figure, figure.subplots(rows, columns, squeeze=False, **subplot_kwargs)


def new_mosaic(layout: Sequence[Sequence[str]], *, width: float, height: float, **mosaic_kwargs: Any
               ) -> tuple[Figure, dict[str, Any]]:
    """A Figure on the Agg canvas and its named axes, laid out as matplotlib's subplot_mosaic."""
    figure = _blank_figure(width, height)
    return figure, figure.subplot_mosaic(layout, **mosaic_kwargs)


def arch_colours(archs: Sequence[str]) -> dict[str, Any]:
    """One colour per architecture, the same in every figure of a report."""
    colours = sns.color_palette(PALETTE, n_colors=max(len(archs), 1))
    return dict(zip(archs, colours, strict=False))  # the palette has at least len(archs)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks the column(s) {missing}; regenerate it (flowerlab collect)")
    if frame.empty:
        raise DataError(f"{what} has no row: no architecture was evaluated")


def label_points(ax: Any, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str]) -> None:
    """Each point's label above right of it; a label that would overlap one already placed moves up
    a line, so that architectures at nearly the same spot stay readable. Call it after the axes'
    scales and limits are set: it places the labels in screen space."""
    line = 12.0  # points: one label's height at font size 9, with a little air
    placed: list[tuple[float, float, float, float]] = []  # (left, bottom, right, top) in points
    to_points = 72.0 / ax.figure.dpi
    for x, y, label in sorted(zip(xs, ys, labels, strict=True), key=lambda point: (point[1], point[0])):
        px, py = (value * to_points for value in ax.transData.transform((x, y)))
        width = 5.6 * len(label)  # an average character at 9 pt, roughly
        offset = 5.0
        while any(px + 6 < right and left < px + 6 + width and py + offset < top and bottom < py + offset + line
                  for left, bottom, right, top in placed):
            offset += line
        placed.append((px + 6, py + offset, px + 6 + width, py + offset + line))
        ax.annotate(label, (x, y), xytext=(6, offset), textcoords="offset points", fontsize=9)


# Tick values a reader takes in at a glance on a log axis: 1-2-5 in each decade.
ONE_TWO_FIVE = (1.0, 2.0, 5.0)
# Wall times a reader takes in at a glance (seconds): 10 s, 30 s, 1 min, 2 min, 5 min, ... 1 h, 2 h, ...
NICE_SECONDS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 18000, 36000, 72000, 172800)


def log_ticks(low: float, high: float, candidates: Sequence[float] | None = None, most: int = 7) -> list[float]:
    """At most `most` tick values between `low` and `high` for a log axis: from `candidates`, or
    1-2-5 in each decade (only the decades when those are too many). matplotlib's own log
    locator labels minor ticks in scientific notation (2x10^1, 3x10^1) that collide when the axis
    spans less than a decade."""
    if candidates is None:
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        steps = ONE_TWO_FIVE if len(decades) <= 3 else (1.0,)
        candidates = [step * 10.0 ** decade for decade in decades for step in steps]
    inside = [value for value in candidates if low <= value <= high]
    stride = 1
    while len(inside[::stride]) > most:
        stride += 1
    return inside[::stride]


def log_x_axis(ax: Any, low: float, high: float, label: Any, candidates: Sequence[float] | None = None) -> None:
    """The x axis log-scaled from `low` to `high` with only readable, labelled ticks (`label`:
    value -> text)."""
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    axis = ax.xaxis
    axis.set_major_locator(FixedLocator(log_ticks(low, high, candidates)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: label(value)))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def seconds_label(seconds: float) -> str:
    """A tick's wall time: '30 s', '5 min', '2 h'."""
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def percent_axis(ax: Any, values: Sequence[float]) -> None:
    """Accuracy on a percent axis from 0 (or a bit below the lowest point) to 100 %."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = min(finite) if finite else 0.0
    ax.set_ylim(max(0.0, math.floor((low - 0.1) * 10) / 10), 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def save_figure(figure: Figure, name: str, caption: str, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write `name`.png and `name`.svg to `out_dir` atomically and record the caption in
    captions.json ({name: {"title", "caption", "png", "svg"}}); returns the two paths."""
    out_dir = Path(out_dir)
    paths = {"png": out_dir / f"{name}.png", "svg": out_dir / f"{name}.svg"}
    for kind, path in paths.items():
        buffer = io.BytesIO()
        # SVG text stays text (searchable, scalable); metadata=None keeps the files reproducible.
        options = (
            {"dpi": PNG_DPI, "metadata": {"Software": None}}
            if kind == "png"
            else {"metadata": {"Date": None}}
        )
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "flowerlab"}):
            figure.savefig(buffer, format=kind, bbox_inches="tight", **options)
        filesystem.write_bytes(path, buffer.getvalue())
    record_caption(out_dir, name, caption)
    return paths

