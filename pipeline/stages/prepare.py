"""Stage 2, prepare: validate the competition CSVs and turn them into image arrays.

train.csv must have the header `label,pixel0..pixel783` and test.csv `pixel0..pixel783`, in
that order; every cell an integer 0-255 (labels 0-9), none missing, at least one row. A file that
breaks a rule is refused with one line naming the file, the line, the column and what was expected.

Reading is two-speed: pyarrow parses a valid file in about a second, straight to uint8; when it
finds anything wrong (or the file quotes its values), a plain `csv` scan finds the first bad cell
for the message. Every line is accounted for: a quote that is never closed is an error, not a
cell that swallows the rows after it.
"""

import csv
import importlib
import importlib.util
import re
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.core.cache import atomic_path, load_record
from pipeline.core.digits import class_counts
from pipeline.core.errors import PipelineError, quoted
from pipeline.core.stage import Definition, require_current_source

PIXEL_COLUMNS = [f"pixel{index}" for index in range(config.NUM_PIXELS)]
TRAIN_HEADER = ["label", *PIXEL_COLUMNS]
TEST_HEADER = PIXEL_COLUMNS
# A cell is a decimal integer, optionally padded with spaces or tabs: what pyarrow parses as int64
# (less its "0x" hexadecimal, which the fast path never sees: see _fast_read).
_INTEGER = re.compile(r"-?[0-9]+")
_PADDING = " \t"
# The bytes of a file the fast path takes, after its header (quoted values take the slow path).
_PLAIN_DATA_BYTES = b"0123456789,- \t\r\n"
_LINE_END = re.compile(rb"[\r\n]")
_BLOCK_BYTES = 1 << 20


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
            raise PipelineError(f"{path} line 1, column {position}: header is {quoted(found, 40)}, expected"
                                f" {wanted!r}{_header_hint(header, expected, found)}")
    raise PipelineError(
        f"{path} line 1: header has {len(header)} columns, expected {len(expected)} "
        f"({expected[0]},...,{expected[-1]})"
    )


def _header_hint(header: list[str], expected: list[str], found: str) -> str:
    """What the commonest wrong headers mean: another separator, pandas' index column (to_csv without
    index=False), no header line at all, test.csv with the labels of train.csv."""
    separator = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs")) if mark in found), None)
    if separator:
        return f" (values separated by {separator}? expected commas)"
    if header[0] == "label" and expected[0] != "label":
        return " (the labels of train.csv? test.csv has pixel columns only)"
    if header[1:len(expected) + 1] == expected or header[0] in ("", "Unnamed: 0", "index"):
        return " (an index column first? save with pandas' to_csv(..., index=False))"
    if all(name.isdigit() for name in header):
        return f" (no header line? the file starts with the line {','.join(expected[:2])},...)"
    return ""


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


def _line(path: Path, number: int) -> str:
    """The file's line `number` (1 is the header), '' past its end."""
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as stream:
        return next((line for index, line in enumerate(stream, 1) if index == number), "")


UNTERMINATED_QUOTE = "unterminated quote (a value opens a \" that its line never closes)"


def find_first_problem(path: Path, with_labels: bool) -> str | None:
    """Scan the file with the csv module and describe its first bad row or cell (slow path)."""
    header = expected_header(with_labels)
    data_rows = 0
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as stream:
        reader = csv.reader(stream)
        next(reader, None)
        row_start = reader.line_num + 1
        try:
            for row in reader:
                # A row that spans several lines has a quote that was never closed: the csv module
                # would swallow the lines after it into one cell, and their rows would be lost.
                if reader.line_num != row_start and any("\n" in cell or "\r" in cell for cell in row):
                    return f"{path} line {row_start}: {UNTERMINATED_QUOTE}"
                line, row_start = reader.line_num, reader.line_num + 1
                if not row:
                    continue  # blank lines carry no data; pyarrow skips them too (but not a line `""`)
                data_rows += 1
                if len(row) != len(header):
                    return f"{path} line {line}: {len(row)} values, expected {len(header)} (one per column)"
                for column, cell in enumerate(row):
                    problem = _cell_problem(cell, is_label=with_labels and column == 0)
                    if problem:
                        return f"{path} line {line}, column {header[column]}: {problem}"
        except csv.Error as error:
            if "field larger than field limit" in str(error) and _line(path, row_start).count('"') % 2:
                return f"{path} line {row_start}: {UNTERMINATED_QUOTE}"  # the lines after it, swallowed into a cell
            return f"{path} line {row_start}: malformed CSV ({error})"
    if data_rows == 0:
        return f"{path}: no data rows after the header (expected at least one image)"
    return None


