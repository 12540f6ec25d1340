"""The `runs` command: the table of every training run (best estimate first) with what the run cache holds,
and the differences between two runs.
"""

from pipeline.core import cache, config, run_cache
from pipeline.core.console import count, format_table
from pipeline.core.errors import PipelineError
from pipeline.core.estimate import Estimate, describe, short_kind
from pipeline.core.records import Leaderboard, Run, describe_gap
from pipeline.core.runs import (SORT_KEYS, kept_run_ids, list_runs, read_run, read_submission_record, sorted_runs,
                                submission_digest)
from pipeline.report.leaderboard import prediction_words, submission_name


def is_full_size(run: Run) -> bool:
    """Trained on the competition's data (or a copy of it), not on the bundled sample."""
    return run.source != "sample"


def preset_cell(run: Run, mark_sample: bool = False) -> str:
    """The preset, which trial of a `tune` search the run was ('quick t3'), and with mark_sample whether it was
    trained on the bundled sample ('quick s')."""
    preset = run.preset or "?"
    preset = f"{preset} t{run.tune.trial}" if run.tune and run.tune.trial else preset
    return f"{preset} s" if mark_sample and not is_full_size(run) else preset


def _number(value) -> str:
    """0.002 as '0.002', 1.0 as '1': short cells; an integer whole (a seed of 20261207, not 2.02612e+07)."""
    if isinstance(value, int):
        return str(value)
    return f"{value:g}" if isinstance(value, float) else "-" if value is None else str(value)


def format_runs_table(runs: list[Run], kept_ids: set[str] = frozenset(), wide: bool = False,
                      gone: set[str] = frozenset(), predicted: dict | None = None) -> str:
    """One line a run: by default the columns that tell runs apart, within 100 characters; wide: every column.
    `gap`: leaderboard minus estimate in points, `in` or `out` of its 95 % interval; `kept`: its models are
    in the run cache, so its settings come back in seconds. Marked: a run on the bundled sample among full-size
    ones (`quick s`), a run whose folder is gone, kept by the run cache alone (ids in gone: `quick *`). predicted:
    predict's record of each run's submission, by run id (wide: `predicted`, how: `tta, all-rows x2`)."""
    if not runs:
        return ("no runs yet (run"
                f" {config.how_to('`make all` or `python -m pipeline train`', '`digit-recognizer all`')})")
    # The run id ends with the model's name (20260101-120000-cnn): no column of its own within 100 characters.
    header = ("run", "preset", "ep", "lr", "aug", "drop", "w", "estimate", "kaggle", "gap")
    if wide:
        header = ("run", "preset", "model", *header[2:-3], "seed", "members", "models", "recipe", "source", "date",
                  "estimate", "95 % interval", "kind", "kaggle", "gap", "train_s", "kept", "submission", "predicted")
    rows = []
    mark_sample = len({is_full_size(run) for run in map(Run.of, runs)}) == 2  # estimates of other data side by side
    for run in map(Run.of, runs):
        params, estimate = run.params, run.estimate  # a wrong-shaped estimate reads as none
        cells = [run.id or "?", preset_cell(run, mark_sample) + " *" * (run.id in gone),  # the id copied clean
                 *([params.get("architecture", "-")] if wide else []),
                 _number(params.get("epochs")),
                 _number(params.get("learning_rate")), _number(params.get("augmentation")),
                 _number(params.get("dropout")), _number(params.get("width"))]
        scored = [f"{estimate.accuracy:.4f}" if estimate else "none", leaderboard_cell(run.leaderboard),
                  describe_gap(run, short=True) or "-"]
        if wide:
            cells += [_number(params.get("seed")), _number(params.get("members")), len(run.models), recipe_cell(params),
                      run.source or "?", run.date or "?", scored[0],
                      *_estimate_cells(estimate)[1:2], *_estimate_cells(estimate)[2:], *scored[1:],
                      _train_seconds(run),
                      "yes" if run.id in kept_ids else "no", submission_name(run.submission, missing="-"),
                      (run.submission and prediction_words((predicted or {}).get(run.id), short=True)) or "-"]
        else:
            cells += scored
        rows.append(tuple(cells))
    return format_table(header, rows)


def recipe_cell(params: dict) -> str:
    """The switches that tell runs of the same preset and numbers apart (review 60 H: a --pseudo-label run and a
    --final-model one had the same row): 'all-rows,pseudo,looks 2,tta'; '-' for none."""
    switches = [("all-rows", params.get("final_model")), ("pseudo", params.get("pseudo_label")),
                (f"pseudo-tune {params.get('pseudo_tune')}", params.get("pseudo_tune")),
                (f"looks {params.get('rare_looks')}", params.get("rare_looks")),
                (f"alt {params.get('alternate')}", params.get("alternate") not in (None, "none")),
                ("recal", params.get("recalibrate")), ("tta", params.get("tta"))]
    return ",".join(word for word, on in switches if on) or "-"


