"""The report's HTML: tables, sections and the page (index.html) that shows a run's figures and numbers,
or, for a run with nothing to draw, its summary page. Pure: text in, text out.
"""

from __future__ import annotations

import html
import json

import numpy as np

from pipeline.core import config
from pipeline.core.config import Paths, network_name
from pipeline.core.estimate import describe
from pipeline.core.records import PartSummary, Run, SubmissionRecord
from pipeline.report.leaderboard import leaderboard_text, prediction_words, submission_name
from pipeline.report.metrics import CLASSES, HISTORY_KEYS, predictions_from

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
RUN_JSON = Paths.RUN_JSON  # a copy of the run's summary, as the report saw it
INDEX_HTML = Paths.INDEX_HTML


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


def _run_id(run: Run) -> str:
    if run.id:
        return run.id
    for key in ("run_id", "name"):  # a run.json of another shape
        if run.other.get(key) is not None:
            return _format_value(run.other[key])
    return "unnamed run"


def training_below_validation(params: dict) -> str:
    """Why training accuracy sits below validation accuracy, by the run's own settings ('' when nothing of the kind
    is on: the mlp of `baseline` has no dropout, and its preset no augmentation); one not recorded: the default's."""
    if "blend_of" in params:  # a blend trained nothing: its runs' pages say how they trained
        return ""
    on = {name for name in ("augmentation", "elastic", "cutout", "thickness", "shear", "mixup", "dropout")
          if (params.get(name, config.DEFAULT[name]) or 0) > 0}
    affine, augmented = "augmentation" in on, bool(on - {"dropout"})
    networks = {params.get(name, config.DEFAULT[name]) for name in ("architecture", "alternate")} - {"none", "mlp"}
    dropout = "dropout" in on and bool(networks)  # the mlp has none
    if not (augmented or dropout):
        return ""
    digits = "on augmented digits" + (" (rotated, zoomed, shifted)" if affine else "")
    how = " ".join(part for part in (digits if augmented else "",
                                     "with dropout switching units off" if dropout else "") if part)
    return ("Why training accuracy sits below validation accuracy: it is measured on the training batches as they are"
            f" learnt, {how}, while validation digits are seen plain{', with every unit on' if dropout else ''}. A gap"
            " that way round is expected; the other way round, overfitting.")


SAMPLE_BANNER = ("This run used the bundled sample (2,400 train digits, 600 test digits), not the competition's"
                 " data: a trial of the pipeline. Its numbers say little about the leaderboard and Kaggle cannot"
                 " score its submission. For the real data: README, 'Kaggle credentials', then"
                 f" {config.how_to('make all', 'digit-recognizer all')}.")


def summary_rows(run: Run, predicted: SubmissionRecord | None = None) -> list[list]:
    """The run in a few lines of words: no raw lists, no absolute paths; predicted: predict's record of the
    submission (with TTA or not, the weights), which need not be as the run was trained."""
    made = prediction_words(predicted)
    parts, source = run.parts, run.source
    return [
        ["run", _run_id(run)],
        ["date", run.date or "?"],
        ["data", "the bundled sample" if source == "sample" else source or "?"],
        ["preset", run.preset or "?"],
        ["models", f"{len(parts)}: {', '.join(part.name for part in parts)}" if parts else "?"],
        *([["blend of", run.params.get("blend_of", "?")]] if run.blend else []),
        ["estimated accuracy", describe(run.estimate, missing="none", unit="digits")],
        ["leaderboard", leaderboard_text(run)],
        ["submission", submission_name(run.submission) + (f" ({made})" if made and run.submission else "")],
    ]


def parts_rows(parts: tuple[PartSummary, ...]) -> list[list]:
    return [[part.name, _network(part), part.seed, _train_digits(part),
             part.validation_images if part.validation_images is not None else "none (all rows)",
             f"{part.accuracy:.4f}" if part.accuracy is not None else "-"] for part in parts]


def _train_digits(part: PartSummary):
    """Its training images, and what --pseudo-label and --rare-looks made of them."""
    notes = []
    if part.pseudo_labelled_images:
        notes.append(f"{part.pseudo_labelled_images} of them pseudo-labelled test images")
    if part.repeated_images:
        notes.append(f"+{part.repeated_images} rare looks again an epoch")
    if part.epochs is not None:
        notes.append(f"{part.epochs} epochs")
    return f"{part.train_images} ({', '.join(notes)})" if notes else part.train_images


def _network(part: PartSummary) -> str:
    """The part's network, as `--model` and `--width` name it ("-" in runs recorded before parts named it)."""
    if part.architecture is None:
        return "-"
    return network_name(part.architecture, part.width if part.width is not None else 1, bool(part.deskew))


PARTS_HEADER = ["model", "network", "seed", "train digits", "digits it never saw", "accuracy on those"]


