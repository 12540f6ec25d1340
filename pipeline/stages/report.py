"""The report stage: the report of a trained run (pipeline.report), written to data/reports/<run>/index.html,
and report.json in the run's folder naming it (the stage's own record; run.json is train's)."""

import json

import numpy as np

from pipeline.core import cache, config, runs, stage
from pipeline.core.cache import absolute_path, atomic_path, relative_name
from pipeline.core.config import Paths
from pipeline.core.errors import PipelineError
from pipeline.core.progress import on_terminal
from pipeline.core.records import ReportRecord, Run
from pipeline.core.stage import Definition, require
from pipeline.report.leaderboard import prediction_words
from pipeline.report.page import render_summary_page
from pipeline.report.writer import _stored_inputs, compared_runs, training_data_matches, write_report


def _leaderboard(run: Run) -> dict | None:
    return run.leaderboard.to_json() if run.leaderboard else None


def define(paths, console, run_id: str | None = None):
    """The report stage for a run: the latest trained one, or any earlier one whose files are still there."""
    # Not named: the latest run, whose inputs must still be current. Named, even the latest: any run whose files
    # are still there, on the data it was trained on (a new split since does not change what it measured).
    named = run_id is not None
    if not named:
        try:
            run_id = require("train", "python -m pipeline train", needs=("run_id",))["extra"]["run_id"]
        except PipelineError:  # out of date (a new split since): the latest run's page as --run makes it, if it can
            run_id = ((cache.load_record("train") or {}).get("extra") or {}).get("run_id")
            if not isinstance(run_id, str) or not runs.run_path(paths, run_id).is_file():
                raise
            named = True
            if console is not None:
                console.say(f"report: the latest run, {run_id}, trained before the current split or data (as"
                            " `report --run` takes it)")
    run = runs.read_run(paths, run_id)
    if run.blend and not run.estimate:
        return _summary_only_definition(paths, run)
    needed = [paths.out_of_fold(run_id), paths.history_json(run_id)]
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        advice = runs.back_from_the_run_cache(paths, run_id, "retrain it to report on it")
        raise PipelineError(f"--run {run_id}: {', '.join(missing)} no longer in {relative_name(paths.run_dir(run_id))};"
                            f" {advice}")
    if named and not run.data:  # run.json of the first versions: preparing the data again would not help
        raise PipelineError(f"--run {run_id}: its run.json, from an early version, does not record the data it was"
                            " trained on, so its page cannot be made safely: train it again to report on it")
    if named and not training_data_matches(paths, run):
        raise PipelineError(f"--run {run_id}: data/prepared no longer holds the digits it was trained on (source"
                            f" {run.source}); prepare that data again ({config.PREPARE_AGAIN})")
    comparisons = compared_runs(run, runs.list_runs(paths))
    out_dir = paths.report_dir(run_id)
    # train.csv too: the page gives each wrong digit's line in it (a blank line added moves every line after it).
    inputs = [*needed, paths.train_images, paths.train_labels,
              *([paths.raw_train] if paths.raw_train.is_file() else [])]
    # What the page shows besides the files: a new score, a new submission of the run (predict again with TTA or
    # another weight) or a better run elsewhere redoes the report.
    predicted = runs.read_submission_record(paths, run_id)
    params = {"run_id": run_id, "leaderboard": _leaderboard(run), "submission": run.submission,
              "predicted": prediction_words(predicted),
              "compared": [(label, other.id, _leaderboard(other)) for label, other in comparisons]}

    def work():
        images = np.load(paths.train_images, mmap_mode="r")
        inputs = _stored_inputs(paths, run)
        rows = inputs["val_rows"]
        index = write_report(out_dir, run=run, train_images=images, val_images=images[rows],
                             comparisons=comparisons, log=console.say if on_terminal() else None, predicted=predicted,
                             **inputs)
        runs.write_report_record(paths, run_id, ReportRecord(relative_name(index)))
        return [out_dir], {"index": relative_name(index)}

    return Definition("report", params, inputs, work, _describe, _put_back(paths, run_id))


def remember_refreshed_page(paths, run_id: str) -> None:
    """Submit wrote the run's page again with its new score (report.writer.refresh_page). Where the report stage's
    result is that page and nothing but the score changed in its key, its record takes the page as it is now: the
    next `make all` said `report: running again` and drew every picture again (about 9 s at full size). Only while
    no other command holds the lock (one may be writing that record)."""
    with cache.lock_if_free() as free:
        record = cache.load_record("report") if free else None
        recorded = (record or {}).get("key")
        if not isinstance(recorded, dict) or (recorded.get("params") or {}).get("run_id") != run_id:
            return
        try:
            definition = define(paths, None, run_id)
        except PipelineError:
            return
        current = definition.key_values
        as_before = {**current, "params": {**current["params"], "leaderboard": recorded["params"].get("leaderboard")}}
        if as_before == recorded and current != recorded:
            stage.record_rewritten_outputs(definition, record)


def _describe(record) -> str:
    return f"open {absolute_path(record['extra']['index'])} in a browser"


def _put_back(paths, run_id: str):
    """The hook that writes report's record in the run folder again, when it does not name the page already."""
    def put_back(record):
        if runs.read_report_record(paths, run_id) != ReportRecord(record["extra"]["index"]):
            runs.write_report_record(paths, run_id, ReportRecord(record["extra"]["index"]))
    return put_back


def _summary_only_definition(paths, run: Run):
    out_dir = paths.report_dir(run.id)

    def work():
        with atomic_path(out_dir) as staging:
            staging.mkdir()
            (staging / Paths.INDEX_HTML).write_text(render_summary_page(run), encoding="utf-8")
            (staging / Paths.RUN_JSON).write_text(json.dumps(run.to_json(), indent=2, sort_keys=True) + "\n")
        index = paths.report_index(run.id)
        runs.write_report_record(paths, run.id, ReportRecord(relative_name(index)))
        return [out_dir], {"index": relative_name(index)}

    params = {"run_id": run.id, "leaderboard": _leaderboard(run)}
    return Definition("report", params, [], work, _describe, _put_back(paths, run.id))
