"""The report of one training run: pictures, tables and one index.html that opens from disk.

Pure core: functions on arrays (`confusion_table`, `per_class_precision_recall`, `most_wrong`,
`pipeline.prepare.class_counts`) and figure builders that return a `matplotlib.figure.Figure`. `write_report` is
the only function that touches the disk.

Figures are built with `matplotlib.figure.Figure` directly, not pyplot: no GUI backend is ever
selected (it works on a headless server) and no global figure registry keeps them alive.

The report folder is built under a hidden temporary sibling and renamed into place when
complete, so a report that died half way never looks finished.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.config import IMAGE_SIZE, NUM_CLASSES
from pipeline.core.errors import PipelineError
from pipeline.core.estimate import describe, describe_gap, valid_estimate
from pipeline.stages.prepare import class_counts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CLASSES = np.arange(NUM_CLASSES)
DPI = 100
MOST_WRONG_LIMIT = 24
SAMPLES_PER_CLASS = 4
DIGIT_CMAP = "gray_r"  # dark ink on white paper, like the handwriting it was scanned from

# File names inside the report folder; index.html refers to them by these relative names.
SAMPLE_DIGITS_PNG = "sample_digits.png"
CLASS_COUNTS_PNG = "class_counts.png"
TRAINING_CURVES_PNG = "training_curves.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
PER_CLASS_PNG = "per_class_scores.png"
MOST_WRONG_PNG = "most_wrong.png"
CLASS_COUNTS_CSV = "class_counts.csv"
HISTORY_CSV = "history.csv"
CONFUSION_MATRIX_CSV = "confusion_matrix.csv"
PER_CLASS_CSV = "per_class_scores.csv"
MOST_WRONG_CSV = "most_wrong.csv"
RUN_JSON = "run.json"
INDEX_HTML = "index.html"

HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate")


# --------------------------------------------------------------------------- pure core: numbers


def predictions_from(probabilities: np.ndarray) -> np.ndarray:
    """The predicted class of each row: the one with the highest probability."""
    return np.asarray(probabilities).argmax(axis=1)


def confusion_table(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(10, 10) counts: row = true digit, column = predicted digit, always all ten classes."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predictions, labels=CLASSES)


def per_class_precision_recall(labels: np.ndarray, predictions: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per digit 0-9 (0 where a class is never predicted/seen)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=CLASSES, zero_division=0
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def most_wrong(labels: np.ndarray, probabilities: np.ndarray, limit: int = MOST_WRONG_LIMIT) -> np.ndarray:
    """Indices of misclassified rows, most confident wrong answer first, at most `limit`."""
    probabilities = np.asarray(probabilities)
    predictions = predictions_from(probabilities)
    wrong = np.flatnonzero(predictions != np.asarray(labels))
    confidence = probabilities[wrong, predictions[wrong]]
    # Stable sort, so ties keep their dataset order and the report is reproducible.
    order = np.argsort(-confidence, kind="stable")
    return wrong[order][:limit]


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions))) if len(labels) else 0.0


# --------------------------------------------------------------------------- pure core: figures


def _as_pictures(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 1) or (N, 28, 28) -> (N, 28, 28) for imshow."""
    images = np.asarray(images)
    return images.reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)


def _draw_digit(axes, picture: np.ndarray) -> None:
    axes.imshow(picture, cmap=DIGIT_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])


