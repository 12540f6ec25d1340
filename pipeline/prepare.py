"""Stage 2, prepare: validate the competition CSVs and turn them into image arrays.

train.csv must have the header `label,pixel0..pixel783` and test.csv `pixel0..pixel783`, in
that order; every cell an integer 0-255 (labels 0-9), none missing, at least one row. A file that
breaks a rule is refused with one line naming the file, the line, the column and what was expected.

Reading is two-speed: pyarrow parses a valid file in about a second; when it finds anything
wrong, a plain `csv` scan of the file finds the first bad cell for the message.
"""

import csv
import re
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.errors import PipelineError

PIXEL_COLUMNS = [f"pixel{index}" for index in range(config.NUM_PIXELS)]
TRAIN_HEADER = ["label", *PIXEL_COLUMNS]
TEST_HEADER = PIXEL_COLUMNS
# A cell is a decimal integer, optionally padded with spaces or tabs: what pyarrow parses as int64
# (less its "0x" hexadecimal, which the fast path never sees: see _fast_read).
_INTEGER = re.compile(r"-?[0-9]+")
_PADDING = " \t"
# Every byte of a valid file after its header is one of these.
_DATA_BYTES = b"0123456789,-\" \t\r\n"
_LINE_END = re.compile(rb"[\r\n]")


def expected_header(with_labels: bool) -> list[str]:
    return TRAIN_HEADER if with_labels else TEST_HEADER


def _read_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            return next(csv.reader(stream), [])
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text (expected a CSV file of integers)") from None
    except csv.Error as error:
        raise PipelineError(f"{path} line 1: unreadable header ({error})") from None


def check_header(path: Path, header: list[str], with_labels: bool) -> None:
    expected = expected_header(with_labels)
    header = [name.strip() for name in header]
    if header == expected:
        return
    if not header or header == [""]:
        raise PipelineError(f"{path}: empty file (expected the header {expected[0]},{expected[1]},...,{expected[-1]})")
    for position, (found, wanted) in enumerate(zip(header, expected), start=1):
        if found != wanted:
            raise PipelineError(f"{path} line 1, column {position}: header is {found!r}, expected {wanted!r}")
    raise PipelineError(
        f"{path} line 1: header has {len(header)} columns, expected {len(expected)} "
        f"({expected[0]},...,{expected[-1]})"
    )


def _cell_problem(cell: str, is_label: bool) -> str | None:
    text = cell.strip(_PADDING)
    upper = 9 if is_label else 255
    if text == "":
        return f"missing value, expected an integer 0-{upper}"
    if not _INTEGER.fullmatch(text):  # not int(): it also takes "+5", "1_0" and non-ASCII digits
        return f"{cell[:20]!r} is not an integer, expected 0-{upper}"
    value = int(text)
    if not 0 <= value <= upper:
        return f"{text[:20]} is out of range, expected 0-{upper}"
    return None


def find_first_problem(path: Path, with_labels: bool) -> str | None:
    """Scan the file with the csv module and describe its first bad row or cell (slow path)."""
    header = expected_header(with_labels)
    data_rows = 0
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as stream:
        reader = csv.reader(stream)
        next(reader, None)
        try:
            for row in reader:
                if not row:
                    continue  # blank lines carry no data; pyarrow skips them too (but not a line `""`)
                data_rows += 1
                line = reader.line_num
                if len(row) != len(header):
                    return f"{path} line {line}: {len(row)} values, expected {len(header)} (one per column)"
                for column, cell in enumerate(row):
                    problem = _cell_problem(cell, is_label=with_labels and column == 0)
                    if problem:
                        return f"{path} line {line}, column {header[column]}: {problem}"
        except csv.Error as error:
            return f"{path} line {reader.line_num}: malformed CSV ({error})"
    if data_rows == 0:
        return f"{path}: no data rows after the header (expected at least one image)"
    return None


