"""Stage 6, submit: check a submission file the way Kaggle will, then send it (pipeline.kaggle_api).

Kaggle allows only a few submissions a day, so a file already sent is not sent again unless forced,
and a file that Kaggle could not score is refused here rather than spending one.
"""

import csv
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.predict import SUBMISSION_HEADER, check_submission

# Rows of the competition's test.csv: a file with any other count cannot be scored.
COMPETITION_TEST_ROWS = {"digit-recognizer": 28000}


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
                        raise PipelineError(f"{path} line {reader.line_num}, column {column}: {cell[:20]!r} is not an integer")
                image_ids.append(int(row[0]))
                labels.append(int(row[1]))
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text (expected a CSV with header {SUBMISSION_HEADER})") from None
    return np.array(image_ids, dtype=np.int64), np.array(labels, dtype=np.int64)


def validate_submission_file(path: Path, competition: str) -> int:
    """Number of rows of a valid submission for the competition; PipelineError otherwise."""
    image_ids, labels = read_submission(path)
    expected_rows = COMPETITION_TEST_ROWS.get(competition)
    check_submission(image_ids, labels, expected_rows, source=str(path))
    return len(image_ids)


def newest_submission(folder: Path) -> Path:
    finished = [path for path in folder.glob("*.csv") if not path.name.startswith(".")]
    candidates = sorted(finished, key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise PipelineError(f"{folder}: no submission yet (run `make all` or `python -m pipeline predict` first)")
    return candidates[-1]