def new_figure(**options) -> Figure:
    """A matplotlib Figure, imported only when a report is drawn (it takes a second)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def _message_figure(title: str, message: str, size=(8, 3)) -> Figure:
    """A figure that says why there is nothing to draw (no history, no mistakes)."""
    figure = new_figure(figsize=size, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(title, fontsize=13)
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="0.3")
    return figure


def sample_digits_figure(
    images: np.ndarray, labels: np.ndarray, per_class: int = SAMPLES_PER_CLASS, seed: int = 0
) -> Figure:
    """A grid of training digits: one column per class, `per_class` random examples in each."""
    pictures, labels = _as_pictures(images), np.asarray(labels)
    rng = np.random.default_rng(seed)  # fixed seed: the same run draws the same samples
    figure = new_figure(figsize=(10, 1.05 * per_class + 0.9), dpi=DPI, layout="constrained")
    grid = figure.subplots(per_class, NUM_CLASSES, squeeze=False)
    for digit in CLASSES:
        members = np.flatnonzero(labels == digit)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for row in range(per_class):
            axes = grid[row, digit]
            if row < len(chosen):
                _draw_digit(axes, pictures[chosen[row]])
            else:
                axes.set_axis_off()  # a rare class with fewer examples leaves blanks
        grid[0, digit].set_title(f"label {digit}", fontsize=11)
    figure.suptitle(f"Sample training digits, {per_class} per class (column = label)", fontsize=13)
    return figure


def _annotate_bars(axes, bars, counts) -> None:
    axes.bar_label(bars, labels=[f"{count:,}" for count in counts], fontsize=8, padding=2)
    axes.margins(y=0.12)  # room above the tallest bar for its label


def class_counts_figure(train_labels: np.ndarray, val_labels: np.ndarray) -> Figure:
    """Class counts of train and validation side by side, each on its own scale.

    Separate scales because validation is usually ~10x smaller: on a shared axis its bars
    would be too short to compare; here the shapes should match if the split is stratified.
    """
    figure = new_figure(figsize=(11, 4), dpi=DPI, layout="constrained")
    panels = figure.subplots(1, 2)
    # train_labels are every row of train.csv, the held-out rows among them: say so, not "train" beside "validation".
    for axes, name, labels, color in (
        (panels[0], "every train.csv row", train_labels, "tab:blue"),
        (panels[1], "of them held out, measured on", val_labels, "tab:orange"),
    ):
        counts = class_counts(labels)
        bars = axes.bar(CLASSES, counts, color=color)
        _annotate_bars(axes, bars, counts)
        axes.set_title(f"{name}: {len(labels):,} digits", fontsize=12)
        axes.set_xlabel("digit")
        axes.set_ylabel("count")
        axes.set_xticks(CLASSES)
    figure.suptitle("How many examples of each digit", fontsize=13)
    return figure


def _epochs(values: list[float]) -> np.ndarray:
    return np.arange(1, len(values) + 1)


def _plot_series(axes, history: dict, key: str, label: str, color: str) -> bool:
    values = history.get(key) or []
    if not values:
        return False
    # Markers, so a run of one or two epochs still shows its points.
    axes.plot(_epochs(values), values, marker="o", markersize=3, color=color, label=label)
    return True


def training_curves_figure(*histories: dict[str, list[float]], names: list[str] | None = None) -> Figure:
    """Loss, accuracy and learning rate per epoch, one row of panels per model (every member of an
    ensemble); panels whose series are all missing are left out."""
    histories = histories or ({},)
    names = names or [""] * len(histories)
    panels = [
        ("Loss", "loss", [("loss", "train"), ("val_loss", "validation")]),
        ("Accuracy", "accuracy", [("accuracy", "train"), ("val_accuracy", "validation")]),
        ("Learning rate", "learning rate", [("learning_rate", "learning rate")]),
    ]
    panels = [panel for panel in panels if any(history.get(key) for history in histories for key, _ in panel[2])]
    if not panels:
        return _message_figure("Training curves", "No per-epoch history was recorded for this run.")
    epochs = max(len(history.get(key) or []) for history in histories for key in HISTORY_KEYS)
    figure = new_figure(figsize=(4 * len(panels) + 0.5, 3.6 * len(histories) + 0.4), dpi=DPI, layout="constrained")
    colors = {"train": "tab:blue", "validation": "tab:orange", "learning rate": "tab:green"}
    grid = figure.subplots(len(histories), len(panels), squeeze=False)
    for history, name, row in zip(histories, names, grid):
        for axes, (title, ylabel, series) in zip(row, panels):
            drawn = [label for key, label in series if _plot_series(axes, history, key, label, colors[label])]
            axes.set_title(f"{name}: {title}" if name else title, fontsize=12)
            axes.set_xlabel("epoch")
            axes.set_ylabel(ylabel)
            _whole_epoch_ticks(axes, epochs)
            axes.grid(alpha=0.3)
            if len(drawn) > 1:
                axes.legend()
            if title == "Learning rate" and history.get("learning_rate"):
                _use_log_scale_if_wide(axes, history["learning_rate"])
    title = "Training history" if len(histories) == 1 else f"Training history of each of the {len(histories)} models"
    figure.suptitle(title, fontsize=13)
    return figure


def _whole_epoch_ticks(axes, epochs: int) -> None:
    """Ticks on whole epochs only; a short run would otherwise get ticks like 0.95, 1.05."""
    axes.set_xlim(0.5, epochs + 0.5)
    if epochs <= 10:
        axes.set_xticks(range(1, epochs + 1))
    else:
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _use_log_scale_if_wide(axes, rates: list[float]) -> None:
    """A schedule that decays over decades is only readable on a log axis."""
    rates = np.asarray(rates, dtype=float)
    if np.all(rates > 0) and rates.max() / rates.min() > 20:
        axes.set_yscale("log")


def confusion_matrix_figure(matrix: np.ndarray) -> Figure:
    """The confusion matrix with every count written in its cell; mistakes stand out in red.

    Correct predictions dwarf the mistakes, so on one colour scale every mistake would be the
    same pale shade. The diagonal is a flat pale green instead, and only the off-diagonal
    cells are shaded, on their own scale, from white (none) to dark red (the worst confusion).
    """
    matrix = np.asarray(matrix)
    diagonal = np.eye(NUM_CLASSES, dtype=bool)
    errors = np.ma.masked_where(diagonal | (matrix == 0), matrix)  # masked cells stay white
    from matplotlib.colors import Normalize

    error_norm = Normalize(0, max(matrix[~diagonal].max(), 1))
    figure = new_figure(figsize=(7.5, 7), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(np.ma.masked_where(~diagonal, np.ones_like(matrix)), cmap="Greens", vmin=0, vmax=4)
    axes.imshow(errors, cmap="Reds", norm=error_norm)
    for row, column in np.ndindex(matrix.shape):
        _annotate_cell(axes, int(matrix[row, column]), row, column,
                       dark=row != column and error_norm(matrix[row, column]) > 0.6)
    axes.set_xticks(CLASSES)
    axes.set_yticks(CLASSES)
    axes.set_xlabel("predicted digit", fontsize=12)
    axes.set_ylabel("true digit", fontsize=12)
    axes.xaxis.set_label_position("top")
    axes.xaxis.tick_top()
    total, correct = int(matrix.sum()), int(np.trace(matrix))
    axes.set_title(
        f"Validation confusion matrix: {correct:,} of {total:,} correct, {total - correct:,} wrong",
        fontsize=13, pad=12,
    )
    return figure


def _annotate_cell(axes, count: int, row: int, column: int, dark: bool) -> None:
    if count == 0:
        axes.text(column, row, "0", ha="center", va="center", color="0.8", fontsize=8)
        return
    # White text on dark cells, black on light ones, so every count stays legible.
    axes.text(column, row, f"{count:,}", ha="center", va="center", fontsize=10,
              color="white" if dark else "black", fontweight="bold" if row == column else "normal")


def per_class_scores_figure(scores: dict[str, np.ndarray]) -> Figure:
    """Precision and recall per digit as dots, zoomed on the range where they actually differ."""
    figure = new_figure(figsize=(9, 4), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    offset = 0.12  # side by side, so equal values do not hide each other
    axes.plot(CLASSES - offset, scores["precision"], "o", markersize=8, label="precision", color="tab:blue")
    axes.plot(CLASSES + offset, scores["recall"], "s", markersize=8, label="recall", color="tab:orange")
    lowest = float(min(np.min(scores["precision"]), np.min(scores["recall"])))
    axes.set_ylim(max(0.0, math.floor((lowest - 0.02) * 20) / 20), 1.005)
    axes.set_xticks(CLASSES)
    axes.set_xlabel("digit")
    axes.set_ylabel("score")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    axes.set_title("Validation precision and recall per digit", fontsize=13)
    return figure


def most_wrong_figure(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, indices: np.ndarray, columns: int = 8,
    csv_lines: np.ndarray | None = None,
) -> Figure:
    """The given validation digits, each titled with its train.csv line (else its rank), true and
    predicted label and confidence."""
    if len(indices) == 0:
        return _message_figure("Most confident mistakes", "The model got every validation digit right.")
    pictures = _as_pictures(images)
    predictions = predictions_from(probabilities)
    rows = math.ceil(len(indices) / columns)
    figure = new_figure(figsize=(12, 1.75 * rows + 0.6), dpi=DPI, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for position, axes in enumerate(grid.flat):
        if position >= len(indices):
            axes.set_axis_off()
            continue
        index = indices[position]
        predicted = predictions[index]
        _draw_digit(axes, pictures[index])
        confidence = probabilities[index, predicted]
        name = f"line {csv_lines[index]}" if csv_lines is not None else f"#{position + 1}"
        title = f"{name}  true {labels[index]} → {predicted}\n{confidence:.1%} sure"
        axes.set_title(title, fontsize=9)
    figure.suptitle(
        f"The {len(indices)} validation digits the model got most confidently wrong", fontsize=13
    )
    return figure


# --------------------------------------------------------------------------- pure core: HTML


def _text(value) -> str:
    """Every value shown in the page goes through here: formatted, then HTML-escaped."""
    return html.escape(_format_value(value), quote=True)


def _format_value(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def html_table(header: list, rows: list[list], row_classes: list[list[str]] | None = None) -> str:
    """A plain <table>; `row_classes` optionally gives a CSS class per cell."""
    head = "".join(f"<th>{_text(cell)}</th>" for cell in header)
    body = []
    for row_number, row in enumerate(rows):
        classes = row_classes[row_number] if row_classes else [""] * len(row)
        cells = "".join(
            f'<td class="{html.escape(css)}">{_text(cell)}</td>' if css else f"<td>{_text(cell)}</td>"
            for cell, css in zip(row, classes)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_value_table(mapping: dict) -> str:
    return html_table(["name", "value"], [[key, value] for key, value in mapping.items()])


def durations_table(durations: dict) -> str:
    """Seconds per stage plus their total; a value that is not a number is shown as it is."""
    numbers = {stage: _as_number(seconds) for stage, seconds in durations.items()}
    rows = [
        [stage, f"{numbers[stage]:,.1f}" if numbers[stage] is not None else seconds]
        for stage, seconds in durations.items()
    ]
    rows.append(["total", f"{sum(value for value in numbers.values() if value is not None):,.1f}"])
    return html_table(["stage", "seconds"], rows)


def _as_number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def per_class_rows(scores: dict[str, np.ndarray]) -> list[list]:
    return [
        [digit, f"{scores['precision'][digit]:.4f}", f"{scores['recall'][digit]:.4f}",
         f"{scores['f1'][digit]:.4f}", int(scores["support"][digit])]
        for digit in CLASSES
    ]


def most_wrong_rows(labels, probabilities, indices, csv_lines=None) -> list[list]:
    """One row per mistake; csv_lines: each validation digit's line in train.csv (the header is line 1)."""
    predictions = predictions_from(probabilities)
    return [
        [rank + 1, int(csv_lines[index]) if csv_lines is not None else int(index), int(labels[index]),
         int(predictions[index]),
         f"{probabilities[index, predictions[index]]:.4f}", f"{probabilities[index, labels[index]]:.4f}"]
        for rank, index in enumerate(indices)
    ]


