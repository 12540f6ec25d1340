"""Bad input at random: valid competition CSVs and the bundled zip, corrupted by hypothesis.

Every corrupted CSV is either read exactly as an independent oracle (below) reads it, or refused
with the one-line PipelineError that names the file and, for a bad row or cell, its line and
column: never another exception, never wrong data silently accepted. Every corrupted zip either
extracts byte-identical files or is refused, leaving no partial file behind.

The oracle's rules, as a user would state them (decided here, not copied from pipeline.stages.prepare):
- the file is UTF-8, optionally with a byte order mark; anything else is refused;
- the first line is the header, exactly label,pixel0..pixel783 (train) or pixel0..pixel783
  (test); a name may be quoted and padded with whitespace;
- lines end in \\n, \\r\\n or \\r (mixed is fine); empty lines anywhere after the header are
  skipped, a line holding only spaces or only "" is not empty and is refused for its width;
- every other line has exactly one value per column; a value may be quoted and padded with spaces
  or tabs, and is then a plain decimal integer: an optional minus and ASCII digits, leading zeros
  allowed ("05" is 5, "-0" is 0). "+5", "0x10", "1_0", "1.0", "1e2", non-ASCII digits and any
  other whitespace are not integers;
- pixels are 0-255 and labels 0-9; there is at least one data line;
- a file cut short is read as it now stands: a last value cut to fewer digits (even one whose
  closing quote was cut off) cannot be told from a real one, so it is accepted; a last line cut
  to fewer values is refused.
"""

import re
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.core import config
from pipeline.core.errors import PipelineError
from pipeline.stages.download import extract_competition_files
from pipeline.stages.prepare import read_digits_csv

PIXEL_NAMES = [f"pixel{index}" for index in range(784)]
UTF8_BOM = b"\xef\xbb\xbf"


def column_names(with_labels: bool) -> list[str]:
    return (["label"] if with_labels else []) + PIXEL_NAMES


def fresh_dir(tmp_path_factory) -> Path:
    """A new folder per hypothesis example (tmp_path would be shared by all of them)."""
    return Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))


# ---------------------------------------------------------------------------------------------
# The oracle: what a user expects from a file's bytes, without pipeline.stages.prepare or the csv module.
# ---------------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[ \t]*(-?[0-9]+)[ \t]*")  # [0-9], not \d: ASCII digits only
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass
class Expected:
    pixels: np.ndarray | None = None
    labels: np.ndarray | None = None
    problem: str | None = None  # empty, header, width, cell, no_rows; None when valid
    line: int | None = None
    column: str | None = None
    not_utf8: bool = False  # then a message that says UTF-8 is as good as one naming the spot


def split_fields(line: str) -> list[str]:
    """One line's values, unquoted. The generated files quote only whole values and never put a
    comma, quote or line break inside one, so splitting on commas is exact; an opening quote whose
    closing quote is missing (a file cut short) quotes the rest of the line."""
    fields = []
    for text in line.split(","):
        if text.startswith('"'):
            text = text[1:-1] if len(text) >= 2 and text.endswith('"') else text[1:]
        fields.append(text)
    return fields


def oracle(data: bytes, with_labels: bool) -> Expected:
    names = column_names(with_labels)
    if UTF8_BOM.startswith(data):  # nothing, or a byte order mark cut short: nothing to read
        return Expected(problem="empty", line=1, not_utf8=data not in (b"", UTF8_BOM))
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    try:
        text, not_utf8 = data.decode("utf-8"), False
    except UnicodeDecodeError:
        # Refused either way; where the bad bytes come after the part read for the header, the
        # reader may instead name the first bad cell, which a replacement character makes.
        text, not_utf8 = data.decode("utf-8", errors="replace"), True
    lines = _LINE_BREAK.split(text)
    header = [name.strip() for name in split_fields(lines[0])]
    if header != names:
        return Expected(problem="empty" if header == [""] else "header", line=1, not_utf8=not_utf8)
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if line == "":
            continue
        fields = split_fields(line)
        if len(fields) != len(names):
            return Expected(problem="width", line=number, not_utf8=not_utf8)
        row = []
        for name, cell in zip(names, fields):
            match = _INTEGER.fullmatch(cell)
            if not match or not 0 <= int(match.group(1)) <= (9 if name == "label" else 255):
                return Expected(problem="cell", line=number, column=name, not_utf8=not_utf8)
            row.append(int(match.group(1)))
        rows.append(row)
    if not rows:
        return Expected(problem="no_rows", not_utf8=not_utf8)
    assert not not_utf8, "a replacement character is never a valid value"
    values = np.array(rows, dtype=np.int64)
    return Expected(pixels=values[:, 1:] if with_labels else values, labels=values[:, 0] if with_labels else None)