def _fast_read(path: Path, columns: int) -> np.ndarray | None:
    """All cells as int64 via pyarrow, or None when anything is irregular."""
    import pandas as pd

    # Any byte but those of integers after the header (already checked) goes to the slow path:
    # pyarrow would read "0x1f" as 31. Lines may end in \r alone; no slicing: 77 MB is slow to copy.
    data = path.read_bytes()
    header_end = _LINE_END.search(data)
    if header_end is None:
        return None  # a header and no data
    if data.translate(None, _DATA_BYTES) != data[:header_end.start()].translate(None, _DATA_BYTES):
        return None
    try:
        frame = pd.read_csv(path, header=None, skiprows=1, engine="pyarrow")
    except Exception:  # any parse failure: the slow path will say precisely what is wrong
        return None
    if frame.shape[1] != columns or frame.shape[0] == 0:
        return None
    if not all(pd.api.types.is_integer_dtype(dtype) for dtype in frame.dtypes):
        return None
    return frame.to_numpy(dtype=np.int64)


def _slow_read(path: Path) -> np.ndarray:
    """All cells as int64 via the csv module, for a file find_first_problem has passed."""
    with open(path, encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream)
        next(reader)
        rows = [np.array([int(cell.strip(_PADDING)) for cell in row], dtype=np.int64) for row in reader if row]
    return np.stack(rows)


def read_digits_csv(path: Path, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a competition CSV and return (pixels uint8 (N, 784), labels uint8 (N,) or None)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run `python -m pipeline download` first)")
    check_header(path, _read_header(path), with_labels)
    values = _fast_read(path, len(expected_header(with_labels)))
    if values is not None:
        pixels = values[:, 1:] if with_labels else values
        labels = values[:, 0] if with_labels else None
        in_range = pixels.min() >= 0 and pixels.max() <= 255
        if in_range and (labels is None or (labels.min() >= 0 and labels.max() <= 9)):
            return pixels.astype(np.uint8), None if labels is None else labels.astype(np.uint8)
    problem = find_first_problem(path, with_labels)
    if problem:
        raise PipelineError(problem)
    # Valid after all, though pyarrow could not read it (one data row without a final newline).
    values = _slow_read(path)
    pixels = values[:, 1:] if with_labels else values
    return pixels.astype(np.uint8), values[:, 0].astype(np.uint8) if with_labels else None


def to_images(pixels: np.ndarray) -> np.ndarray:
    """(N, 784) integers 0-255 -> (N, 28, 28, 1) float32 in [0, 1]."""
    size = config.IMAGE_SIZE
    return (pixels.astype(np.float32) / 255.0).reshape(-1, size, size, 1)


def class_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=config.NUM_CLASSES).tolist()


# ----------------------------------------------------------------------------------------- the stage

def save_array(path: Path, array: np.ndarray) -> Path:
    from pipeline.cache import atomic_path

    with atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            np.save(stream, array)
    return path


def define(paths, console):
    """The prepare stage: raw CSVs in, validated (N, 28, 28, 1) arrays and labels out."""
    from pipeline.stage import Definition

    for path in (paths.raw_train, paths.raw_test):
        if not path.is_file():
            raise PipelineError(f"{path}: file not found (run `python -m pipeline download` first)")

    def work():
        train_pixels, train_labels = read_digits_csv(paths.raw_train, with_labels=True)
        test_pixels, _ = read_digits_csv(paths.raw_test, with_labels=False)
        outputs = [
            save_array(paths.train_images, to_images(train_pixels)),
            save_array(paths.train_labels, train_labels),
            save_array(paths.test_images, to_images(test_pixels)),
        ]
        return outputs, {"train_rows": len(train_labels), "test_rows": len(test_pixels),
                         "class_counts": class_counts(train_labels)}

    def describe(record):
        extra = record["extra"]
        counts = " ".join(f"{digit}:{count}" for digit, count in enumerate(extra["class_counts"]))
        return (f"{extra['train_rows']} train and {extra['test_rows']} test images (28x28, scaled to [0, 1]);"
                f" class counts {counts}")

    return Definition("prepare", {}, [paths.raw_train, paths.raw_test], work, describe)
