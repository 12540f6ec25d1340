"""The submission format, in one place: the header `ImageId,Label`, ids 1..N in order, labels 0-9.

predict writes it (`submission_text`), submit reads and checks it (`read_submission`,
`check_submission`) before spending one of Kaggle's few daily submissions.
"""

import csv
import re
from pathlib import Path

import numpy as np

from pipeline.core.config import NUM_CLASSES
from pipeline.core.errors import PipelineError, quoted

SUBMISSION_HEADER = "ImageId,Label"
# The competition's 28,000 rows take about 0.2 MB: a file far larger is not a submission, and is not read.
MAX_SUBMISSION_BYTES = 10 * 10**6
# ASCII only: str.isdigit() also accepts "²" and Arabic-Indic digits, which int() or Kaggle then refuse.
IMAGE_ID = re.compile(r"[0-9]{1,9}")  # nine digits at most: any longer is out of range, and no int64 overflows
LABEL = re.compile(r"[0-9]")


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


def read_submission(path: Path, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids, labels) of a submission CSV, refusing anything but ASCII ids and one-digit labels.

    Read a row at a time, and refused without reading when larger than MAX_SUBMISSION_BYTES or, with
    max_rows, as soon as a row more than that comes.
    """
    if not path.is_file():
        raise PipelineError(f"{path.absolute()}: {'a folder' if path.is_dir() else 'file not found'}, expected a"
                            " submission CSV")  # named whole: a relative FILE= is the checkout's with make -C
    size = path.stat().st_size
    if size > MAX_SUBMISSION_BYTES:
        raise PipelineError(f"{path}: {size / 1e6:.1f} MB, more than any submission"
                            f" ({MAX_SUBMISSION_BYTES / 1e6:.0f} MB"
                            " at most; the competition's 28,000 rows take about 0.2 MB)")
    image_ids, labels = [], []
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, [])
            if ",".join(cell.strip() for cell in header) != SUBMISSION_HEADER:
                raise PipelineError(f"{path} line 1: header is {quoted(','.join(header))}, expected"
                                    f" {SUBMISSION_HEADER!r}")
            for row in reader:
                if not row:
                    continue
                if len(row) != 2:
                    raise PipelineError(f"{path} line {reader.line_num}: {len(row)} values, expected 2 (ImageId,Label)")
                if max_rows is not None and len(image_ids) == max_rows:
                    raise PipelineError(f"{path} line {reader.line_num}: more than {max_rows} rows"
                                        " (one per test image)")
                image_id, label = row[0].strip(), row[1].strip()
                if not IMAGE_ID.fullmatch(image_id):
                    raise PipelineError(f"{path} line {reader.line_num}, column ImageId: {row[0][:30]!r}, expected"
                                        f" {len(image_ids) + 1} (ids 1..N in order)")
                if not LABEL.fullmatch(label):
                    raise PipelineError(f"{path} line {reader.line_num}, column Label: {row[1][:30]!r}, expected one"
                                        " digit 0-9")
                image_ids.append(int(image_id))
                labels.append(int(label))
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text (expected a CSV with header {SUBMISSION_HEADER})") from None
    except csv.Error as error:
        raise PipelineError(f"{path} line {reader.line_num}: malformed CSV ({error})") from None
    return np.array(image_ids, dtype=np.int64), np.array(labels, dtype=np.int64)