def check_against_oracle(path: Path, with_labels: bool) -> Expected:
    expected = oracle(path.read_bytes(), with_labels)
    try:
        pixels, labels = read_digits_csv(path, with_labels=with_labels)
    except PipelineError as error:
        message = str(error)
        assert expected.problem is not None, f"valid file refused: {message}"
        assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
        assert str(path) in message, message
        if expected.not_utf8 and "UTF-8" in message:
            return expected
        if expected.problem == "empty":
            assert "empty file" in message, message
        elif expected.problem == "header":
            assert message.startswith(f"{path} line 1"), message
        elif expected.problem == "width":
            assert message.startswith(f"{path} line {expected.line}: "), message
            assert "values, expected" in message, message
        elif expected.problem == "cell":
            assert message.startswith(f"{path} line {expected.line}, column {expected.column}: "), message
        else:
            assert "no data rows" in message, message
        return expected
    assert expected.problem is None, (
        f"accepted a file the oracle refuses ({expected.problem} at line {expected.line}, column {expected.column})")
    assert pixels.dtype == np.uint8 and pixels.shape == expected.pixels.shape
    np.testing.assert_array_equal(pixels, expected.pixels)
    if with_labels:
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, expected.labels)
    else:
        assert labels is None
    return expected


# ---------------------------------------------------------------------------------------------
# Valid files, and the corruptions applied to them
# ---------------------------------------------------------------------------------------------


@dataclass
class Doc:
    """A CSV file on its way to bytes: cells are text (raw bytes as surrogateescape characters)."""

    with_labels: bool
    header: list[str]
    rows: list[list[str]]
    quoted: set = field(default_factory=set)  # (row, column); row -1 is the header
    quote_all: bool = False
    blank_after: dict = field(default_factory=dict)  # row index -> extra lines after it
    trailing: list[str] = field(default_factory=list)
    newline: str = "\n"  # or "mixed"
    final_newline: bool = True
    bom: bool = False
    encoding: str = "utf-8"
    byte_ops: list = field(default_factory=list)  # (draw, bytes) -> bytes, after encoding

    def to_bytes(self, draw) -> bytes:
        def written(row: int, column: int, text: str) -> str:
            return f'"{text}"' if self.quote_all or (row, column) in self.quoted else text

        lines = [",".join(written(-1, column, name) for column, name in enumerate(self.header))]
        for row, cells in enumerate(self.rows):
            lines.append(",".join(written(row, column, cell) for column, cell in enumerate(cells)))
            lines.extend(self.blank_after.get(row, []))
        lines.extend(self.trailing)
        if self.newline == "mixed":
            ends = [draw(st.sampled_from(["\n", "\r\n", "\r"])) for _ in lines]
        else:
            ends = [self.newline] * len(lines)
        if not self.final_newline:
            ends[-1] = ""
        text = "".join(line + end for line, end in zip(lines, ends))
        if self.encoding == "utf-8":
            data = (UTF8_BOM if self.bom else b"") + text.encode("utf-8", errors="surrogateescape")
        else:
            data = text.encode(self.encoding, errors="surrogatepass")
        for operation in self.byte_ops:
            data = operation(draw, data)
        return data