def comparison_rows(run: Run, comparisons: list[tuple[str, Run]]) -> list[list]:
    """This run beside others on the same data: estimate, leaderboard, and the difference in estimate."""
    rows = []
    for label, other in [("this run", run), *comparisons]:
        difference = (f"{(run.estimate.accuracy - other.estimate.accuracy) * 100:+.2f} points"
                      if run.estimate and other.estimate else "-")
        rows.append([label, _run_id(other), other.preset or "?",
                     "blend" if other.blend else other.params.get("architecture", "?"),
                     describe(other.estimate, missing="none", unit="digits"), leaderboard_text(other),
                     "-" if other is run else difference])
    return rows


COMPARISON_HEADER = ["", "run", "preset", "model", "estimated accuracy", "leaderboard", "this run's estimate is"]


def _run_sections(run: Run, comparisons: list[tuple[str, Run]] | None, predicted: SubmissionRecord | None) -> str:
    """Summary, comparison, parameters, split, models and timings as readable tables."""
    params = {key: value for key, value in run.params.items() if not isinstance(value, (list, dict))}
    parts = [f"<h3>Summary</h3>{html_table(['', ''], summary_rows(run, predicted))}"]
    if comparisons is not None:
        has_baseline = run.preset == "baseline" or any(label == "baseline" for label, _ in comparisons)
        no_baseline = ('<p class="note">No baseline run on the same data yet:'
                       f' {config.how_to("make all PRESET=baseline", "digit-recognizer all --preset baseline")}.</p>')
        note = "" if has_baseline else no_baseline

        parts.append(f"<h3>Compared with earlier runs on the same data</h3>"
                     f"{html_table(COMPARISON_HEADER, comparison_rows(run, comparisons))}{note}")
    parts.append(f"<h3>Training parameters</h3>{key_value_table(params)}")
    if run.split:
        parts.append(f"<h3>Split</h3>{key_value_table(run.split)}")
    if run.parts:
        parts.append(f"<h3>Models</h3>{html_table(PARTS_HEADER, parts_rows(run.parts))}")
    if run.durations_s:
        parts.append(f"<h3>Timings</h3>{durations_table(run.durations_s)}")
    return f'<div class="columns">{"".join(f"<div>{part}</div>" for part in parts)}</div>'


def render_index(
    run: Run | dict, *, train_size: int, val_size: int, val_accuracy: float, matrix: np.ndarray,
    scores: dict, history: dict, wrong_rows: list[list], train_counts: np.ndarray, val_counts: np.ndarray,
    histories: list[dict] | None = None, model_names: list[str] | None = None,
    comparisons: list[tuple[str, Run | dict]] | None = None, predicted: SubmissionRecord | None = None,
) -> str:
    """The whole index.html as a string; images and CSVs are referenced by relative file name."""
    run = Run.of(run)
    comparisons = None if comparisons is None else [(label, Run.of(other)) for label, other in comparisons]
    title = f"{'Blend' if run.blend else 'Training run'} {_run_id(run)}"
    history_header, history_table_rows = history_rows(*(histories or [history]), names=model_names)
    wrong = int(matrix.sum() - np.trace(matrix))
    sections = [
        _section("run", "Run", _run_sections(run, comparisons, predicted)),
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
            f'<p class="note">{note}</p>' if (note := training_below_validation(run.params)) else "",
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


def _headline(run: Run, val_accuracy: float, val_size: int, wrong: int, train_size: int) -> str:
    """The estimate nothing was chosen on, with its interval and kind; the page's figures are on the same rows."""
    estimate = run.estimate
    if not estimate:
        return (f'<p class="headline">Validation accuracy <strong>{val_accuracy:.2%}</strong> '
                f"({val_size - wrong:,} of {val_size:,} correct) &middot; {train_size:,} train digits</p>")
    kind = ("cross-validation: every train digit predicted by the fold model that never saw it"
            if estimate.kind == "cross-validation" else
            "holdout: digits kept aside from training, last epoch's weights, nothing chosen on them")
    return (f'<p class="headline">Estimated accuracy <strong>{estimate.accuracy:.2%}</strong> '
            f'(95 % interval {estimate.low:.2%} to {estimate.high:.2%}; '
            f'{estimate.images - estimate.errors:,} of {estimate.images:,} correct) &middot; '
            f"{html.escape(kind)}<br>Leaderboard: <strong>{_text(leaderboard_text(run))}</strong></p>")


def _page_head(title: str, run: Run) -> list[str]:
    """The lines every page starts with: the HTML head, the title and the sample's banner."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="banner">{html.escape(SAMPLE_BANNER)}</p>' if run.source == "sample" else "",
    ]


def render_summary_page(run: Run | dict, predicted: SubmissionRecord | None = None) -> str:
    """The page of a run with no out-of-fold predictions to draw (a blend of runs on different splits)."""
    run = Run.of(run)
    title = f"{'Blend' if run.blend else 'Training run'} {_run_id(run)}"
    return "\n".join([
        *_page_head(title, run),
        f'<p class="headline">No estimate: {_text(run.no_estimate or "none recorded")}.<br>'
        f"Leaderboard: <strong>{_text(leaderboard_text(run))}</strong></p>",
        _section("run", "Run", _run_sections(run, None, predicted)),
        "</body></html>\n",
    ])
