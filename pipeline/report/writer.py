"""Writing the report of one training run: its figures (pipeline.report.figures), its tables as CSV and the
index.html that opens from disk (pipeline.report.page), made of its numbers (pipeline.report.metrics).
`write_report` is the only function that writes a whole report; `refresh_page` writes the page again
after a new score, keeping the pictures.

The report folder is built under a hidden temporary sibling and renamed into place when
complete, so a report that died half way never looks finished.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pipeline.core import runs
from pipeline.core.cache import atomic_path, load_record, path_digest, relative_name
from pipeline.core.config import IMAGE_SIZE, NUM_CLASSES
from pipeline.core.ctrl_c import ctrl_c_after_the_block
from pipeline.core.digits import class_counts
from pipeline.core.errors import PipelineError
from pipeline.core.records import Run, SubmissionRecord
from pipeline.report.figures import (
    _save,
    class_counts_figure,
    confusion_matrix_figure,
    most_wrong_figure,
    per_class_scores_figure,
    sample_digits_figure,
    training_curves_figure,
)
from pipeline.report.metrics import (
    CLASSES,
    MOST_WRONG_LIMIT,
    accuracy,
    confusion_table,
    most_wrong,
    per_class_precision_recall,
    predictions_from,
)
from pipeline.report.page import (
    CLASS_COUNTS_CSV,
    CLASS_COUNTS_PNG,
    CONFUSION_MATRIX_CSV,
    CONFUSION_MATRIX_PNG,
    HISTORY_CSV,
    INDEX_HTML,
    MOST_WRONG_CSV,
    MOST_WRONG_HEADER,
    MOST_WRONG_PNG,
    PER_CLASS_CSV,
    PER_CLASS_HEADER,
    PER_CLASS_PNG,
    RUN_JSON,
    SAMPLE_DIGITS_PNG,
    TRAINING_CURVES_PNG,
    _format_value,
    history_rows,
    most_wrong_rows,
    per_class_rows,
    render_index,
    render_summary_page,
)


def _check_inputs(train_images, train_labels, val_images, val_labels, val_probabilities) -> None:
    """One-line errors naming the array and what was expected, instead of a matplotlib traceback."""
    datasets = (("train", train_images, train_labels), ("validation", val_images, val_labels))
    for name, images, labels in datasets:
        if images.ndim not in (3, 4) or images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
            raise PipelineError(f"{name} images have shape {images.shape}, expected (N, 28, 28, 1)")
        if len(images) != len(labels):
            raise PipelineError(f"{name} has {len(images)} images but {len(labels)} labels")
    if val_probabilities.shape != (len(val_labels), NUM_CLASSES):
        raise PipelineError(
            f"validation probabilities have shape {val_probabilities.shape}, "
            f"expected ({len(val_labels)}, {NUM_CLASSES})"
        )


def _write_csv(path: Path, header: list, rows: list[list]) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows([[_format_value(cell) for cell in row] for row in rows])


def _page_data(run, train_labels, val_labels, val_probabilities, history, histories=None, model_names=None,
               val_rows=None, comparisons=None, csv_lines=None, predicted=None) -> dict:
    """Everything the page shows besides its pictures: cheap (no drawing), so a new score can redo the page alone."""
    predictions = predictions_from(val_probabilities)
    matrix = confusion_table(val_labels, predictions)
    wrong_indices = most_wrong(val_labels, val_probabilities, MOST_WRONG_LIMIT)
    if csv_lines is None and val_rows is not None:  # train.csv line of each validation digit: after the header line
        csv_lines = np.asarray(val_rows) + 2
    return dict(
        run=run, train_size=len(train_labels), val_size=len(val_labels), val_accuracy=accuracy(val_labels, predictions),
        matrix=matrix, scores=per_class_precision_recall(val_labels, predictions), history=history,
        wrong_rows=most_wrong_rows(val_labels, val_probabilities, wrong_indices, csv_lines),
        train_counts=class_counts(train_labels), val_counts=class_counts(val_labels),
        histories=histories or [history], model_names=model_names, comparisons=comparisons, predicted=predicted,
        wrong_indices=wrong_indices, csv_lines=csv_lines,
    )


def _page(data: dict) -> str:
    return render_index(**{name: value for name, value in data.items() if name not in ("wrong_indices", "csv_lines")})


def _write_contents(folder: Path, run, train_images, train_labels, val_images, val_labels,
                    val_probabilities, history, histories=None, model_names=None, val_rows=None,
                    comparisons=None, log=None, csv_lines=None, predicted=None) -> None:
    data = _page_data(run, train_labels, val_labels, val_probabilities, history, histories, model_names, val_rows,
                      comparisons, csv_lines, predicted)
    matrix, scores, histories = data["matrix"], data["scores"], data["histories"]
    train_counts, val_counts = data["train_counts"], data["val_counts"]

    pictures = [
        (SAMPLE_DIGITS_PNG, lambda: sample_digits_figure(train_images, train_labels)),
        (CLASS_COUNTS_PNG, lambda: class_counts_figure(train_labels, val_labels)),
        (TRAINING_CURVES_PNG, lambda: training_curves_figure(*histories, names=model_names)),
        (CONFUSION_MATRIX_PNG, lambda: confusion_matrix_figure(matrix)),
        (PER_CLASS_PNG, lambda: per_class_scores_figure(scores)),
        (MOST_WRONG_PNG, lambda: most_wrong_figure(val_images, val_labels, val_probabilities, data["wrong_indices"],
                                                   csv_lines=data["csv_lines"])),
    ]
    for number, (name, draw) in enumerate(pictures, start=1):
        with ctrl_c_after_the_block():  # not lost in matplotlib's weakref callbacks: the report stops between pictures
            _save(draw(), folder / name)
        if log is not None:
            log(f"report: picture {number} of {len(pictures)} ({name})")

    _write_csv(folder / CLASS_COUNTS_CSV, ["digit", "train", "validation"],
               [[digit, train_counts[digit], val_counts[digit]] for digit in CLASSES])
    _write_csv(folder / HISTORY_CSV, *history_rows(*histories, names=model_names))
    _write_csv(folder / CONFUSION_MATRIX_CSV, ["true", *CLASSES],
               [[digit, *matrix[digit]] for digit in CLASSES])
    _write_csv(folder / PER_CLASS_CSV, PER_CLASS_HEADER, per_class_rows(scores))
    _write_csv(folder / MOST_WRONG_CSV, MOST_WRONG_HEADER, data["wrong_rows"])
    (folder / RUN_JSON).write_text(json.dumps(run.to_json(), indent=2, sort_keys=True, default=_json_value) + "\n")
    (folder / INDEX_HTML).write_text(_page(data), encoding="utf-8")


def _json_value(value):
    """numpy scalars and arrays as plain JSON numbers and lists; anything else as text."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def write_report(
    out_dir: Path, *, run: Run | dict, train_images: np.ndarray, train_labels: np.ndarray,
    val_images: np.ndarray, val_labels: np.ndarray, val_probabilities: np.ndarray,
    history: dict[str, list[float]] | None = None, histories: list[dict] | None = None,
    model_names: list[str] | None = None, val_rows: np.ndarray | None = None,
    comparisons: list[tuple[str, Run | dict]] | None = None, log=None, csv_lines: np.ndarray | None = None,
    predicted: SubmissionRecord | None = None,
) -> Path:
    """Writes PNGs + tables + index.html into out_dir; returns the path of index.html.

    Everything is built in a hidden sibling folder (pipeline.core.cache.atomic_path) that replaces out_dir
    only once complete. If anything fails, the temporary folder is removed and out_dir is untouched:
    absent if there was none, or the previous complete report. histories and model_names: every
    model's curves (history alone: one model's); val_rows: the validation digits' rows in train.csv;
    comparisons: (label, run) pairs shown beside this run; log: where a line goes after each picture;
    csv_lines: each validation digit's line in train.csv (default: its row + 2, as without blank lines);
    predicted: predict's record of the run's submission (how it was predicted).
    """
    out_dir = Path(out_dir)
    train_images, val_images = np.asarray(train_images), np.asarray(val_images)
    train_labels, val_labels = np.asarray(train_labels).astype(int), np.asarray(val_labels).astype(int)
    val_probabilities = np.asarray(val_probabilities, dtype=float)
    _check_inputs(train_images, train_labels, val_images, val_labels, val_probabilities)

    with atomic_path(out_dir) as staging:
        staging.mkdir()  # not mkdtemp, which makes it private (0700): the report keeps normal permissions
        _write_contents(staging, Run.of(run), train_images, train_labels, val_images, val_labels,
                        val_probabilities, dict(history or {}), histories, model_names, val_rows, comparisons, log,
                        csv_lines, predicted)
    return out_dir / INDEX_HTML


