"""The run report: numbers on hand-made arrays, and a full report written from synthetic data."""

import csv
import struct
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_fscore_support

from pipeline.core.errors import PipelineError
from pipeline.core.estimate import Estimate
from pipeline.core.cache import path_digest
from pipeline.report import figures, metrics, writer
from pipeline.report import page as html_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = [
    html_page.SAMPLE_DIGITS_PNG, html_page.CLASS_COUNTS_PNG, html_page.TRAINING_CURVES_PNG,
    html_page.CONFUSION_MATRIX_PNG, html_page.PER_CLASS_PNG, html_page.MOST_WRONG_PNG,
]


def synthetic_run(seed: int = 0, train_size: int = 200, val_size: int = 120) -> dict:
    """Random images and a model that is right about 70% of the time, with varied confidence."""
    rng = np.random.default_rng(seed)
    val_labels = rng.integers(0, 10, val_size)
    logits = rng.normal(0.0, 1.0, (val_size, 10))
    answers = np.where(rng.random(val_size) < 0.7, val_labels, rng.integers(0, 10, val_size))
    logits[np.arange(val_size), answers] += rng.uniform(0.5, 6.0, val_size)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    epochs = 5
    return dict(
        run={
            "run_id": "test-run",
            "date": "2025-01-01T00:00:00",
            "source": "sample",
            "params": {"epochs": epochs, "learning_rate": 0.001, "note": "<script>alert('x')</script>"},
            "durations_s": {"train": 12.5, "predict": 0.5},
            "val_accuracy": float(np.mean(probabilities.argmax(axis=1) == val_labels)),
            "model_path": "data/models/model.keras",
        },
        train_images=rng.random((train_size, 28, 28, 1), dtype=np.float32),
        train_labels=rng.integers(0, 10, train_size),
        val_images=rng.random((val_size, 28, 28, 1), dtype=np.float32),
        val_labels=val_labels,
        val_probabilities=probabilities,
        history={
            "loss": list(np.linspace(1.0, 0.2, epochs)),
            "val_loss": list(np.linspace(1.1, 0.3, epochs)),
            "accuracy": list(np.linspace(0.6, 0.95, epochs)),
            "val_accuracy": list(np.linspace(0.55, 0.9, epochs)),
            "learning_rate": list(1e-3 * 0.5 ** np.arange(epochs)),
        },
    )


@pytest.fixture(scope="module")
def inputs() -> dict:
    return synthetic_run()


@pytest.fixture(scope="module")
def written(inputs, tmp_path_factory) -> Path:
    """One full report shared by the tests that only read it (writing one takes ~2 s).

    It is written over an older report, so the tests also see that the old folder was replaced.
    """
    out_dir = tmp_path_factory.mktemp("reports") / "report"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("from an older run")
    index = writer.write_report(out_dir, **inputs)
    assert index == out_dir / "index.html"
    return out_dir


class LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids, self.tags = [], set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href"):
                self.links.append(value)
            if name == "id":
                self.ids.add(value)


def parse_index(out_dir: Path) -> LinkCollector:
    collector = LinkCollector()
    collector.feed((out_dir / "index.html").read_text(encoding="utf-8"))
    return collector


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------- the written report


@pytest.mark.parametrize("name", PICTURES)
def test_every_picture_is_a_png_of_readable_size(written, name):
    width, height = png_size(written / name)
    assert 600 <= width <= 1400, f"{name} is {width}px wide"
    assert 250 <= height <= 1200, f"{name} is {height}px high"


def test_html_references_only_files_in_the_report_folder(written):
    page = parse_index(written)
    assert page.links
    for link in page.links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, f"external reference {link!r}"
        if link.startswith("#"):
            assert link[1:] in page.ids, f"in-page link {link!r} has no target"
            continue
        assert not link.startswith("/") and ".." not in link, f"{link!r} is not a sibling file"
        assert (written / parts.path).is_file(), f"{link!r} does not exist in the report folder"


def test_html_shows_every_picture_and_loads_nothing_external(written):
    page = parse_index(written)
    assert set(PICTURES) <= set(page.links)
    assert "script" not in page.tags and "link" not in page.tags


