"""The report's figures, each built as a `matplotlib.figure.Figure` directly, not pyplot: no GUI backend is
ever selected (it works on a headless server) and no global figure registry keeps them alive. matplotlib is
imported only when a figure is drawn (it takes a second).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.config import IMAGE_SIZE, NUM_CLASSES
from pipeline.core.digits import class_counts
from pipeline.report.metrics import CLASSES, HISTORY_KEYS, predictions_from

if TYPE_CHECKING:
    from matplotlib.figure import Figure


DPI = 100
SAMPLES_PER_CLASS = 4
DIGIT_CMAP = "gray_r"  # dark ink on white paper, like the handwriting it was scanned from


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


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI)
    figure.clear()  # drop the artists now; the Figure is not registered anywhere else