def compared_runs(run: Run | dict, all_runs: list[Run | dict]) -> list[tuple[str, Run | dict]]:
    """The best earlier run and the best baseline run on the same data (all_runs: best estimate first), as given.
    The same data: the same digits, by the hashes train recorded (runs from before them: the same source)."""
    this = Run.of(run)

    def same_data(other: Run) -> bool:
        return other.data == this.data if this.data and other.data else other.source == this.source

    def comparable(other: Run) -> bool:
        return other.id != this.id and same_data(other) and other.estimate is not None and other.date <= this.date

    earlier = [other for other in all_runs if comparable(Run.of(other))]
    compared = [("best earlier run", earlier[0])] if earlier else []
    baselines = [other for other in earlier if Run.of(other).preset == "baseline"]
    if baselines and this.preset != "baseline":
        compared.append(("baseline", baselines[0]))
    return compared


def training_data_matches(paths, run: Run) -> bool:
    """Whether data/prepared holds the digits the run was trained on (their hashes, as train recorded them)."""
    recorded = run.data
    return bool(recorded) and all(path_digest(paths.prepared / name) == digest for name, digest in recorded.items())


def _stored_inputs(paths, run: Run) -> dict:
    """The run's out-of-fold predictions and histories, as write_report takes them: each measured digit
    predicted only by models that never saw it (predicting them again with every model would let the
    all-rows model mark its own homework)."""
    labels = np.load(paths.train_labels)
    rows, probabilities = runs.read_out_of_fold(paths.out_of_fold(run.id))
    histories = runs.read_histories(paths.history_json(run.id))
    names = [part.name for part in run.parts]
    return dict(train_labels=labels, val_labels=labels[rows], val_probabilities=probabilities, histories=histories,
                model_names=names if len(names) == len(histories) else None, val_rows=rows,
                csv_lines=train_csv_lines(paths.raw_train, rows, _prepared_from(paths)))