def _only_plain_integers(path: Path) -> bool:
    """True when every byte after the header is a digit, comma, minus, space, tab or line end.

    Anything else goes to the slow path: pyarrow would read "0x1f" as 31, and a quote that is
    never closed would make it swallow the lines after it. Read in blocks, so memory stays flat.
    """
    with open(path, "rb") as stream:
        first_block = stream.read(_BLOCK_BYTES)
        header_end = _LINE_END.search(first_block)
        if header_end is None:
            return False  # no data, or a header longer than a block: the slow path says which
        block = first_block[header_end.start():]
        while block:
            if block.translate(None, _PLAIN_DATA_BYTES):
                return False
            block = stream.read(_BLOCK_BYTES)
    return True


def _fast_read(path: Path, columns: int) -> np.ndarray | None:
    """All cells as uint8 via pyarrow, or None when anything is irregular (the slow path then
    says what). Parsed straight to uint8: a value out of 0-255 fails the parse, and the peak
    memory is a small multiple of the (rows, columns) bytes it returns."""
    # pyarrow imports pandas, where installed (it is not the pipeline's), from its compiled code when it first reads,
    # and swallows an exception there: a Ctrl-C landing in that import was lost, and the chain went on to train.
    # Imported here first, it raises as any Ctrl-C.
    if importlib.util.find_spec("pandas") is not None:
        importlib.import_module("pandas")
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    if not _only_plain_integers(path):
        return None
    names = [f"c{index}" for index in range(columns)]
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(skip_rows=1, column_names=names),
            parse_options=pa_csv.ParseOptions(quote_char=False),
            convert_options=pa_csv.ConvertOptions(column_types={name: pa.uint8() for name in names}),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None  # a wrong width, a bad or out-of-range value: the slow path names it
    if table.num_rows == 0:
        return None
    values = np.empty((table.num_rows, columns), dtype=np.uint8)
    for index in range(columns):
        column = table.column(index)
        if column.null_count:  # an empty cell: the slow path names it
            return None
        values[:, index] = column.to_numpy()
    return values


def _slow_read(path: Path) -> np.ndarray:
    """All cells as uint8 via the csv module, for a file find_first_problem has passed."""
    with open(path, encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream)
        next(reader)
        rows = [np.array([int(cell.strip(_PADDING)) for cell in row], dtype=np.uint8) for row in reader if row]
    return np.stack(rows)


def read_digits_csv(path: Path, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a competition CSV and return (pixels uint8 (N, 784), labels uint8 (N,) or None)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: file not found (run {DOWNLOAD} first)")
    check_header(path, _read_header(path), with_labels)
    values = _fast_read(path, len(expected_header(with_labels)))
    if values is None or (with_labels and values[:, 0].max() > config.NUM_CLASSES - 1):
        problem = find_first_problem(path, with_labels)
        if problem:
            raise PipelineError(problem)
        # Valid after all, though pyarrow could not read it (quoted values, one data row without
        # a final newline).
        values = _slow_read(path)
    if with_labels:
        return np.ascontiguousarray(values[:, 1:]), values[:, 0].copy()
    return values, None


def write_images(path: Path, pixels: np.ndarray, rows_per_block: int = 4096) -> None:
    """Save to_images(pixels) as a .npy file, a block of rows at a time: the float32 array,
    four times the size of the pixels, is never whole in memory."""
    shape = (len(pixels), config.IMAGE_SIZE, config.IMAGE_SIZE, 1)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, header)
        for start in range(0, len(pixels), rows_per_block):
            stream.write(to_images(pixels[start:start + rows_per_block]).tobytes())


def to_images(pixels: np.ndarray) -> np.ndarray:
    """(N, 784) integers 0-255 -> (N, 28, 28, 1) float32 in [0, 1]."""
    size = config.IMAGE_SIZE
    return (pixels.astype(np.float32) / 255.0).reshape(-1, size, size, 1)