def _train_seconds(run: Run) -> str:
    """Its training's seconds; '-' when it trained nothing of its own (a blend) or did not record them."""
    value = run.durations_s.get("train")
    return f"{value:.0f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _estimate_cells(estimate: Estimate | None) -> tuple[str, str, str]:
    if not estimate:
        return "-", "-", "none"
    return f"{estimate.accuracy:.4f}", f"{estimate.low:.4f}-{estimate.high:.4f}", short_kind(estimate)


def leaderboard_cell(leaderboard: Leaderboard | None) -> str:
    """The public score Kaggle gave the run's latest scored submission; pending, error, or - (not sent)."""
    if not leaderboard:
        return "-"
    return {"COMPLETE": leaderboard.public_score or "-", "ERROR": "error"}.get(leaderboard.status, "pending")


CLEAN_CACHE = config.how_to("`make clean-cache`", "`digit-recognizer clean --cache`")


def show_runs(paths: config.Paths, wide: bool = False, everything: bool = False, sort: str = "estimate",
              footer: bool = True) -> str:
    """The runs table (full-size runs only when there are any, unless everything) and, with footer, what the run
    cache holds (--quiet: the table alone, as README says)."""
    if sort not in SORT_KEYS:
        raise PipelineError(f"--sort {sort}: expected one of {', '.join(SORT_KEYS)}")
    kept_ids = kept_run_ids(paths)
    total, extra = run_cache.disk_usage(paths)
    listed = list_runs(paths)
    shown = listed if everything or not any(map(is_full_size, listed)) else list(filter(is_full_size, listed))
    hidden = len(listed) - len(shown)
    listing = config.how_to("`make runs ALL=1`", "`digit-recognizer runs --all`")
    note = f"{count(hidden, 'run')} on the bundled sample not shown ({listing} lists them)\n" if hidden else ""
    gone = {run.id for run in shown if not paths.run_dir(run.id).is_dir()}
    predicted = {run.id: read_submission_record(paths, run.id) for run in shown} if wide else None
    table = format_runs_table(sorted_runs(shown, sort), kept_ids, wide, gone, predicted)
    if not footer:  # --quiet: the table alone (README)
        return table
    if len({is_full_size(run) for run in shown}) == 2:
        note += "s: trained on the bundled sample, its estimate of other rows than the full-size runs'\n"
    if gone:
        note += ("*: its folder in data/models is gone; the run cache keeps its models (its options train it"
                 " back in seconds)\n")
    return (f"{table}\n{note}"
            f"run cache: {total / 1e6:.1f} MB in {cache.relative_name(paths.store)}, {extra / 1e6:.1f} MB of it not"
            f" shared with current outputs\n({CLEAN_CACHE} empties it){unfinished_trainings(paths)}")


def unfinished_trainings(paths: config.Paths) -> str:
    """A line on the epoch checkpoints of trainings stopped before their end (one folder a set of options), which
    stay until the same options resume them, else for good; '' when there are none."""
    folders = [folder for folder in sorted(paths.checkpoints.glob("*")) if folder.is_dir()]
    if not folders:
        return ""
    size = sum(path.stat().st_size for folder in folders for path in folder.rglob("*") if path.is_file())
    return (f"\nunfinished trainings: {len(folders)}, {size / 1e6:.1f} MB of checkpoints in"
            f" {cache.relative_name(paths.checkpoints)} (the same options go on from their last epoch;"
            " delete the folder to forget them)")


def differences(first: Run, second: Run) -> list[tuple[str, str, str]]:
    """(field, first's value, second's) of every parameter, data fact, estimate and score that differs."""
    def facts(run: Run) -> dict:
        return {
            **{f"params.{name}": value for name, value in run.params.items()},
            "preset": preset_cell(run), "source": run.source,
            **{f"split.{name}": value for name, value in run.split.items()},
            **{f"data.{name}": str(digest or "")[:12] for name, digest in run.data.items()},
            "models": len(run.models),
            "estimate": describe(run.estimate, missing="none"),
            "leaderboard": leaderboard_cell(run.leaderboard),
            "gap": describe_gap(run) or "-",
            # What was sent, by content: two blends of the same runs differ there after `predict --tta` of one
            "submission": (submission_digest(run.submission) or "-")[:12],
        }
    ours, theirs = facts(first), facts(second)
    if first.blend is None and second.blend is None:
        # An option newer than a run trained it as the option's default does: no difference to list
        defaults = {f"params.{name}": value for name, value in config.DEFAULT.items()}
        for older, newer in ((ours, theirs), (theirs, ours)):
            for name in newer.keys() - older.keys():
                if name in defaults and defaults[name] == newer[name]:
                    older[name] = newer[name]
    return [(name, _text(ours.get(name)), _text(theirs.get(name)))
            for name in dict.fromkeys([*ours, *theirs]) if ours.get(name) != theirs.get(name)]


def _text(value) -> str:
    return "-" if value is None else _number(value) if isinstance(value, float) else str(value)


def show_difference(paths: config.Paths, first_id: str, second_id: str) -> str:
    first, second = read_run(paths, first_id), read_run(paths, second_id)
    rows = differences(first, second)
    if not rows:
        return f"runs {first_id} and {second_id} differ in no parameter, data, estimate or score"
    return format_table(("", first_id, second_id), rows)
