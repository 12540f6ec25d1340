"""Stage 5, predict: label every test image and build the submission (`ImageId,Label`, ids 1..N).

An ensemble's members and the test-time-augmented views are averaged as probabilities.
"""

from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.errors import PipelineError

SUBMISSION_HEADER = "ImageId,Label"
# Test-time augmentation: the image itself and shifted by one pixel each way (zeros fill in).
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shift_images(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Move every (N, 28, 28, 1) image by whole pixels, filling with background (zeros)."""
    shifted = np.zeros_like(images)
    size = images.shape[1]
    source_rows = slice(max(0, -rows), size - max(0, rows))
    target_rows = slice(max(0, rows), size - max(0, -rows))
    source_columns = slice(max(0, -columns), size - max(0, columns))
    target_columns = slice(max(0, columns), size - max(0, -columns))
    shifted[:, target_rows, target_columns] = images[:, source_rows, source_columns]
    return shifted


def predict_probabilities(models: list, images: np.ndarray, batch_size: int = 1024,
                          tta: bool = False, verbose: int = 1) -> np.ndarray:
    """Mean softmax over the models (and the TTA views): (N, 10) float32."""
    views = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    total = np.zeros((len(images), config.NUM_CLASSES), dtype=np.float64)
    for model in models:
        for rows, columns in views:
            view = images if (rows, columns) == (0, 0) else shift_images(images, rows, columns)
            total += model.predict(view, batch_size=batch_size, verbose=verbose).astype(np.float64)
    return (total / (len(models) * len(views))).astype(np.float32)


def check_submission(image_ids: np.ndarray, labels: np.ndarray, expected_rows: int | None,
                     source: str = "submission") -> None:
    """Refuse anything Kaggle would not score: ids must be 1..N, labels 0-9, N as expected."""
    if len(image_ids) == 0:
        raise PipelineError(f"{source}: no rows (expected one per test image)")
    if expected_rows is not None and len(image_ids) != expected_rows:
        raise PipelineError(f"{source}: {len(image_ids)} rows, expected {expected_rows} (one per test image)")
    expected_ids = np.arange(1, len(image_ids) + 1)
    wrong = np.flatnonzero(image_ids != expected_ids)
    if wrong.size:
        row = int(wrong[0])
        raise PipelineError(f"{source} line {row + 2}, column ImageId: {image_ids[row]}, expected {row + 1} (ids 1..N in order)")
    bad_labels = np.flatnonzero((labels < 0) | (labels > 9))
    if bad_labels.size:
        row = int(bad_labels[0])
        raise PipelineError(f"{source} line {row + 2}, column Label: {labels[row]}, expected a digit 0-9")


def submission_text(labels: np.ndarray) -> str:
    lines = [SUBMISSION_HEADER] + [f"{index},{label}" for index, label in enumerate(labels.tolist(), start=1)]
    return "\n".join(lines) + "\n"


def read_sample_submission_ids(path: Path) -> np.ndarray | None:
    """The ids of the competition's sample_submission.csv, when the source had one."""
    if not path.is_file():
        return None
    import pandas as pd

    try:
        frame = pd.read_csv(path)
        return frame["ImageId"].to_numpy()
    except Exception as error:
        raise PipelineError(f"{path}: unreadable sample submission ({error})") from None


def unused_submission_path(folder: Path, name: str) -> Path:
    """submissions/<name>.csv, or <name>-2.csv, ... so an earlier submission is never overwritten."""
    candidate = folder / f"{name}.csv"
    number = 2
    while candidate.exists():
        candidate = folder / f"{name}-{number}.csv"
        number += 1
    return candidate