def _prepared_from(paths) -> str | None:
    """The digest of the train.csv prepare last read, from its record."""
    record = load_record("prepare") or {}
    return record.get("key", {}).get("inputs", {}).get(relative_name(paths.raw_train))


def train_csv_lines(path: Path, rows: np.ndarray, prepared_from: str | None = None) -> np.ndarray | None:
    """The line of each row (0: the first digit) in train.csv, counting the blank lines prepare skips, whatever its
    line ends (LF, CRLF or CR alone); None when the file is gone, is not the one prepare read (prepared_from: its
    digest then), or is shorter than the rows, and the page says row + 2."""
    if not path.is_file() or (prepared_from is not None and path_digest(path) != prepared_from):
        return None
    with open(path, encoding="utf-8-sig", errors="replace") as stream:  # universal newlines, as the csv reader's
        next(stream, None)  # the header, line 1
        lines = np.array([number for number, line in enumerate(stream, start=2) if line.strip()], dtype=np.int64)
    rows = np.asarray(rows)
    return lines[rows] if len(rows) and len(lines) > rows.max() else None


def refresh_page(paths, run_id: str) -> bool:
    """Write the run's report page again (its pictures stay: no score changes them), after a new score;
    False when the run has no report, or its data is no longer in data/prepared."""
    run = runs.read_run(paths, run_id)
    index = paths.report_index(run_id)
    if not index.is_file():
        return False
    predicted = runs.read_submission_record(paths, run_id)
    if run.blend and not run.estimate:
        page = render_summary_page(run, predicted)
    else:
        if not training_data_matches(paths, run):
            return False
        inputs = _stored_inputs(paths, run)
        inputs["val_labels"] = inputs["val_labels"].astype(int)
        inputs["train_labels"] = inputs["train_labels"].astype(int)
        data = _page_data(run, history={}, comparisons=compared_runs(run, runs.list_runs(paths)), predicted=predicted,
                          **inputs)
        page = _page(data)
    with atomic_path(index) as temporary:
        temporary.write_text(page, encoding="utf-8")
    with atomic_path(index.with_name(RUN_JSON)) as temporary:
        temporary.write_text(json.dumps(run.to_json(), indent=2, sort_keys=True, default=_json_value) + "\n")
    return True


def page_follows_submission(paths, run_id: str) -> bool:
    """After predict wrote another submission of the run (`predict --tta`, `--final-weight`): the run's page, where
    it names another file (and that file's score), written again, its pictures kept; False where the run has no page,
    or its page names this file already."""
    try:
        on_page = json.loads((paths.report_dir(run_id) / RUN_JSON).read_text()).get("submission")
    except (OSError, ValueError, AttributeError):
        return False
    return on_page != runs.read_run(paths, run_id).submission and refresh_page(paths, run_id)
