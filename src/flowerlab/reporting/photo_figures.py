"""The report's photo figures: a gallery of validation photos with their predictions, and the data.

Inputs: `predictions` (results/evaluation/{arch}/{replicate}/predictions.csv as a DataFrame), the validation
TFRecords (read back by the training pipeline's reader), the manifest and the inventory summary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from flowerlab.errors import DataError
from flowerlab.reporting.plotting import new_figure, require_columns, style

WRONG = "#c0392b"  # misclassified photos


RIGHT = "#1e8449"



def select_gallery(
    predictions: pd.DataFrame, count: int = 24, *, seed: int = 0, wrong_fraction: float = 0.5
) -> pd.DataFrame:
    """A reproducible sample of `count` predictions: up to `wrong_fraction` of them misclassified
    (the interesting ones), the rest correct, ordered by true class then id."""
    require_columns(predictions, ["id", "true_class", "predicted_class"], "predictions table")
    wrong = predictions[predictions["true_class"] != predictions["predicted_class"]]
    right = predictions[predictions["true_class"] == predictions["predicted_class"]]
    count = min(count, len(predictions))
    wrong_count = min(len(wrong), round(count * wrong_fraction))
    right_count = min(len(right), count - wrong_count)
    wrong_count = min(len(wrong), count - right_count)  # fill up with mistakes if few are right
    sample = pd.concat(
        [wrong.sample(wrong_count, random_state=seed), right.sample(right_count, random_state=seed)]
    )
    return sample.sort_values(["true_class", "id"]).reset_index(drop=True)


def read_record_images(
    files: Sequence[str | os.PathLike[str]], ids: Sequence[str], *, image_size: int, num_classes: int
) -> dict[str, np.ndarray]:
    """The images (uint8 HxWx3) of the records with these ids, as the models saw them.

    Read by `flowerlab.data.pipeline.make_dataset` (the one reader of the records; imports
    TensorFlow). Its [0, 1] floats are the JPEG's bytes divided by 255, so rounding x 255 gives
    them back exactly. Ids not found are absent from the result.
    """
    from flowerlab.data.pipeline import make_dataset

    wanted = set(ids)
    found: dict[str, np.ndarray] = {}
    dataset = make_dataset([os.fspath(path) for path in files], image_size=image_size, num_classes=num_classes,
                           batch_size=256, training=False, cache=False, deterministic=True, keys=True)
    for images, _, keys in dataset:
        for record_id, image in zip(keys["id"].numpy(), images.numpy(), strict=True):
            key = record_id.decode("utf-8")
            if key in wanted:
                found[key] = np.round(image * 255.0).astype(np.uint8)
        if len(found) == len(wanted):
            break
    return found


def prediction_gallery(
    sample: pd.DataFrame, images: Mapping[str, np.ndarray], *, arch: str = "", columns: int = 6
) -> Figure:
    """Validation photos with their true and predicted class; misclassified ones framed and
    titled in red. `sample` has id, true_class, predicted_class (and prob_<class> columns)."""
    require_columns(sample, ["id", "true_class", "predicted_class"], "gallery sample")
    shown = sample[sample["id"].isin(images.keys())]
    if shown.empty:
        raise DataError("none of the gallery's photos was found in the validation TFRecords")
    columns = min(columns, len(shown))
    rows = math.ceil(len(shown) / columns)
    with style(), sns.axes_style("white"):
        figure, axes = new_figure(rows, columns, width=1.9 * columns, height=2.25 * rows + 0.6)
        for ax in axes.flat:
            ax.set_axis_off()
        for index, (_, row) in enumerate(shown.iterrows()):
            ax = axes[index // columns, index % columns]
            ax.set_axis_on()
            ax.imshow(images[row["id"]])
            ax.set_xticks([])
            ax.set_yticks([])
            correct = row["true_class"] == row["predicted_class"]
            probability = row.get(f"prob_{row['predicted_class']}")
            confidence = (
                f" {float(probability):.0%}" if probability is not None and pd.notna(probability) else ""
            )
            title = f"true: {row['true_class']}\npred: {row['predicted_class']}{confidence}"
            ax.set_title(title if correct else f"✗ {title}", fontsize=8, color=RIGHT if correct else WRONG)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(RIGHT if correct else WRONG)
                spine.set_linewidth(1 if correct else 3)
        wrong = int((shown["true_class"] != shown["predicted_class"]).sum())
        name = f"{arch}: " if arch else ""
        figure.suptitle(f"{name}{len(shown)} validation photos, {wrong} misclassified (red, ✗)")
    return figure


def data_overview(manifest: Mapping[str, Any], inventory: Mapping[str, Any]) -> Figure:
    """Photos per class in each split (manifest.json) and the files the inventory skipped, by
    reason (inventory.json)."""
    classes = list(manifest.get("classes", []))
    splits = manifest.get("splits", {})
    if not classes or not splits:
        raise DataError("manifest has no classes or splits to draw")
    counts = pd.DataFrame(
        [
            {"class": name, "split": split, "photos": int(splits[split].get("per_class", {}).get(name, 0))}
            for split in splits
            for name in classes
        ]
    )
    # inventory.json lists every reason, most with 0 files: only the reasons that skipped a file are drawn.
    skipped = {reason: int(n) for reason, n in (inventory.get("skipped_by_reason") or {}).items() if n}
    with style():
        figure, axes = new_figure(1, 2, width=11, height=4.2, gridspec_kw={"width_ratios": [3, 2]})
        left, right = axes[0]
        sns.barplot(data=counts, x="class", y="photos", hue="split", ax=left, palette="muted")
        for container in left.containers:
            left.bar_label(container, fontsize=8)
        left.set_ylim(0, max(1, counts["photos"].max()) * 1.25)  # headroom for the labels and legend
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        sns.move_legend(left, "upper right", ncols=len(splits), title=None, fontsize=8)
        totals = ", ".join(f"{split} {int(splits[split].get('records', 0)):,}" for split in splits)
        left.set_title(f"Photos per class and split ({totals})")
        left.set_xlabel("")
        left.tick_params(axis="x", labelrotation=20)
        if skipped:
            reasons = sorted(skipped, key=lambda reason: -skipped[reason])
            right.barh(reasons, [skipped[r] for r in reasons], color=WRONG)
            for position, reason in enumerate(reasons):
                right.text(skipped[reason], position, f" {skipped[reason]}", va="center", fontsize=8)
            right.invert_yaxis()
            right.set_xlim(0, max(skipped.values()) * 1.25)
            right.xaxis.set_major_locator(MaxNLocator(integer=True))
            right.set_xlabel("files")
        else:
            right.text(0.5, 0.5, "no file skipped", ha="center", va="center", transform=right.transAxes)
            right.set_xticks([])
            right.set_yticks([])
        found, kept = inventory.get("files_found"), inventory.get("kept")
        right.set_title(f"Skipped by the inventory ({sum(skipped.values())} of {found} files; {kept} kept)")
    return figure

