"""The report's numbers, pure functions on arrays: predictions, the confusion table, per-class precision
and recall, the most wrong digits, accuracy (and `pipeline.core.digits.class_counts`).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.config import NUM_CLASSES

CLASSES = np.arange(NUM_CLASSES)
MOST_WRONG_LIMIT = 24
HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate")


# --------------------------------------------------------------------------- pure core: numbers


def predictions_from(probabilities: np.ndarray) -> np.ndarray:
    """The predicted class of each row: the one with the highest probability."""
    return np.asarray(probabilities).argmax(axis=1)


def confusion_table(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(10, 10) counts: row = true digit, column = predicted digit, always all ten classes."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predictions, labels=CLASSES)


def per_class_precision_recall(labels: np.ndarray, predictions: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per digit 0-9 (0 where a class is never predicted/seen)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=CLASSES, zero_division=0
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def most_wrong(labels: np.ndarray, probabilities: np.ndarray, limit: int = MOST_WRONG_LIMIT) -> np.ndarray:
    """Indices of misclassified rows, most confident wrong answer first, at most `limit`."""
    probabilities = np.asarray(probabilities)
    predictions = predictions_from(probabilities)
    wrong = np.flatnonzero(predictions != np.asarray(labels))
    confidence = probabilities[wrong, predictions[wrong]]
    # Stable sort, so ties keep their dataset order and the report is reproducible.
    order = np.argsort(-confidence, kind="stable")
    return wrong[order][:limit]


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions))) if len(labels) else 0.0