def test_html_escapes_run_parameters(written):
    text = (written / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;" in text


def test_report_replaces_the_old_folder_and_leaves_no_temporary_one(written):
    assert sorted(path.name for path in written.iterdir()) == sorted([
        *PICTURES, "index.html", "run.json", html_page.CLASS_COUNTS_CSV, html_page.HISTORY_CSV,
        html_page.CONFUSION_MATRIX_CSV, html_page.PER_CLASS_CSV, html_page.MOST_WRONG_CSV,
    ])
    assert [path.name for path in written.parent.iterdir()] == ["report"]  # no .tmp-* or .old-*


def test_confusion_csv_sums_to_validation_size(written, inputs):
    with open(written / html_page.CONFUSION_MATRIX_CSV, newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    matrix = np.array([[int(cell) for cell in row[1:]] for row in rows])
    correct = np.sum(inputs["val_probabilities"].argmax(axis=1) == inputs["val_labels"])
    assert matrix.sum() == len(inputs["val_labels"])
    assert np.trace(matrix) == correct


def test_most_wrong_csv_lists_at_most_the_limit(written, inputs):
    with open(written / html_page.MOST_WRONG_CSV, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == metrics.MOST_WRONG_LIMIT  # the synthetic model makes more mistakes than that
    assert all(row["true"] != row["predicted"] for row in rows)


# --------------------------------------------------------------------------- atomic writing


def test_failing_write_leaves_no_report(inputs, tmp_path, monkeypatch):
    def broken_figure(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(writer, "confusion_matrix_figure", broken_figure)
    out_dir = tmp_path / "report"
    with pytest.raises(RuntimeError, match="figure failed"):
        writer.write_report(out_dir, **inputs)
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor a temporary sibling


def test_failing_write_keeps_the_previous_complete_report(inputs, tmp_path, monkeypatch):
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    (out_dir / "index.html").write_text("previous report")
    monkeypatch.setattr(writer, "sample_digits_figure", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.write_report(out_dir, **inputs)
    assert (out_dir / "index.html").read_text() == "previous report"
    assert [path.name for path in tmp_path.iterdir()] == ["report"]


def test_mismatched_probabilities_are_a_pipeline_error(inputs, tmp_path):
    broken = dict(inputs, val_probabilities=inputs["val_probabilities"][:-1])
    with pytest.raises(PipelineError, match="probabilities"):
        writer.write_report(tmp_path / "report", **broken)
    assert not (tmp_path / "report").exists()


# --------------------------------------------------------------------------- pure core


def test_confusion_table_counts_every_prediction_once():
    labels = np.array([0, 0, 1, 2, 2, 9])
    predictions = np.array([0, 1, 1, 2, 0, 9])
    matrix = metrics.confusion_table(labels, predictions)
    assert matrix.shape == (10, 10)
    assert matrix.sum() == len(labels)
    assert np.trace(matrix) == np.sum(labels == predictions)
    assert matrix[0, 1] == 1 and matrix[2, 0] == 1  # row = true, column = predicted


def test_precision_recall_match_hand_computation_and_sklearn():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0, 2])
    scores = metrics.per_class_precision_recall(labels, predictions)
    # class 0: predicted at 0 and 5, right once; class 1: predicted 3 times, right twice; ...
    np.testing.assert_allclose(scores["precision"][:3], [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(scores["recall"][:3], [1 / 2, 1.0, 2 / 3])
    np.testing.assert_array_equal(scores["support"], [2, 2, 3, 0, 0, 0, 0, 0, 0, 0])
    assert np.all(scores["precision"][3:] == 0)  # never seen, never predicted: 0, no warning
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, predictions, labels=range(10), zero_division=0
    )
    np.testing.assert_allclose(scores["precision"], precision)
    np.testing.assert_allclose(scores["recall"], recall)


def test_most_wrong_on_a_hand_made_example():
    labels = np.array([0, 1, 2, 3])
    probabilities = np.full((4, 10), 0.01)
    probabilities[0, 0] = 0.91  # right
    probabilities[1, 7] = 0.60  # wrong, 60% sure
    probabilities[2, 5] = 0.95  # wrong, 95% sure
    probabilities[3, 8] = 0.80  # wrong, 80% sure
    np.testing.assert_array_equal(metrics.most_wrong(labels, probabilities, limit=24), [2, 3, 1])
    np.testing.assert_array_equal(metrics.most_wrong(labels, probabilities, limit=2), [2, 3])


def test_most_wrong_returns_only_mistakes_by_decreasing_confidence(inputs):
    labels, probabilities = inputs["val_labels"], inputs["val_probabilities"]
    indices = metrics.most_wrong(labels, probabilities, limit=24)
    predictions = probabilities.argmax(axis=1)
    assert 0 < len(indices) <= 24
    assert np.all(predictions[indices] != labels[indices])
    confidence = probabilities[indices, predictions[indices]]
    assert np.all(np.diff(confidence) <= 0)
    # Nothing left out was more confident than the last one shown.
    others = np.setdiff1d(np.flatnonzero(predictions != labels), indices)
    assert np.all(probabilities[others, predictions[others]] <= confidence[-1])


def test_most_wrong_is_empty_for_a_perfect_model():
    labels = np.arange(10)
    assert len(metrics.most_wrong(labels, np.eye(10))) == 0


def test_training_curves_draw_only_what_history_has():
    assert len(figures.training_curves_figure({"loss": [0.5, 0.3]}).axes) == 1
    full = figures.training_curves_figure({"loss": [1.0], "accuracy": [0.5], "learning_rate": [0.1]})
    assert [axes.get_title() for axes in full.axes] == ["Loss", "Accuracy", "Learning rate"]
    empty = figures.training_curves_figure({})
    assert isinstance(empty, Figure) and len(empty.axes) == 1  # a panel that says so


def test_sample_digits_tolerate_a_class_with_few_examples():
    others = [digit for digit in range(10) if digit != 3]
    labels = np.concatenate([np.repeat(others, 4), [3]])  # four of each digit, but one "3"
    images = np.zeros((len(labels), 28, 28, 1), dtype=np.float32)
    figure = figures.sample_digits_figure(images, labels, per_class=4)
    assert sum(axes.get_visible() and axes.axison for axes in figure.axes) == 4 * 9 + 1


# --------------------------------------------------------------------------- what the page says of a run


def full_run(**changes) -> dict:
    """A run.json as train, predict and submit leave it."""
    run = {
        "id": "20260102-090000-cnn", "date": "2026-01-02 09:00:00", "source": "kaggle:digit-recognizer",
        "preset": "default", "params": {"architecture": "cnn", "epochs": 18, "seed": 42},
        "split": {"folds": 1, "seed": 7, "val_fraction": 0.1},
        "estimate": {"accuracy": 0.9952, "low": 0.9945, "high": 0.9958, "kind": "holdout", "images": 4200,
                     "errors": 20},
        "parts": [{"name": "member-0", "seed": 42, "train_images": 37800, "validation_images": 4200,
                   "accuracy": 0.9952},
                  {"name": "all-rows", "seed": 43, "train_images": 42000}],
        "models": ["/home/someone/project/data/models/x/member-0.keras"],
        "submission": "/home/someone/project/submissions/20260102-090000-cnn.csv",
        "leaderboard": {"ref": 1001, "status": "COMPLETE", "public_score": "0.99543", "private_score": "0.99500"},
        "durations_s": {"train": 100.0},
    }
    return {**run, **changes}


def written_page(inputs, tmp_path, run, **options) -> str:
    index = writer.write_report(tmp_path / "report", **{**inputs, "run": run}, **options)
    return index.read_text(encoding="utf-8")


def test_the_summary_is_words_not_raw_lists_or_absolute_paths(inputs, tmp_path):
    page = written_page(inputs, tmp_path, full_run())
    assert "/home/someone" not in page
    assert "[0." not in page and "[{" not in page  # no raw list of floats or of records
    assert "0.99543 public, 0.99500 private" in page  # the leaderboard score
    assert "20260102-090000-cnn.csv" in page and "member-0" in page and "all-rows" in page
    assert "bundled sample" not in page


def test_a_run_on_the_sample_gets_a_banner(inputs, tmp_path):
    page = written_page(inputs, tmp_path, full_run(source="sample", leaderboard=None))
    assert 'class="banner"' in page and "bundled sample" in page and "cannot be submitted" in page


def test_mistakes_are_named_by_their_train_csv_line(inputs, tmp_path):
    val_rows = np.arange(len(inputs["val_labels"])) * 3 + 5  # validation digits spread over train.csv
    writer.write_report(tmp_path / "report", **inputs, val_rows=val_rows)
    with open(tmp_path / "report" / html_page.MOST_WRONG_CSV) as stream:
        rows = list(csv.DictReader(stream))
    wrong = metrics.most_wrong(inputs["val_labels"], inputs["val_probabilities"])
    assert [int(row["train.csv line"]) for row in rows] == list(val_rows[wrong] + 2)  # header is line 1


def test_an_ensemble_shows_the_curves_of_every_model(inputs):
    history = inputs["history"]
    figure = figures.training_curves_figure(history, {"loss": history["loss"]}, names=["fold-0", "all-rows"])
    titles = [axes.get_title() for axes in figure.axes]
    assert "fold-0: Loss" in titles and "all-rows: Loss" in titles and "fold-0: Learning rate" in titles
    header, rows = html_page.history_rows(history, {"loss": history["loss"]}, names=["fold-0", "all-rows"])
    assert header[0] == "model" and {row[0] for row in rows} == {"fold-0", "all-rows"}


def test_the_run_is_compared_with_the_best_earlier_run_and_the_baseline(inputs, tmp_path):
    run = full_run()
    baseline = full_run(id="20260101-080000-mlp", date="2026-01-01 08:00:00", preset="baseline",
                        estimate={**run["estimate"], "accuracy": 0.9702}, leaderboard=None)
    better = full_run(id="20260101-100000-cnn", date="2026-01-01 10:00:00",
                      estimate={**run["estimate"], "accuracy": 0.9960})
    later = full_run(id="20260103-100000-cnn", date="2026-01-03 10:00:00",
                     estimate={**run["estimate"], "accuracy": 0.999})
    elsewhere = full_run(id="20260101-110000-cnn", date="2026-01-01 11:00:00", source="sample",
                         estimate={**run["estimate"], "accuracy": 0.9990})
    other_rows = full_run(id="20260101-120000-cnn", date="2026-01-01 12:00:00", data={"train_images.npy": "b" * 16},
                          estimate={**run["estimate"], "accuracy": 0.9995})  # the same source label, other digits
    compared = writer.compared_runs({**run, "data": {"train_images.npy": "a" * 16}},
                                    [later, elsewhere, other_rows, better, run, baseline])  # best first, as list_runs
    assert compared == [("best earlier run", better), ("baseline", baseline)]
    page = written_page(inputs, tmp_path, run, comparisons=compared)
    assert "-0.08 points" in page and "+2.50 points" in page
    lonely = written_page(inputs, tmp_path, run, comparisons=[])
    assert "make all PRESET=baseline" in lonely


def test_a_run_with_a_wrong_shaped_estimate_is_reported_as_without_one(inputs, tmp_path):
    """Issue 21: `{"estimate": "n/a"}` in a run.json, or an estimate without `low`, ended in a traceback."""
    without_low = {"accuracy": 0.99, "high": 0.995, "kind": "holdout", "images": 4200, "errors": 42}
    for estimate in ("n/a", without_low, [0.99], {**without_low, "low": "0.98"}):
        run = full_run(estimate=estimate)
        other = full_run(id="20260101-100000-cnn", date="2026-01-01 10:00:00", estimate=estimate)
        assert writer.compared_runs(run, [other, run]) == []  # a run without an estimate is not compared by one
        assert Estimate.from_json(estimate) is None and html_page.describe(estimate, missing="none") == "none"
    page = written_page(inputs, tmp_path, full_run(estimate=without_low),
                        comparisons=[("best earlier run", full_run(id="20260101-100000-cnn", estimate="n/a"))])
    assert "Validation accuracy" in page and "Estimated accuracy" not in page


def test_the_page_names_the_rows_it_counts_explains_the_accuracy_gap_and_draws_the_confusion_once(written, inputs):
    page = (written / "index.html").read_text()
    assert "every train.csv row" in page and "of them held out" in page
    assert "augmented digits" in page and "dropout" in page  # why training accuracy sits below validation
    assert page.count("confusion_matrix.png") == 1 and "true \\ predicted" not in page  # the picture, no table too
    figure = figures.class_counts_figure(inputs["train_labels"], inputs["val_labels"])
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[0].startswith("every train.csv row") and titles[1].startswith("of them held out")


def test_a_scored_run_shows_the_gap_to_its_estimate_and_whether_it_is_inside_the_interval():
    run = {"estimate": {"accuracy": 0.9952, "low": 0.9945, "high": 0.9958, "kind": "holdout", "images": 4200,
                        "errors": 20},
           "leaderboard": {"ref": 7, "status": "COMPLETE", "public_score": "0.99543", "private_score": ""}}
    assert html_page.leaderboard_text(run) == ("0.99543 public (submission 7); +0.02 points from the estimate,"
                                                 " inside its 95 % interval")
    run["leaderboard"]["public_score"] = "0.99100"
    assert "-0.42 points from the estimate, outside its 95 % interval" in html_page.leaderboard_text(run)


@pytest.mark.parametrize("rows, expected", [
    (500, "cannot be submitted (500 test rows, the competition has 28,000)"),
    (28000, "not submitted yet (make submit)"),
])
def test_the_page_of_a_run_kaggle_cannot_score_says_so_instead_of_make_submit(tmp_path, rows, expected):
    """Review 57 H: a run on the user's own data (500 test rows) said "not submitted yet (make submit)", and
    `make submit` refused the file."""
    submission = tmp_path / "run.csv"
    submission.write_text("ImageId,Label\n" + "".join(f"{row},1\n" for row in range(1, rows + 1)))
    run = {"id": "20260101-100000-small", "source": "folder", "submission": str(submission)}
    assert html_page.leaderboard_text(run) == expected


def test_the_train_csv_line_of_a_digit_counts_the_blank_lines_prepare_skips(tmp_path):
    """The page said row + 2: after blank lines in train.csv (which prepare accepts) every line it named held
    another digit."""
    train_csv = tmp_path / "train.csv"
    train_csv.write_bytes(b"label,pixel0\r\n1,0\r\n2,0\r\n\r\n\n3,0\r\n4,0\r\n")
    assert writer.train_csv_lines(train_csv, np.array([0, 1, 2, 3])).tolist() == [2, 3, 6, 7]
    assert writer.train_csv_lines(train_csv, np.array([4])) is None  # more rows than the file: changed since
    assert writer.train_csv_lines(tmp_path / "gone.csv", np.array([0])) is None
    old_mac = tmp_path / "old-mac.csv"  # line ends of \r alone, which prepare reads too
    old_mac.write_bytes(b"label,pixel0\r1,0\r\r2,0\r")
    assert writer.train_csv_lines(old_mac, np.array([0, 1])).tolist() == [2, 4]
    # not the train.csv prepare read (replaced since): its lines would name other digits
    assert writer.train_csv_lines(train_csv, np.array([0]), prepared_from="a" * 64) is None
    assert writer.train_csv_lines(train_csv, np.array([0]), prepared_from=path_digest(train_csv)).tolist() == [2]


@pytest.mark.parametrize("params, said", [
    ({"architecture": "mlp", "augmentation": 0.0, "dropout": 0.4}, None),  # baseline: the note said both
    ({"architecture": "cnn", "augmentation": 1.0, "dropout": 0.4}, "on augmented digits (rotated, zoomed, shifted)"
                                                                   " with dropout switching units off,"),
    ({"architecture": "cnn", "augmentation": 0.0, "dropout": 0.4}, "learnt, with dropout switching units off, while"),
    ({"architecture": "mlp", "augmentation": 0.0, "mixup": 0.2}, "learnt, on augmented digits, while"),
    ({"architecture": "mlp", "augmentation": 0.0, "alternate": "cnn", "dropout": 0.4}, "with dropout switching"),
    ({"blend_of": "1 x A + 1 x B"}, None),  # a blend trained nothing
    ({"architecture": "mlp", "augmentation": 1.0, "dropout": 0.4},
     "learnt, on augmented digits (rotated, zoomed, shifted), while validation digits are seen plain."),
])
def test_why_training_sits_below_validation_says_only_what_the_run_did(params, said):
    """The note named augmentation and dropout for every run: `baseline`'s mlp has neither."""
    note = html_page.training_below_validation(params)
    assert (note == "") if said is None else (said in note), note


def test_a_ctrl_c_in_a_weakref_callback_while_drawing_still_stops_the_report(inputs, tmp_path, monkeypatch):
    """A Ctrl-C that landed in one of matplotlib's weakref callbacks was only printed by Python (`Exception ignored
    in ...`), and the report, then the command, went on to exit 0."""
    import os
    import signal
    import weakref

    real_figure = figures.class_counts_figure

    def drawn_while_ctrl_c_lands_in_a_weakref_callback(*arguments):
        class Thing:
            pass

        thing = Thing()
        reference = weakref.ref(thing, lambda _: (os.kill(os.getpid(), signal.SIGINT), sum(range(10_000))))
        del thing  # the callback runs here: the SIGINT's handler too
        assert reference() is None
        return real_figure(*arguments)

    monkeypatch.setattr(writer, "class_counts_figure", drawn_while_ctrl_c_lands_in_a_weakref_callback)
    out_dir = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt):
        writer.write_report(out_dir, **inputs)
    assert not out_dir.exists()  # nothing half-written kept
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_blends_page_is_titled_a_blend_and_its_network_named_so_beside_others():
    """A blend's page said "Training run", and `?` for its model in the comparison table."""
    blend = {"id": "20261207-140946-blend", "preset": "blend", "source": "sample", "no_estimate": "another split",
             "params": {"blend_of": "0.5 x a + 0.5 x b"}, "blend": {"runs": ["a", "b"], "weights": [0.5, 0.5]}}
    page = html_page.render_summary_page(blend)
    assert "<title>Blend 20261207-140946-blend</title>" in page and "Training run" not in page
    trained = {"id": "a", "preset": "quick", "params": {"architecture": "small"}}
    rows = html_page.comparison_rows(html_page.Run.of(trained), [("blend", html_page.Run.of(blend))])
    assert [row[3] for row in rows] == ["small", "blend"]