@st.composite
def valid_docs(draw, with_labels: bool | None = None) -> Doc:
    if with_labels is None:
        with_labels = draw(st.booleans())
    count = draw(st.integers(3, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pixels = rng.integers(0, 256, (count, 784))
    pixels[rng.random((count, 784)) < 0.6] = 0  # mostly background, like the real digits
    labels = rng.integers(0, 10, count)
    rows = [([str(label)] if with_labels else []) + [str(value) for value in image]
            for label, image in zip(labels, pixels)]
    return Doc(with_labels, column_names(with_labels), rows)


def random_cell(draw, doc: Doc) -> tuple[int, int]:
    """A random cell, often the first or last of its row (the label, pixel783)."""
    row = draw(st.sampled_from([index for index, cells in enumerate(doc.rows) if cells]))
    column = draw(st.one_of(st.integers(0, len(doc.rows[row]) - 1), st.sampled_from([0, len(doc.rows[row]) - 1])))
    return row, column


# Values that are wrong (or look wrong and are not) in every way the brief and the parsers suggest.
JUNK_VALUES = [
    "", " ", "\t", " \t ", "1.5", "1.0", "0.0", "12.5", "-1", "256", "10", "9", "255", "-0", "+5", "05",
    "0" * 30 + "7", str(10**30), str(2**63 - 1), str(2**63), str(2**64 - 1), str(2**64), str(-(2**63)),
    str(-(2**63) - 1), "0x10", "0XfF", "0b1", "1_0", "1e2", "nan", "NaN", "NA", "N/A", "null", "None",
    "true", "inf", "-", "--1", "- 5", "\u0663", "\uff15", "\u00a07", "7\u00a0", " 7", "7 ", "\t7\t",
    "\v7", "\f7", "7\x00", "\x00", "abc", "pixel0", "label", "#7",
]
JUNK_TEXT = st.text(st.characters(exclude_characters=',"\r\n'), min_size=1, max_size=8)
PADDING = st.text(" \t", max_size=3)
junk = st.one_of(
    st.sampled_from(JUNK_VALUES),
    st.integers(-(10**40), 10**40).map(str),
    st.floats().map(repr),
    JUNK_TEXT,
    st.builds(lambda left, value, right: f"{left}{value}{right}", PADDING, st.integers(-300, 300), PADDING),
)
# Bytes that are not UTF-8 (latin-1 text, stray continuation or lead bytes), as surrogateescape text.
latin1 = st.one_of(
    st.text(st.characters(min_codepoint=0x80, max_codepoint=0xFF), min_size=1, max_size=4)
    .map(lambda text: text.encode("latin-1").decode("utf-8", errors="surrogateescape")),
    st.sampled_from(["caf\udce9", "7\udcb0", "\udcff\udcfe", "\udcc3", "\udced\udca0\udc80"]),
)


def junk_cells(draw, doc: Doc) -> None:
    """Replace one to three cells with junk: text, empty, floats, out of range, huge, whitespace."""
    for _ in range(draw(st.integers(1, 3)) if any(doc.rows) else 0):
        row, column = random_cell(draw, doc)
        doc.rows[row][column] = draw(junk)


def valid_variants(draw, doc: Doc) -> None:
    """Rewrite cells in ways that keep their value: padding, leading zeros, -0, quotes."""
    for _ in range(draw(st.integers(1, 4)) if any(doc.rows) else 0):
        row, column = random_cell(draw, doc)
        if not re.fullmatch("[0-9]+", doc.rows[row][column]):
            continue  # already junk
        value = int(doc.rows[row][column])
        text = draw(st.sampled_from([str(value), "0" * draw(st.integers(1, 5)) + str(value)]
                                    + (["-0", "-00"] if value == 0 else [])))
        doc.rows[row][column] = draw(PADDING) + text + draw(PADDING)
        if draw(st.booleans()):
            doc.quoted.add((row, column))


def row_width(draw, doc: Doc) -> None:
    """Delete or duplicate a cell in a row, add a trailing comma or cut the row short."""
    for _ in range(draw(st.integers(1, 2)) if any(doc.rows) else 0):
        row, column = random_cell(draw, doc)
        cells = doc.rows[row]
        change = draw(st.sampled_from(["delete", "duplicate", "trailing comma", "cut"]))
        if change == "delete":
            del cells[column]
        elif change == "duplicate":
            cells.insert(column, cells[column])
        elif change == "trailing comma":
            cells.append("")
        else:
            del cells[draw(st.integers(0, len(cells) - 1)):]
            if not cells:
                cells.append("")


def corrupt_header(draw, doc: Doc) -> None:
    """Delete, rename, swap or duplicate header columns, or give the other file's header."""
    header = doc.header
    change = draw(st.sampled_from(["delete", "rename", "swap", "duplicate", "other file", "pad"]))
    column = draw(st.integers(0, len(header) - 1))
    if change == "delete":
        del header[column]
        if draw(st.booleans()):  # the values went too: only the header says what is wrong
            for cells in doc.rows:
                del cells[column:column + 1]
    elif change == "rename":
        header[column] = draw(st.one_of(junk, latin1, st.sampled_from(PIXEL_NAMES + ["label", "Label", "PIXEL0", "id"]),
                                        st.sampled_from(header).map(str.upper)))
    elif change == "swap":
        other = draw(st.integers(0, len(header) - 1).filter(lambda index: index != column))
        header[column], header[other] = header[other], header[column]
    elif change == "duplicate":
        header.insert(column, header[column])
    elif change == "other file":
        doc.header = column_names(not doc.with_labels)
    else:  # surrounding whitespace is allowed in a name
        header[column] = draw(PADDING) + header[column] + draw(PADDING)


def drop_rows(draw, doc: Doc) -> None:
    """Drop some rows, perhaps all of them (a header-only file)."""
    if not doc.rows:
        return
    dropped = draw(st.sets(st.integers(0, len(doc.rows) - 1), min_size=1))
    doc.rows = [cells for index, cells in enumerate(doc.rows) if index not in dropped]


def truncate(draw, doc: Doc) -> None:
    """Cut the file at a random byte: anywhere, inside the header, or inside the last line."""
    def cut(draw, data: bytes) -> bytes:
        size = len(data)
        at = draw(st.one_of(st.integers(0, size), st.integers(0, min(size, 300)), st.integers(max(0, size - 60), size)))
        return data[:at]
    doc.byte_ops.append(cut)


def encodings(draw, doc: Doc) -> None:
    """UTF-16, latin-1 bytes in cells or names, or stray bytes that are not UTF-8 anywhere."""
    change = draw(st.sampled_from(["utf-16", "latin-1 cells", "stray bytes"]))
    if change == "utf-16":
        doc.encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be"]))
    elif change == "latin-1 cells":
        for _ in range(draw(st.integers(1, 2)) if any(doc.rows) else 0):
            row, column = random_cell(draw, doc)
            doc.rows[row][column] = draw(latin1)
    else:
        def stray(draw, data: bytes) -> bytes:
            at = draw(st.integers(0, len(data)))
            stray_bytes = draw(st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xe9", b"\xa0", b"\xfe\xff"]))
            return data[:at] + stray_bytes + data[at:]
        doc.byte_ops.append(stray)


def line_ends(draw, doc: Doc) -> None:
    """CRLF, CR alone, mixed line ends; with or without a newline at the end."""
    doc.newline = draw(st.sampled_from(["\r\n", "\r", "mixed", "\n"]))
    doc.final_newline = draw(st.booleans())


def byte_order_mark(draw, doc: Doc) -> None:
    doc.bom = True


def quoting(draw, doc: Doc) -> None:
    """Quote some values and names ("12"), or all of them."""
    if draw(st.booleans()):
        doc.quote_all = True
    else:
        for _ in range(draw(st.integers(1, 5))):
            if draw(st.booleans()) or not any(doc.rows):
                doc.quoted.add((-1, draw(st.integers(0, len(doc.header) - 1))))
            else:
                doc.quoted.add(random_cell(draw, doc))


def blank_lines(draw, doc: Doc) -> None:
    """Empty lines at the end or between rows (skipped), or a line of spaces or "" (refused)."""
    doc.trailing = draw(st.lists(st.sampled_from(["", "", "", " ", "\t", '""']), min_size=1, max_size=3))
    for _ in range(draw(st.integers(0, 2)) if any(doc.rows) else 0):
        doc.blank_after.setdefault(draw(st.integers(0, len(doc.rows) - 1)), []).append("")


CORRUPTIONS = {
    "junk cells": junk_cells,
    "valid variants": valid_variants,
    "row width": row_width,
    "header": corrupt_header,
    "drop rows": drop_rows,
    "truncate": truncate,
    "encoding": encodings,
    "line ends": line_ends,
    "byte order mark": byte_order_mark,
    "quoting": quoting,
    "blank lines": blank_lines,
}


@st.composite
def corrupted_files(draw, corruptions: list[str]) -> tuple[bool, bytes]:
    doc = draw(valid_docs())
    for name in corruptions:
        CORRUPTIONS[name](draw, doc)
    return doc.with_labels, doc.to_bytes(draw)


def write(tmp_path_factory, with_labels: bool, data: bytes) -> Path:
    path = fresh_dir(tmp_path_factory) / ("train.csv" if with_labels else "test.csv")
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@settings(max_examples=30, deadline=None)
@given(case=st.data())
def test_each_corruption_is_read_exactly_or_refused_in_one_line(tmp_path_factory, corruption, case):
    with_labels, data = case.draw(corrupted_files([corruption]), label="with_labels, file")
    check_against_oracle(write(tmp_path_factory, with_labels, data), with_labels)


@settings(max_examples=150, deadline=None)
@given(case=st.data())
def test_corruptions_combined_are_read_exactly_or_refused_in_one_line(tmp_path_factory, case):
    corruptions = case.draw(st.lists(st.sampled_from(list(CORRUPTIONS)), min_size=1, max_size=4, unique=True),
                            label="corruptions")
    with_labels, data = case.draw(corrupted_files(corruptions), label="with_labels, file")
    check_against_oracle(write(tmp_path_factory, with_labels, data), with_labels)


@settings(max_examples=25, deadline=None)
@given(with_labels=st.booleans(),
       data=st.sampled_from([b"", UTF8_BOM, b"\n", b"\r\n", UTF8_BOM + b"\r\n", b" ", b"\t\n", b'""\n', b"\n\n\n"]))
def test_empty_files_are_refused(tmp_path_factory, with_labels, data):
    path = write(tmp_path_factory, with_labels, data)
    assert check_against_oracle(path, with_labels).problem == "empty"


@settings(max_examples=40, deadline=None)
@given(doc=valid_docs(), cell=junk, quoted=st.booleans(), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_one_junk_value_is_named_by_line_and_column(tmp_path_factory, doc, cell, quoted, newline):
    """The commonest real fault, with the exact place the message must name when it is refused."""
    row = len(doc.rows) // 2
    column = len(doc.header) - 1
    doc.rows[row][column] = cell
    if quoted:
        doc.quoted.add((row, column))
    doc.newline = newline
    path = write(tmp_path_factory, doc.with_labels, doc.to_bytes(None))
    expected = check_against_oracle(path, doc.with_labels)
    if expected.problem is not None:
        assert (expected.problem, expected.line, expected.column) == ("cell", row + 2, "pixel783")


def _test_csv(*rows: str, end: str = "\n", final: bool = True) -> bytes:
    text = end.join([",".join(PIXEL_NAMES), *rows]) + (end if final else "")
    return text.encode("utf-8")


def _row(last: str, first: str = "0") -> str:
    return ",".join([first] + ["0"] * 782 + [last])


# What the properties above found wrong in pipeline.stages.prepare, kept as fixed cases (each file is a
# test.csv): (file, the oracle's verdict).
REGRESSIONS = {
    # pyarrow cannot read one data row without a final newline: was refused, "could not be read".
    "one row, no final newline": (_test_csv(_row("82"), final=False), None),
    "one row, no final newline, CRLF": (_test_csv(_row("82"), end="\r\n", final=False), None),
    # pyarrow reads hexadecimal: was accepted as 16.
    "hexadecimal": (_test_csv(_row("7"), _row("0x10")), "cell"),
    "hexadecimal, CR line ends": (_test_csv(_row("7"), _row("0x10"), end="\r"), "cell"),
    # int() takes these, pyarrow not: were refused without a line or column ("could not be read").
    "plus sign": (_test_csv(_row("+5")), "cell"),
    "underscore": (_test_csv(_row("1_0")), "cell"),
    "arabic-indic digit": (_test_csv(_row("\u0663")), "cell"),
    "no-break space": (_test_csv(_row("\u00a07")), "cell"),
    # a line "" was skipped as blank by the slow path, not by pyarrow: was "could not be read".
    'a line ""': (_test_csv(_row("7"), '""'), "width"),
    "a lone quote at the end": (_test_csv(_row("7"), '"', final=False), "width"),
    # Decided, not bugs: what a file cut short reads as.
    "last value cut inside its quotes": (_test_csv(_row("7"), _row('"7', first='"1"'), final=False), None),
    "byte order mark cut short": (UTF8_BOM[:2], "empty"),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_cases_the_properties_found(tmp_path_factory, name):
    data, problem = REGRESSIONS[name]
    path = write(tmp_path_factory, False, data)
    assert check_against_oracle(path, with_labels=False).problem == problem


# ---------------------------------------------------------------------------------------------
# The bundled zip, corrupted
# ---------------------------------------------------------------------------------------------

ARCHIVE_BYTES = config.SAMPLE_ARCHIVE.read_bytes()
with zipfile.ZipFile(config.SAMPLE_ARCHIVE) as _sample:
    ORIGINALS = {info.filename: _sample.read(info) for info in _sample.infolist()}
    _LOCAL_HEADERS = []
    for _info in _sample.infolist():
        _name_length, _extra_length = struct.unpack_from("<HH", ARCHIVE_BYTES, _info.header_offset + 26)
        _LOCAL_HEADERS.append((_info.header_offset, _info.header_offset + 30 + _name_length + _extra_length - 1))
CENTRAL_DIRECTORY = ARCHIVE_BYTES.find(b"PK\x01\x02")
END_RECORD = ARCHIVE_BYTES.rfind(b"PK\x05\x06")
# Where one changed byte does the most varied damage: the headers, the directory, its end record.
REGIONS = _LOCAL_HEADERS + [(CENTRAL_DIRECTORY, len(ARCHIVE_BYTES) - 1), (END_RECORD, len(ARCHIVE_BYTES) - 1)]

positions = st.one_of(st.integers(0, len(ARCHIVE_BYTES) - 1),
                      st.sampled_from(REGIONS).flatmap(lambda region: st.integers(*region)))
archive_damage = st.lists(
    st.one_of(st.tuples(st.just("xor"), positions, st.integers(1, 255)),
              st.tuples(st.just("cut"), st.integers(0, len(ARCHIVE_BYTES) - 1), st.just(0))),
    min_size=1, max_size=4)


def damaged(operations) -> bytes:
    data = bytearray(ARCHIVE_BYTES)
    for kind, position, mask in operations:
        if kind == "xor":
            if position < len(data):
                data[position] ^= mask
        else:
            del data[position:]
    return bytes(data)


# The central directory lists train.csv first: its flag bits at +8, compression method at +10.
TRAIN_ENTRY = CENTRAL_DIRECTORY
assert ARCHIVE_BYTES[TRAIN_ENTRY + 46:TRAIN_ENTRY + 55] == b"train.csv"


@settings(max_examples=80, deadline=None)
@given(operations=archive_damage)
@example(operations=[("xor", 100, 0xFF)])  # inside train.csv's deflate data: zlib.error
@example(operations=[("xor", TRAIN_ENTRY + 8, 0x01)])  # "encrypted" flag: zipfile's RuntimeError
@example(operations=[("xor", TRAIN_ENTRY + 10, 0x04)])  # deflate -> bzip2: OSError from bz2
@example(operations=[("xor", TRAIN_ENTRY + 10, 0x06)])  # deflate -> lzma: LZMAError
@example(operations=[("xor", TRAIN_ENTRY + 9, 0x08), ("xor", TRAIN_ENTRY + 46, 0x80)])  # UTF-8 name that is not
@example(operations=[("cut", len(ARCHIVE_BYTES) // 3, 0)])
def test_damaged_archive_extracts_identical_files_or_is_refused(tmp_path_factory, operations):
    folder = fresh_dir(tmp_path_factory)
    archive = folder / "digit-recognizer.zip"
    archive.write_bytes(damaged(operations))
    target = folder / "raw"
    try:
        written = extract_competition_files(archive, target)
    except PipelineError as error:
        message = str(error)
        assert "\n" not in message and "\r" not in message and str(archive) in message, message
    else:
        assert {"train.csv", "test.csv"} <= {path.name for path in written}
        assert (target / "train.csv").read_bytes() == ORIGINALS["train.csv"]
        assert (target / "test.csv").read_bytes() == ORIGINALS["test.csv"]
    # Whatever happened, each file left is complete and exactly the original: no partial file,
    # no temporary. (Members are written one by one, so a failure on a later one keeps the earlier.)
    left = sorted(path.name for path in target.iterdir()) if target.exists() else []
    assert set(left) <= set(ORIGINALS), left
    for name in left:
        assert (target / name).read_bytes() == ORIGINALS[name], f"{name} differs from the original"