def history_rows(*histories: dict, names: list[str] | None = None) -> tuple[list[str], list[list]]:
    """Epoch by epoch; with more than one model, a first column names the model of each row."""
    keys = [key for key in HISTORY_KEYS if any(history.get(key) for history in histories)]
    several = len(histories) > 1
    rows = []
    for history, name in zip(histories, names or [""] * len(histories)):
        epochs = max((len(history.get(key) or []) for key in keys), default=0)
        for epoch in range(epochs):
            values = [history[key][epoch] if epoch < len(history.get(key) or []) else "" for key in keys]
            rows.append(([name] if several else []) + [epoch + 1] + values)
    return (["model"] if several else []) + ["epoch", *keys], rows


PER_CLASS_HEADER = ["digit", "precision", "recall", "f1", "support"]
MOST_WRONG_HEADER = ["rank", "train.csv line", "true", "predicted", "confidence", "probability of true"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1250px; padding: 1em 2em 3em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; }
.headline { font-size: 1.3em; margin: 0.5em 0 1em; }
.columns { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
td.correct { background: #dff0d8; font-weight: bold; }
td.wrong { background: #f8d7da; }
td.zero { color: #bbb; }
td.label, td.total { background: #f7f7f7; font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
.banner { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.6em 1em; font-weight: bold; }
"""


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _figure(file_name: str, alt: str) -> str:
    return f'<p><img src="{html.escape(file_name)}" alt="{html.escape(alt)}"></p>'


def _csv_link(file_name: str) -> str:
    return f'<p class="note">Also as <a href="{html.escape(file_name)}">{html.escape(file_name)}</a>.</p>'


def _run_id(run: dict) -> str:
    for key in ("run_id", "id", "name"):
        if run.get(key) is not None:
            return _format_value(run[key])
    return "unnamed run"


TRAINING_BELOW_VALIDATION = (
    "Why training accuracy sits below validation accuracy: it is measured on the training batches as they are"
    " learnt, on augmented digits (rotated, zoomed, shifted) with dropout switching units off, while validation"
    " digits are seen plain, with every unit on. A gap that way round is expected; the other way round, overfitting.")

SAMPLE_BANNER = ("This run used the bundled sample (2,400 train digits, 600 test digits), not the competition's"
                 " data: a trial of the pipeline. Its numbers say little about the leaderboard and Kaggle cannot"
                 " score its submission. For the real data: README, 'Kaggle credentials', then make all.")


def leaderboard_text(run: dict) -> str:
    """What Kaggle said of the run's latest submission, in words."""
    leaderboard = run.get("leaderboard")
    if not leaderboard:
        if run.get("source") == "sample":
            return "cannot be submitted (the sample)"
        return "not submitted yet (make submit)"
    if leaderboard.get("status") == "COMPLETE":
        scores = [f"{leaderboard['public_score']} public"]
        if leaderboard.get("private_score"):
            scores.append(f"{leaderboard['private_score']} private")
        gap = describe_gap(run)
        return f"{', '.join(scores)} (submission {leaderboard['ref']}){f'; {gap}' if gap else ''}"
    if leaderboard.get("status") == "ERROR":
        return f"Kaggle could not score submission {leaderboard['ref']}: {leaderboard.get('error', '')}"
    return f"submission {leaderboard.get('ref')} not scored yet (make submissions)"


def summary_rows(run: dict) -> list[list]:
    """The run in a few lines of words: no raw lists, no absolute paths."""
    parts = run.get("parts") or []
    source = run.get("source")
    return [
        ["run", _run_id(run)],
        ["date", run.get("date", "?")],
        ["data", "the bundled sample" if source == "sample" else source or "?"],
        ["preset", run.get("preset", "?")],
        ["models", f"{len(parts)}: {', '.join(part['name'] for part in parts)}" if parts else "?"],
        *([["blend of", (run.get("params") or {}).get("blend_of", "?")]] if run.get("blend") else []),
        ["estimated accuracy", describe(valid_estimate(run.get("estimate")), missing="none", unit="digits")],
        ["leaderboard", leaderboard_text(run)],
        ["submission", Path(run["submission"]).name if run.get("submission") else "none yet"],
    ]


def parts_rows(parts: list[dict]) -> list[list]:
    return [[part["name"], part["seed"], part["train_images"], part.get("validation_images", "none (all rows)"),
             f"{part['accuracy']:.4f}" if "accuracy" in part else "-"] for part in parts]


PARTS_HEADER = ["model", "seed", "train digits", "digits it never saw", "accuracy on those"]


def comparison_rows(run: dict, comparisons: list[tuple[str, dict]]) -> list[list]:
    """This run beside others on the same data: estimate, leaderboard, and the difference in estimate."""
    own = (valid_estimate(run.get("estimate")) or {}).get("accuracy")
    rows = []
    for label, other in [("this run", run), *comparisons]:
        estimate = valid_estimate(other.get("estimate")) or {}
        accuracy = estimate.get("accuracy")
        difference = f"{(own - accuracy) * 100:+.2f} points" if own is not None and accuracy is not None else "-"
        rows.append([label, _run_id(other), other.get("preset", "?"), other.get("params", {}).get("architecture", "?"),
                     describe(estimate or None, missing="none", unit="digits"), leaderboard_text(other),
                     "-" if other is run else difference])
    return rows


COMPARISON_HEADER = ["", "run", "preset", "model", "estimated accuracy", "leaderboard", "this run's estimate is"]


def _run_sections(run: dict, comparisons: list[tuple[str, dict]] | None) -> str:
    """Summary, comparison, parameters, split, models and timings as readable tables."""
    params = {key: value for key, value in (run.get("params") or {}).items() if not isinstance(value, (list, dict))}
    parts = [f"<h3>Summary</h3>{html_table(['', ''], summary_rows(run))}"]
    if comparisons is not None:
        has_baseline = run.get("preset") == "baseline" or any(label == "baseline" for label, _ in comparisons)
        no_baseline = '<p class="note">No baseline run on the same data yet: make all PRESET=baseline.</p>'
        note = "" if has_baseline else no_baseline

        parts.append(f"<h3>Compared with earlier runs on the same data</h3>"
                     f"{html_table(COMPARISON_HEADER, comparison_rows(run, comparisons))}{note}")
    parts.append(f"<h3>Training parameters</h3>{key_value_table(params)}")
    if run.get("split"):
        parts.append(f"<h3>Split</h3>{key_value_table(run['split'])}")
    if run.get("parts"):
        parts.append(f"<h3>Models</h3>{html_table(PARTS_HEADER, parts_rows(run['parts']))}")
    if run.get("durations_s"):
        parts.append(f"<h3>Timings</h3>{durations_table(run['durations_s'])}")
    return f'<div class="columns">{"".join(f"<div>{part}</div>" for part in parts)}</div>'


def render_index(
    run: dict, *, train_size: int, val_size: int, val_accuracy: float, matrix: np.ndarray,
    scores: dict, history: dict, wrong_rows: list[list], train_counts: np.ndarray, val_counts: np.ndarray,
    histories: list[dict] | None = None, model_names: list[str] | None = None,
    comparisons: list[tuple[str, dict]] | None = None,
) -> str:
    """The whole index.html as a string; images and CSVs are referenced by relative file name."""
    title = f"Training run {_run_id(run)}"
    history_header, history_table_rows = history_rows(*(histories or [history]), names=model_names)
    wrong = int(matrix.sum() - np.trace(matrix))
    sections = [
        _section("run", "Run", _run_sections(run, comparisons)),
        _section("data", "Data", "".join([
            _figure(SAMPLE_DIGITS_PNG, "grid of sample training digits, one column per label"),
            _figure(CLASS_COUNTS_PNG, "bar charts of class counts in train and validation"),
            html_table(["digit", "every train.csv row", "of them held out"],
                       [[digit, train_counts[digit], val_counts[digit]] for digit in CLASSES]
                       + [["total", train_size, val_size]]),
            _csv_link(CLASS_COUNTS_CSV),
        ])),
        _section("training", "Training", "".join([
            _figure(TRAINING_CURVES_PNG, "loss, accuracy and learning rate per epoch"),
            f'<p class="note">{TRAINING_BELOW_VALIDATION}</p>',
            html_table(history_header, history_table_rows) if history_table_rows
            else '<p class="note">No per-epoch history was recorded.</p>',
            _csv_link(HISTORY_CSV) if history_table_rows else "",
        ])),
        _section("validation", "Validation", "".join([
            _figure(CONFUSION_MATRIX_PNG, "validation confusion matrix with counts"),  # drawn once, counts in it
            '<p class="note">Rows: true digit; columns: predicted digit.</p>', _csv_link(CONFUSION_MATRIX_CSV),
            '<div class="columns"><div>',
            _figure(PER_CLASS_PNG, "precision and recall per digit"),
            "</div><div><h3>Precision and recall per digit</h3>",
            html_table(PER_CLASS_HEADER, per_class_rows(scores)), _csv_link(PER_CLASS_CSV),
            "</div></div>",
        ])),
        _section("mistakes", "Most confident mistakes", "".join([
            f'<p>{wrong:,} of {val_size:,} validation digits are misclassified; '
            f'the {len(wrong_rows)} shown are those the model was most sure about. '
            'Some are mislabelled in the data set itself.</p>',
            _figure(MOST_WRONG_PNG, "validation digits the model got most confidently wrong"),
            html_table(MOST_WRONG_HEADER, wrong_rows) if wrong_rows else "",
            _csv_link(MOST_WRONG_CSV),
        ])),
    ]
    nav = " ".join(
        f'<a href="#{anchor}">{name}</a>'
        for anchor, name in [("run", "Run"), ("data", "Data"), ("training", "Training"),
                             ("validation", "Validation"), ("mistakes", "Mistakes")]
    )
    return "\n".join([
        *_page_head(title, run),
        _headline(run, val_accuracy, val_size, wrong, train_size),
        f"<nav>{nav}</nav>",
        *sections,
        f'<p class="note">Raw run record: <a href="{RUN_JSON}">{RUN_JSON}</a>.</p>',
        "</body></html>\n",
    ])


def _headline(run: dict, val_accuracy: float, val_size: int, wrong: int, train_size: int) -> str:
    """The estimate nothing was chosen on, with its interval and kind; the page's figures are on the same rows."""
    estimate = valid_estimate(run.get("estimate"))
    if not estimate:
        return (f'<p class="headline">Validation accuracy <strong>{val_accuracy:.2%}</strong> '
                f"({val_size - wrong:,} of {val_size:,} correct) &middot; {train_size:,} train digits</p>")
    kind = ("cross-validation: every train digit predicted by the fold model that never saw it"
            if estimate["kind"] == "cross-validation" else
            "holdout: digits kept aside from training, last epoch's weights, nothing chosen on them")
    return (f'<p class="headline">Estimated accuracy <strong>{estimate["accuracy"]:.2%}</strong> '
            f'(95 % interval {estimate["low"]:.2%} to {estimate["high"]:.2%}; '
            f'{estimate["images"] - estimate["errors"]:,} of {estimate["images"]:,} correct) &middot; '
            f"{html.escape(kind)}<br>Leaderboard: <strong>{_text(leaderboard_text(run))}</strong></p>")


# --------------------------------------------------------------------------- writer


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


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI)
    figure.clear()  # drop the artists now; the Figure is not registered anywhere else


def _write_csv(path: Path, header: list, rows: list[list]) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows([[_format_value(cell) for cell in row] for row in rows])


def _page_data(run, train_labels, val_labels, val_probabilities, history, histories=None, model_names=None,
               val_rows=None, comparisons=None) -> dict:
    """Everything the page shows besides its pictures: cheap (no drawing), so a new score can redo the page alone."""
    predictions = predictions_from(val_probabilities)
    matrix = confusion_table(val_labels, predictions)
    wrong_indices = most_wrong(val_labels, val_probabilities, MOST_WRONG_LIMIT)
    # train.csv line of each validation digit: its row index, after the header line (line 1)
    csv_lines = None if val_rows is None else np.asarray(val_rows) + 2
    return dict(
        run=run, train_size=len(train_labels), val_size=len(val_labels), val_accuracy=accuracy(val_labels, predictions),
        matrix=matrix, scores=per_class_precision_recall(val_labels, predictions), history=history,
        wrong_rows=most_wrong_rows(val_labels, val_probabilities, wrong_indices, csv_lines),
        train_counts=class_counts(train_labels), val_counts=class_counts(val_labels),
        histories=histories or [history], model_names=model_names, comparisons=comparisons,
        wrong_indices=wrong_indices, csv_lines=csv_lines,
    )


def _page(data: dict) -> str:
    return render_index(**{name: value for name, value in data.items() if name not in ("wrong_indices", "csv_lines")})


def _write_contents(folder: Path, run, train_images, train_labels, val_images, val_labels,
                    val_probabilities, history, histories=None, model_names=None, val_rows=None,
                    comparisons=None, log=None) -> None:
    data = _page_data(run, train_labels, val_labels, val_probabilities, history, histories, model_names, val_rows,
                      comparisons)
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
    (folder / RUN_JSON).write_text(json.dumps(run, indent=2, sort_keys=True, default=_json_value) + "\n")
    (folder / INDEX_HTML).write_text(_page(data), encoding="utf-8")


def _json_value(value):
    """numpy scalars and arrays as plain JSON numbers and lists; anything else as text."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def write_report(
    out_dir: Path, *, run: dict, train_images: np.ndarray, train_labels: np.ndarray,
    val_images: np.ndarray, val_labels: np.ndarray, val_probabilities: np.ndarray,
    history: dict[str, list[float]] | None = None, histories: list[dict] | None = None,
    model_names: list[str] | None = None, val_rows: np.ndarray | None = None,
    comparisons: list[tuple[str, dict]] | None = None, log=None,
) -> Path:
    """Writes PNGs + tables + index.html into out_dir; returns the path of index.html.

    Everything is built in a hidden sibling folder (pipeline.cache.atomic_path) that replaces out_dir
    only once complete. If anything fails, the temporary folder is removed and out_dir is untouched:
    absent if there was none, or the previous complete report. histories and model_names: every
    model's curves (history alone: one model's); val_rows: the validation digits' rows in train.csv;
    comparisons: (label, run) pairs shown beside this run; log: where a line goes after each picture.
    """
    from pipeline.core.cache import atomic_path

    out_dir = Path(out_dir)
    train_images, val_images = np.asarray(train_images), np.asarray(val_images)
    train_labels, val_labels = np.asarray(train_labels).astype(int), np.asarray(val_labels).astype(int)
    val_probabilities = np.asarray(val_probabilities, dtype=float)
    _check_inputs(train_images, train_labels, val_images, val_labels, val_probabilities)

    with atomic_path(out_dir) as staging:
        staging.mkdir()  # not mkdtemp, which makes it private (0700): the report keeps normal permissions
        _write_contents(staging, dict(run), train_images, train_labels, val_images, val_labels,
                        val_probabilities, dict(history or {}), histories, model_names, val_rows, comparisons, log)
    return out_dir / INDEX_HTML


# ----------------------------------------------------------------------------------------- the stage

def compared_runs(run: dict, all_runs: list[dict]) -> list[tuple[str, dict]]:
    """The best earlier run and the best baseline run on the same data (all_runs: best estimate first)."""
    earlier = [other for other in all_runs
               if other.get("id") != run.get("id") and other.get("source") == run.get("source")
               and valid_estimate(other.get("estimate")) and other.get("date", "") <= run.get("date", "")]
    compared = [("best earlier run", earlier[0])] if earlier else []
    baselines = [other for other in earlier if other.get("preset") == "baseline"]
    if baselines and run.get("preset") != "baseline":
        compared.append(("baseline", baselines[0]))
    return compared


def training_data_matches(paths, run: dict) -> bool:
    """Whether data/prepared holds the digits the run was trained on (their hashes, as train recorded them)."""
    from pipeline.core.cache import path_digest

    recorded = run.get("data") or {}
    return bool(recorded) and all(path_digest(paths.prepared / name) == digest for name, digest in recorded.items())


def define(paths, console, run_id: str | None = None):
    """The report stage for a run: the latest trained one, or any earlier one whose files are still there."""
    from pipeline.core import runs
    from pipeline.core.cache import absolute_path, load_record, relative_name
    from pipeline.core.stage import Definition, require

    latest = (load_record("train") or {}).get("extra", {}).get("run_id")
    if run_id is None or run_id == latest:
        run_id = require("train", "python -m pipeline train", needs=("run_id",))["extra"]["run_id"]
    run = runs.read_run(paths, run_id)
    run_dir = paths.run_dir(run_id)
    if run.get("blend") and not run.get("estimate"):
        return _summary_only_definition(paths, run)
    needed = [run_dir / "out_of_fold.npz", run_dir / "history.json"]
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise PipelineError(f"--run {run_id}: {', '.join(missing)} no longer in {relative_name(run_dir)};"
                            " retrain it to report on it")
    if run_id != latest and not training_data_matches(paths, run):
        raise PipelineError(f"--run {run_id}: data/prepared no longer holds the digits it was trained on (source"
                            f" {run.get('source')}); prepare that data again (make download prepare SOURCE=...)")
    comparisons = compared_runs(run, runs.list_runs(paths))
    out_dir = paths.reports / run_id
    inputs = [*needed, paths.train_images, paths.train_labels]
    # What the page shows besides the files: a new score or a better run elsewhere redoes the report.
    params = {"run_id": run_id, "leaderboard": run.get("leaderboard"),
              "compared": [(label, other.get("id"), other.get("leaderboard")) for label, other in comparisons]}

    def work():
        images = np.load(paths.train_images, mmap_mode="r")
        inputs = _stored_inputs(paths, run)
        rows = inputs["val_rows"]
        from pipeline.core.progress import on_terminal

        index = write_report(out_dir, run=run, train_images=images, val_images=images[rows],
                             comparisons=comparisons, log=console.say if on_terminal() else None, **inputs)
        runs.update_run(paths, run_id, report=relative_name(index))
        return [out_dir], {"index": relative_name(index)}

    def after_restore(record):
        runs.update_run(paths, run_id, report=record["extra"]["index"])

    return Definition("report", params, inputs, work,
                      lambda record: f"open {absolute_path(record['extra']['index'])} in a browser", after_restore)


def _page_head(title: str, run: dict) -> list[str]:
    """The lines every page starts with: the HTML head, the title and the sample's banner."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="banner">{html.escape(SAMPLE_BANNER)}</p>' if run.get("source") == "sample" else "",
    ]


def render_summary_page(run: dict) -> str:
    """The page of a run with no out-of-fold predictions to draw (a blend of runs on different splits)."""
    title = f"Training run {_run_id(run)}"
    return "\n".join([
        *_page_head(title, run),
        f'<p class="headline">No estimate: {_text(run.get("no_estimate") or "none recorded")}.<br>'
        f"Leaderboard: <strong>{_text(leaderboard_text(run))}</strong></p>",
        _section("run", "Run", _run_sections(run, None)),
        "</body></html>\n",
    ])


def _summary_only_definition(paths, run: dict):
    from pipeline.core import runs
    from pipeline.core.cache import absolute_path, atomic_path, relative_name
    from pipeline.core.stage import Definition

    out_dir = paths.reports / run["id"]

    def work():
        with atomic_path(out_dir) as staging:
            staging.mkdir()
            (staging / INDEX_HTML).write_text(render_summary_page(run), encoding="utf-8")
            (staging / RUN_JSON).write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
        index = out_dir / INDEX_HTML
        runs.update_run(paths, run["id"], report=relative_name(index))
        return [out_dir], {"index": relative_name(index)}

    def after_restore(record):
        runs.update_run(paths, run["id"], report=record["extra"]["index"])

    params = {"run_id": run["id"], "leaderboard": run.get("leaderboard")}
    return Definition("report", params, [], work,
                      lambda record: f"open {absolute_path(record['extra']['index'])} in a browser", after_restore)


def _stored_inputs(paths, run: dict) -> dict:
    """The run's out-of-fold predictions and histories, as write_report takes them: each measured digit
    predicted only by models that never saw it (predicting them again with every model would let the
    all-rows model mark its own homework)."""
    run_dir = paths.run_dir(run["id"])
    labels = np.load(paths.train_labels)
    with np.load(run_dir / "out_of_fold.npz") as out_of_fold:
        rows, probabilities = out_of_fold["rows"], out_of_fold["probabilities"]
    histories = json.loads((run_dir / "history.json").read_text())
    names = [part["name"] for part in run.get("parts", [])]
    return dict(train_labels=labels, val_labels=labels[rows], val_probabilities=probabilities, histories=histories,
                model_names=names if len(names) == len(histories) else None, val_rows=rows)


def refresh_page(paths, run_id: str) -> bool:
    """Write the run's report page again (its pictures stay: no score changes them), after a new score;
    False when the run has no report, or its data is no longer in data/prepared."""
    from pipeline.core import runs
    from pipeline.core.cache import atomic_path

    run = runs.read_run(paths, run_id)
    index = paths.reports / run_id / INDEX_HTML
    if not index.is_file():
        return False
    if run.get("blend") and not run.get("estimate"):
        page = render_summary_page(run)
    else:
        if not training_data_matches(paths, run):
            return False
        inputs = _stored_inputs(paths, run)
        inputs["val_labels"] = inputs["val_labels"].astype(int)
        inputs["train_labels"] = inputs["train_labels"].astype(int)
        data = _page_data(run, history={}, comparisons=compared_runs(run, runs.list_runs(paths)), **inputs)
        page = _page(data)
    with atomic_path(index) as temporary:
        temporary.write_text(page, encoding="utf-8")
    with atomic_path(index.with_name(RUN_JSON)) as temporary:
        temporary.write_text(json.dumps(run, indent=2, sort_keys=True, default=_json_value) + "\n")
    return True
