"""prepare: every validation rule, with the one-line message it gives, and the arrays it makes."""

import numpy as np
import pytest
from conftest import csv_text, run_in_process

from pipeline.core.errors import PipelineError
from pipeline.stages.prepare import TEST_HEADER, TRAIN_HEADER, class_counts, read_digits_csv, to_images


def write(tmp_path, text: str, name="train.csv", mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def valid_rows(count=3):
    return [[index % 10, *([index % 256] * 784)] for index in range(count)]


def refused(path, with_labels=True) -> str:
    with pytest.raises(PipelineError) as caught:
        read_digits_csv(path, with_labels=with_labels)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_valid_train_file_gives_pixels_and_labels(small_train_csv):
    pixels, labels = read_digits_csv(small_train_csv, with_labels=True)
    assert pixels.shape == (30, 784) and pixels.dtype == np.uint8
    assert class_counts(labels).tolist() == [3] * 10


def test_images_are_28x28x1_scaled_to_unit_interval():
    pixels = np.array([[0] * 783 + [255], list(range(256)) * 3 + [0] * 16], dtype=np.uint8)
    images = to_images(pixels)
    assert images.shape == (2, 28, 28, 1) and images.dtype == np.float32
    assert images[0, 27, 27, 0] == 1.0 and images[0].sum() == 1.0
    assert images[1, 0, 1, 0] == pytest.approx(1 / 255)


def test_test_file_has_no_label_column(tmp_path):
    path = write(tmp_path, csv_text([[7] * 784], TEST_HEADER), "test.csv")
    pixels, labels = read_digits_csv(path, with_labels=False)
    assert labels is None and pixels.shape == (1, 784)


def test_header_column_out_of_order_is_named(tmp_path):
    header = TRAIN_HEADER.copy()
    header[3], header[4] = header[4], header[3]
    message = refused(write(tmp_path, csv_text(valid_rows(), header)))
    assert "line 1, column 4" in message and "'pixel3'" in message and "expected 'pixel2'" in message


def test_train_header_given_for_test_file(tmp_path):
    message = refused(write(tmp_path, csv_text(valid_rows(), TRAIN_HEADER), "test.csv"), with_labels=False)
    assert "column 1" in message and "'label'" in message and "expected 'pixel0'" in message
    assert message.endswith("(the labels of train.csv? test.csv has pixel columns only)")  # review 57 D


@pytest.mark.parametrize("first, hint", [
    ("", "(an index column first? save with pandas' to_csv(..., index=False))"),
    ("Unnamed: 0", "(an index column first? save with pandas' to_csv(..., index=False))"),
    (None, "(no header line? the file starts with the line label,pixel0,...)"),
])
def test_the_commonest_wrong_headers_say_what_they_mean(tmp_path, first, hint):
    """Review 57 D: pandas' index column and a file saved without its header got no hint, as other separators did."""
    rows = valid_rows()
    if first is None:  # no header line: the first row of numbers read as one
        text = "\n".join(",".join(map(str, row)) for row in rows) + "\n"
    else:
        text = "\n".join(",".join(map(str, row)) for row in [[first, *TRAIN_HEADER]] + [[i, *row] for i, row in
                                                                                         enumerate(rows)]) + "\n"
    assert refused(write(tmp_path, text)).endswith(hint)


@pytest.mark.parametrize("separator, named", [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_separated_by_another_mark_is_one_short_line(tmp_path, separator, named):
    """The whole header is then one column: the message showed all 7 KB of it."""
    text = "\n".join(separator.join(map(str, row)) for row in [TRAIN_HEADER, *valid_rows()]) + "\n"
    message = refused(write(tmp_path, text))
    assert "line 1, column 1: header is 'label" in message
    assert f"({len(separator.join(TRAIN_HEADER)):,} characters)" in message
    assert f"expected 'label' (values separated by {named}? expected commas)" in message and len(message) < 250


def test_missing_column_in_header(tmp_path):
    message = refused(write(tmp_path, csv_text([row[:-1] for row in valid_rows()], TRAIN_HEADER[:-1])))
    assert "784 columns, expected 785" in message


def test_missing_cell_names_line_and_column(tmp_path):
    rows = valid_rows()
    rows[1][10] = ""
    message = refused(write(tmp_path, csv_text(rows, TRAIN_HEADER)))
    assert "line 3, column pixel9" in message and "missing value" in message


def test_non_integer_cell(tmp_path):
    rows = valid_rows()
    rows[2][100] = "12.5"
    message = refused(write(tmp_path, csv_text(rows, TRAIN_HEADER)))
    assert "line 4, column pixel99" in message and "'12.5' is not an integer" in message


def test_pixel_out_of_range(tmp_path):
    rows = valid_rows()
    rows[0][784] = 256
    message = refused(write(tmp_path, csv_text(rows, TRAIN_HEADER)))
    assert "line 2, column pixel783" in message and "expected 0-255" in message


def test_negative_pixel(tmp_path):
    rows = valid_rows()
    rows[0][5] = -1
    assert "line 2, column pixel4: -1 is out of range" in refused(write(tmp_path, csv_text(rows, TRAIN_HEADER)))


def test_label_out_of_range(tmp_path):
    rows = valid_rows()
    rows[1][0] = 10
    message = refused(write(tmp_path, csv_text(rows, TRAIN_HEADER)))
    assert "line 3, column label" in message and "expected 0-9" in message


def test_row_with_extra_value(tmp_path):
    lines = csv_text(valid_rows(), TRAIN_HEADER).splitlines()
    lines[2] += ",0"  # the second data row, on line 3
    message = refused(write(tmp_path, "\n".join(lines) + "\n"))
    assert "line 3: 786 values, expected 785" in message


def test_header_only_file(tmp_path):
    assert "no data rows" in refused(write(tmp_path, ",".join(TRAIN_HEADER) + "\n"))


def test_empty_file(tmp_path):
    assert "empty file" in refused(write(tmp_path, ""))


def test_not_utf8(tmp_path):
    assert "not UTF-8" in refused(write(tmp_path, b"\xff\xfe" + "label".encode("utf-16-le")))


def test_missing_file(tmp_path):
    assert "file not found" in refused(tmp_path / "nowhere.csv")


def test_bom_crlf_and_quotes_are_still_valid(tmp_path):
    rows = valid_rows()
    text = csv_text(rows, TRAIN_HEADER).replace("\n", "\r\n").replace(",5,", ',"5",')
    path = write(tmp_path, ("\ufeff" + text).encode("utf-8"))
    pixels, labels = read_digits_csv(path, with_labels=True)
    expected = np.array([row[1:] for row in rows], dtype=np.uint8)
    np.testing.assert_array_equal(pixels, expected)
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_unterminated_quote_is_named_not_rows_dropped(tmp_path):
    """A `"12` would make a CSV reader swallow every line after it into one cell (issue 9)."""
    lines = csv_text(valid_rows(6), TRAIN_HEADER).splitlines()
    cells = lines[3].split(",")
    cells[40] = '"12'
    lines[3] = ",".join(cells)
    message = refused(write(tmp_path, "\n".join(lines) + "\n"))
    assert "line 4: unterminated quote" in message


def test_unterminated_quote_far_from_the_end_is_named_too(tmp_path):
    """With a few hundred rows after it, the swallowed lines passed the csv module's field limit first: `malformed
    CSV (field larger than field limit (131072))`, which at full size (3 KB a row) is almost every row."""
    lines = csv_text(valid_rows(300), TRAIN_HEADER).splitlines()
    cells = lines[5].split(",")
    cells[300] = '"12'
    lines[5] = ",".join(cells)
    assert refused(write(tmp_path, "\n".join(lines) + "\n")).endswith(
        "line 6: unterminated quote (a value opens a \" that its line never closes)")


def test_a_value_far_too_long_without_a_quote_is_not_called_a_quote(tmp_path):
    lines = csv_text(valid_rows(2), TRAIN_HEADER).splitlines()
    path = write(tmp_path, "\n".join([*lines, "x" * 200_000]) + "\n")
    message = refused(path)
    assert "line 4: malformed CSV (field larger than field limit" in message and "quote" not in message
    closed = write(tmp_path, "\n".join([*lines, '"' + "x" * 200_000 + '",0']) + "\n", name="closed.csv")
    assert "unterminated quote" not in refused(closed)  # a long value, its quote closed


def test_a_train_csv_without_some_digit_is_refused(tmp_path):
    """A train.csv without any 7 was prepared, estimated at 1.0000 with one digit, and offered for submission.
    The error names the user's own file too: mending data/raw/'s copy was undone by the next download."""
    source = tmp_path / "source"
    source.mkdir()
    rows = [row for row in valid_rows(40) if row[0] not in (3, 7)]
    (source / "train.csv").write_text(csv_text(rows, TRAIN_HEADER))
    (source / "test.csv").write_text(csv_text([[0] * 784] * 3, TEST_HEADER))
    root = tmp_path / "project"
    assert run_in_process(root, "download", "--source", str(source)).returncode == 0
    result = run_in_process(root, "prepare")
    assert result.returncode == 1 and result.stderr == (
        f"error: {root / 'data' / 'raw' / 'train.csv'}: no image labelled 3, 7 (expected every digit 0-9, as the"
        f" competition's train.csv has thousands of each) (a copy of the file in {source}: correct it there, as the"
        " next download copies it again)\n")
    assert not (root / "data" / "prepared").exists()


def test_unterminated_quote_in_test_file_is_refused_too(tmp_path):
    lines = csv_text([[7] * 784] * 40, TEST_HEADER).splitlines()
    lines[10] = '"' + lines[10]
    path = write(tmp_path, "\n".join(lines) + "\n", "test.csv")
    assert "line 11: unterminated quote" in refused(path, with_labels=False)


def test_written_images_equal_to_images(tmp_path):
    from pipeline.stages.prepare import write_images

    pixels = np.random.default_rng(1).integers(0, 256, (10, 784), dtype=np.uint8)
    write_images(tmp_path / "images.npy", pixels, rows_per_block=3)
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), to_images(pixels))


def test_reading_needs_memory_near_the_size_of_the_pixels(tmp_path):
    """Issue 9: prepare peaked at 12 times the CSV's size. What Python and numpy allocate must stay
    near the size of the uint8 arrays returned (the full-size figure, RSS: README, faults table)."""
    import tracemalloc

    rows = np.random.default_rng(2).integers(0, 256, (3000, 785))
    rows[:, 0] %= 10
    path = tmp_path / "train.csv"
    np.savetxt(path, rows, fmt="%d", delimiter=",", header=",".join(TRAIN_HEADER), comments="")
    read_digits_csv(path, with_labels=True)  # once before measuring: first calls set up pyarrow
    tracemalloc.start()
    try:
        pixels, labels = read_digits_csv(path, with_labels=True)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    output_bytes = pixels.nbytes + labels.nbytes
    assert pixels.shape == (3000, 784) and path.stat().st_size > 3 * output_bytes
    # the returned arrays, a copy of them, and a few 1 MB blocks of the file being scanned
    assert traced_peak < 2 * output_bytes + 4e6, (f"{traced_peak / 1e6:.1f} MB traced for"
                                                 f" {output_bytes / 1e6:.1f} MB of pixels")


def test_sample_submission_ids_must_be_those_of_test_csv(tmp_path):
    """Issue 9: a sample_submission.csv that disagrees with test.csv was found only after training."""
    from pipeline.stages.prepare import check_sample_submission

    sample = tmp_path / "sample_submission.csv"
    check_sample_submission(sample, 3)  # none: nothing to check
    sample.write_text("ImageId,Label\n1,0\n2,0\n3,0\n")
    check_sample_submission(sample, 3)
    with pytest.raises(PipelineError, match=r"sample_submission.csv: 3 rows, expected 4 \(one per test image\)"):
        check_sample_submission(sample, 4)
    sample.write_text("ImageId,Label\n1,0\n3,0\n2,0\n")
    with pytest.raises(PipelineError, match=r"sample_submission.csv line 3, column ImageId: 3, expected 2"):
        check_sample_submission(sample, 3)
    sample.write_text("ImageId,Label\n1,0\nx,0\n")
    with pytest.raises(PipelineError, match=r"line 3, column ImageId: 'x' is not an integer"):
        check_sample_submission(sample, 2)
