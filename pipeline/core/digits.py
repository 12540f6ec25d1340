"""Counting digits: how many examples of each class a set of labels holds (prepare records it, the report
draws it).
"""

import numpy as np

from pipeline.core import config


def class_counts(labels: np.ndarray) -> np.ndarray:
    """How many examples of each digit 0-9 (digits that never occur count 0)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=config.NUM_CLASSES)[:config.NUM_CLASSES]
