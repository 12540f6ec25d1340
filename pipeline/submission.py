"""The submission format, in one place: the header `ImageId,Label`, ids 1..N in order, labels 0-9.

predict writes it (`submission_text`), submit reads and checks it (`read_submission`,
`check_submission`) before spending one of Kaggle's few daily submissions.
"""

import csv
from pathlib import Path

import numpy as np

from pipeline.config import NUM_CLASSES
from pipeline.errors import PipelineError

SUBMISSION_HEADER = "ImageId,Label"


def submission_text(labels: np.ndarray) -> str:
    lines = [SUBMISSION_HEADER] + [f"{index},{label}" for index, label in enumerate(labels.tolist(), start=1)]
    return "\n".join(lines) + "\n"


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
        raise PipelineError(f"{source} line {row + 2}, column ImageId: {image_ids[row]}, expected {row + 1}"
                            " (ids 1..N in order)")
    bad_labels = np.flatnonzero((labels < 0) | (labels > NUM_CLASSES - 1))
    if bad_labels.size:
        row = int(bad_labels[0])
        raise PipelineError(f"{source} line {row + 2}, column Label: {labels[row]}, expected a digit 0-9")


def read_submission(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids, labels) of a submission CSV, refusing anything but two integer columns."""
    if not path.is_file():
        raise PipelineError(f"{path}: file not found")
    image_ids, labels = [], []
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, [])
            if ",".join(cell.strip() for cell in header) != SUBMISSION_HEADER:
                raise PipelineError(f"{path} line 1: header is {','.join(header)!r}, expected {SUBMISSION_HEADER!r}")
            for row in reader:
                if not row:
                    continue
                if len(row) != 2:
                    raise PipelineError(f"{path} line {reader.line_num}: {len(row)} values, expected 2 (ImageId,Label)")
                for column, cell in zip(("ImageId", "Label"), row):
                    if not cell.strip().lstrip("-").isdigit():
                        raise PipelineError(f"{path} line {reader.line_num}, column {column}: {cell[:20]!r}"
                                            " is not an integer")
                image_ids.append(int(row[0]))
                labels.append(int(row[1]))
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text (expected a CSV with header {SUBMISSION_HEADER})") from None
    except csv.Error as error:
        raise PipelineError(f"{path} line {reader.line_num}: malformed CSV ({error})") from None
    return np.array(image_ids, dtype=np.int64), np.array(labels, dtype=np.int64)
