"""Quality of a model's validation predictions, as plain NumPy (no TensorFlow).

Accuracy, per-class precision/recall/F1, their macro averages, the confusion matrix and the
categorical cross-entropy, from true class indices and predicted probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Keras clips probabilities to [EPSILON, 1 - EPSILON] before the log in its cross-entropy.
KERAS_EPSILON = 1e-7



def confusion_matrix(
    true: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Counts of (true class, predicted class): rows are true classes, columns predictions."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError(
            f"true and predicted must be 1-D of the same length, got {true.shape} and {predicted.shape}"
        )
    for name, values in (("true", true), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} class indices must be in [0, {num_classes}), got {values.min()}..{values.max()}"
            )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def accuracy_from_confusion(matrix: np.ndarray) -> float:
    """Fraction of correct predictions; 0.0 for an empty matrix."""
    total = int(matrix.sum())
    return float(np.trace(matrix) / total) if total else 0.0


def per_class_metrics(
    matrix: np.ndarray, classes: Sequence[str]
) -> tuple[dict[str, dict[str, float | int]], list[str]]:
    """Precision, recall, F1 and support per class, and notes on every undefined value.

    A class the model never predicted has no defined precision (0/0); one absent from the
    validation split has no defined recall. Both are reported as 0.0 (scikit-learn's
    `zero_division=0` convention) and named in the notes, instead of NaN.
    """
    if matrix.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {len(classes)} classes")
    true_positives = np.diag(matrix).astype(float)
    predicted_counts = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1)
    notes: list[str] = []
    metrics: dict[str, dict[str, float | int]] = {}
    for index, name in enumerate(classes):
        if predicted_counts[index] == 0:
            precision = 0.0
            notes.append(f"precision of {name!r} set to 0: the model never predicted this class")
        else:
            precision = true_positives[index] / predicted_counts[index]
        if support[index] == 0:
            recall = 0.0
            notes.append(f"recall of {name!r} set to 0: no validation image of this class")
        else:
            recall = true_positives[index] / support[index]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        metrics[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support[index]),
        }
    return metrics, notes


def macro_average(per_class: dict[str, dict[str, float | int]]) -> dict[str, float]:
    """Unweighted mean of precision, recall and F1 over the classes."""
    return {
        key: float(np.mean([values[key] for values in per_class.values()])) if per_class else 0.0
        for key in ("precision", "recall", "f1")
    }


def categorical_cross_entropy(true: Sequence[int] | np.ndarray, probabilities: np.ndarray) -> float:
    """Mean cross-entropy of the true classes, computed as Keras does for probability outputs.

    Keras rescales each row to sum to 1 and clips to [1e-7, 1 - 1e-7] before the log. This is
    NOT always the `val_loss` of training's history: in a traced graph Keras 3 finds the logits
    under a Softmax op and uses the unclipped softmax cross-entropy, so a confidently wrong photo
    costs more there (seen on the frozen MobileNetV2: history 1.30, this 1.14, same accuracy).
    Computed from the saved probabilities, this is the loss anyone can recompute from
    predictions.csv.
    """
    true = np.asarray(true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != true.shape[0]:
        raise ValueError(f"probabilities of shape {probabilities.shape} do not match {true.shape[0]} labels")
    if true.size == 0:
        return 0.0
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    probabilities = np.clip(probabilities, KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    return float(-np.mean(np.log(probabilities[np.arange(true.size), true])))


def quality_metrics(true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Everything metrics.json says about prediction quality, from labels and probabilities."""
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(true, predicted, len(classes))
    per_class, notes = per_class_metrics(matrix, classes)
    return {
        "accuracy": accuracy_from_confusion(matrix),
        "loss": categorical_cross_entropy(true, probabilities),
        "images": int(true.size),
        "per_class": per_class,
        "macro_average": macro_average(per_class),
        "confusion_matrix": matrix.tolist(),
        "notes": notes,
    }