def check_sample_submission(path: Path, test_rows: int) -> None:
    """Refuse, before any training, a sample_submission.csv whose ids are not 1..rows of test.csv.

    Only its ImageId column matters here (predict checks the whole file again, with
    pipeline.competition.submission); read here so that prepare's code stays this module alone.
    """
    path = Path(path)
    if not path.is_file():
        return
    image_ids = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, [])
            if not header or header[0].strip() != "ImageId":
                raise PipelineError(f"{path} line 1: header is {quoted(','.join(header))}, expected 'ImageId,Label'")
            for row in reader:
                if not row:
                    continue
                cell = row[0].strip(_PADDING)
                if not _INTEGER.fullmatch(cell):
                    raise PipelineError(f"{path} line {reader.line_num}, column ImageId: {cell[:20]!r}"
                                        " is not an integer")
                image_ids.append(int(cell))
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text (expected a CSV with header ImageId,Label)") from None
    except csv.Error as error:
        raise PipelineError(f"{path} line {reader.line_num}: malformed CSV ({error})") from None
    if len(image_ids) != test_rows:
        raise PipelineError(f"{path}: {len(image_ids)} rows, expected {test_rows} (one per test image)")
    wrong = np.flatnonzero(np.array(image_ids) != np.arange(1, test_rows + 1))
    if wrong.size:
        row = int(wrong[0])
        raise PipelineError(f"{path} line {row + 2}, column ImageId: {image_ids[row]}, expected {row + 1}"
                            " (ids 1..N in order)")


# ----------------------------------------------------------------------------------------- the stage

def save_array(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            np.save(stream, array)
    return path


def save_images(path: Path, pixels: np.ndarray) -> Path:
    """to_images(pixels) saved a block at a time (write_images), atomically."""
    with atomic_path(path) as temporary:
        write_images(temporary, pixels)
    return path


DOWNLOAD = config.how_to("`python -m pipeline download`", "`digit-recognizer download`")


def _copy_of_source(paths) -> str:
    """' (a copy of the file in SOURCE: ...)' when data/raw/ holds copies of the user's own folder or zip."""
    extra = (load_record("download") or {}).get("extra") or {}
    if extra.get("source") not in ("folder", "zip") or not isinstance(extra.get("source_path"), str):
        return ""
    return (f" (a copy of the file in {paths.root / extra['source_path']}: correct it there, as the next download"
            " copies it again)")


def define(paths, console):
    """The prepare stage: raw CSVs in, validated (N, 28, 28, 1) arrays and labels out."""
    require_current_source()
    for path in (paths.raw_train, paths.raw_test):
        if not path.is_file():
            raise PipelineError(f"{path}: file not found (run {DOWNLOAD} first)")

    def work():
        try:
            return read_and_save()
        except PipelineError as error:  # the user mends their own file, not the copy the next download replaces
            raise PipelineError(f"{error}{_copy_of_source(paths)}") from None

    def read_and_save():
        # One file at a time, each written as soon as it is read: the peak memory stays small.
        test_pixels, _ = read_digits_csv(paths.raw_test, with_labels=False)
        check_sample_submission(paths.sample_submission, len(test_pixels))
        train_pixels, train_labels = read_digits_csv(paths.raw_train, with_labels=True)
        missing = [str(digit) for digit, count in enumerate(class_counts(train_labels)) if count == 0]
        if missing:  # a model that never saw a digit cannot predict it, and its estimate would not say so
            raise PipelineError(f"{paths.raw_train}: no image labelled {', '.join(missing)} (expected every digit"
                                " 0-9, as the competition's train.csv has thousands of each)")
        outputs = [save_images(paths.train_images, train_pixels),
                   save_array(paths.train_labels, train_labels)]
        del train_pixels
        outputs.append(save_images(paths.test_images, test_pixels))
        return outputs, {"train_rows": len(train_labels), "test_rows": len(test_pixels),
                         "class_counts": class_counts(train_labels).tolist()}

    def describe(record):
        extra = record["extra"]
        counts = " ".join(f"{digit}:{count}" for digit, count in enumerate(extra["class_counts"]))
        return (f"{extra['train_rows']} train and {extra['test_rows']} test images (28x28, scaled to [0, 1]);"
                f" class counts {counts}")

    sample_submission = [paths.sample_submission] if paths.sample_submission.is_file() else []
    inputs = [paths.raw_train, paths.raw_test] + sample_submission
    return Definition("prepare", {}, inputs, work, describe)
