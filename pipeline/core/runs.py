"""Run history: one run folder beside each trained model (its files, each with one writer, named by
pipeline.core.config.Paths), composed into a `Run` (pipeline.core.records) with what the log of submissions sent
to Kaggle (pipeline.core.sent_log) says of it. The `runs` command's table and diff are pipeline.tools.runs_table."""

import functools
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from pipeline.core import cache, config, run_cache
from pipeline.core.errors import PipelineError
from pipeline.core.records import Leaderboard, ReportRecord, Run, SubmissionRecord, TuneMark
from pipeline.core.sent_log import SENDING, in_send_order, sent_submissions

# A run id is a folder name under data/models/: never a path that could lead elsewhere.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


RUNS = config.how_to("`python -m pipeline runs`", "`digit-recognizer runs`")


def run_path(paths: config.Paths, run_id: str) -> Path:
    if not RUN_ID.fullmatch(run_id or ""):
        raise PipelineError(f"run {run_id!r}: not a run id (a name such as 20250101-120000-cnn; see {RUNS})")
    return paths.run_json(run_id)


def model_paths(train_record: dict) -> list[Path]:
    """The model files a train record names, one per ensemble member."""
    return [path for path in cache.output_paths(train_record) if path.suffix == ".keras"]


def write_run(paths: config.Paths, run: Run) -> None:
    """run.json: written by train (or blend) alone, once; what later stages say of the run goes to their own files."""
    cache.write_json(run_path(paths, run.id), run.run_json())
    (paths.run_dir(run.id) / paths.UNFINISHED_RUN).unlink(missing_ok=True)  # listed from now on: a finished run


def write_submission_record(paths: config.Paths, run_id: str, record: SubmissionRecord) -> None:
    """predict's (or blend's) own file in the run folder."""
    cache.write_json(paths.submission_json(run_id), record.to_json())


def read_submission_record(paths: config.Paths, run_id: str) -> SubmissionRecord | None:
    return SubmissionRecord.from_json(_read_json(paths.submission_json(run_id)))


def read_report_record(paths: config.Paths, run_id: str) -> ReportRecord | None:
    return ReportRecord.from_json(_read_json(paths.report_json(run_id)))


def write_report_record(paths: config.Paths, run_id: str, record: ReportRecord) -> None:
    """report's own file in the run folder."""
    cache.write_json(paths.report_json(run_id), record.to_json())


def write_tune_mark(paths: config.Paths, run_id: str, mark: TuneMark) -> None:
    """tune's own file in the run folder: which trial the run was."""
    cache.write_json(paths.tune_json(run_id), mark.to_json())


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _damaged(path: Path, what: str, error: Exception) -> PipelineError:
    reason = " ".join(str(error).split())[:120]
    return PipelineError(f"{path}: not {what} ({type(error).__name__}: {reason}); the run's file is damaged:"
                         " train the run again (or leave it out of a blend)")


def read_out_of_fold(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rows, probabilities) of a run's out-of-fold predictions, as train (or blend) saved them."""
    try:
        with np.load(path) as stored:
            rows, probabilities = stored["rows"], stored["probabilities"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise _damaged(path, "the out-of-fold predictions train saves", error) from None
    if rows.ndim != 1 or probabilities.ndim != 2 or len(rows) != len(probabilities):
        raise _damaged(path, "the out-of-fold predictions train saves",
                       ValueError(f"rows {rows.shape}, probabilities {probabilities.shape}"))
    return rows, probabilities


def save_test_probabilities(paths: config.Paths, run_id: str, probabilities: np.ndarray, test_images: str | None,
                            blended: dict | None = None) -> list[Path]:
    """A run's averaged test probabilities (predict's or blend's, for blend), and beside them of which test images
    (test_images: their digest): a run restored from the run cache for other test images writes over the file, and
    blend must not mix them. blended: a blend's {run id: digest of its test probabilities}, by which the same blend
    again is found. The files written."""
    written = [paths.test_probabilities(run_id)]
    with cache.atomic_path(written[0]) as temporary:
        with open(temporary, "wb") as stream:
            np.save(stream, probabilities)
    if test_images:
        written.append(paths.test_probabilities_json(run_id))
        cache.write_json(written[1], {"test_images": test_images, **({"blended": blended} if blended else {})})
    return written


def _of_probabilities(paths: config.Paths, run_id: str, name: str, kind: type):
    """One value save_test_probabilities wrote, when of that kind; None otherwise (not recorded)."""
    try:
        value = json.loads(paths.test_probabilities_json(run_id).read_text()).get(name)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, kind) else None


def blended_probabilities(paths: config.Paths, run_id: str) -> dict | None:
    """The {run id: digest} save_test_probabilities wrote for a blend; None otherwise."""
    return _of_probabilities(paths, run_id, "blended", dict)


def test_images_of_probabilities(paths: config.Paths, run_id: str) -> str | None:
    """The digest save_test_probabilities wrote; None when not recorded (predicted before it was)."""
    return _of_probabilities(paths, run_id, "test_images", str)


def read_test_probabilities(path: Path) -> np.ndarray:
    """A run's averaged test probabilities, one row of ten an image, as predict (or blend) saved them."""
    try:
        probabilities = np.load(path)
    except (OSError, ValueError, EOFError) as error:
        raise _damaged(path, "the test probabilities predict saves", error) from None
    if probabilities.ndim != 2 or probabilities.shape[1] != config.NUM_CLASSES:
        raise _damaged(path, "the test probabilities predict saves", ValueError(f"shape {probabilities.shape}"))
    return probabilities


def read_histories(path: Path) -> list[dict]:
    """A run's training histories, one object of per-epoch lists a model, as train saved them."""
    try:
        histories = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, "the training histories train saves", error) from None
    if not isinstance(histories, list) or not all(isinstance(history, dict) for history in histories):
        raise _damaged(path, "the training histories train saves", ValueError("a JSON list of objects expected"))
    return histories


def read_run(paths: config.Paths, run_id: str) -> Run:
    path = run_path(paths, run_id)
    try:
        run = Run.from_json(json.loads(path.read_text()), run_id)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        run = _kept_runs(paths).get(run_id)  # run.json gone: as train recorded it, when the run cache keeps it
        if run is None:
            raise PipelineError(f"run {run_id}: no such run (see {RUNS})") from None
    if run is None:
        raise PipelineError(f"{path}: not a run record (a JSON object was expected)")
    return _composed(paths, run, sent_submissions(paths, strict=False), _kept_predictions(paths))


def _kept_runs(paths: config.Paths) -> dict[str, Run]:
    """The runs the run cache keeps, by id, as train recorded them (their run.json may be gone)."""
    runs = {}
    for record in run_cache.kept_records(paths, "train"):
        run = Run.from_json(record.get("extra", {}).get("run"))
        if run is not None and run.id:
            runs[run.id] = run
    return runs


def back_from_the_run_cache(paths: config.Paths, run_id: str, otherwise: str) -> str:
    """Advice for a run whose files are gone: the run cache brings them back in seconds when it keeps the run."""
    from pipeline.core.stage import rerun_words  # train's own options, as the CLI words them

    kept = next((record for record in run_cache.kept_records(paths, "train")
                 if record.get("extra", {}).get("run_id") == run_id), None)
    words = rerun_words("train", kept) if kept else None
    if words is None:
        return otherwise if kept is None else ("the run cache keeps it: train again with the options it had (`runs"
                                               " diff` names them beside another run's) and its files come back")
    option, variable = _own_source(paths, kept)
    command = config.how_to(f"`make all{variable}{words[1]}`", f"`digit-recognizer all{option}{words[1]}`")  # split too
    return f"the run cache keeps it: {command} brings its files back in seconds (on the data it was trained on)"


def _own_source(paths: config.Paths, train_record: dict) -> tuple[str, str]:
    """(' --source PATH', ' SOURCE=PATH') for a run trained on the user's own folder or zip, found through the run
    cache's prepare and download records that made its arrays (run.json says only "folder"); a placeholder where
    they are no longer kept; ('', '') for the sample or Kaggle's files."""
    from pipeline.core.stage import download_options  # the current source's words, for a kept record

    source = ((train_record.get("extra") or {}).get("run") or {}).get("source")
    if source not in ("folder", "zip"):
        return "", ""
    arrays = (train_record.get("key") or {}).get("inputs") or {}
    downloads = run_cache.kept_records(paths, "download")[::-1]  # the latest copy of the same files first
    for prepare in run_cache.kept_records(paths, "prepare"):
        made = prepare.get("outputs") or {}
        if not any(name in made for name in arrays) or any(made.get(name, digest) != digest
                                                           for name, digest in arrays.items()):
            continue
        raw = (prepare.get("key") or {}).get("inputs") or {}
        for download in downloads:
            named = download_options(download)
            if download.get("outputs") == raw and named[0]:
                return named
    return f" --source <the {source} it was trained on>", f" SOURCE=<the {source} it was trained on>"


def kept_run_ids(paths: config.Paths) -> set[str]:
    """The ids of the runs whose models the run cache keeps: their settings come back in seconds."""
    return {record.get("extra", {}).get("run_id") for record in run_cache.kept_records(paths, "train")} - {None}


def _kept_predictions(paths: config.Paths):
    """predict's records the run cache keeps, then its current one (the file the user last chose, restored perhaps:
    review 60 H), as a call: read once for a listing of runs, only if a run needs them."""
    return functools.cache(lambda: [*run_cache.kept_records(paths, "predict"), cache.load_record("predict") or {}])


def _composed(paths: config.Paths, run: Run, sent: dict, kept_predictions) -> Run:
    """The run with what predict, report, tune and the sent log say of it; what an earlier version wrote into
    run.json itself stays where nothing newer says otherwise."""
    if not RUN_ID.fullmatch(run.id or ""):
        return run
    predicted = read_submission_record(paths, run.id)
    durations = ({**run.durations_s, "predict": predicted.seconds} if predicted and predicted.seconds is not None
                 else None)
    submission = predicted.submission if predicted else None
    if predicted is None and not paths.run_dir(run.id).is_dir():  # its folder deleted: predict's kept record
        submission = _kept_submission(kept_predictions(), run.id)
    return run.with_records(
        submission=submission, durations_s=durations,
        report=getattr(read_report_record(paths, run.id), "index", None),
        tune=TuneMark.from_json(_read_json(paths.tune_json(run.id))),
        leaderboard=latest_leaderboard(sent, run.id, _competition_of(run), submission_digest(submission)))


def submission_digest(submission: str | None) -> str | None:
    """The digest of a run's listed submission (the score `runs` and the page show beside it is that file's; `runs
    diff` compares runs by it); None when it is gone (then the run's latest score, of whichever file)."""
    path = cache.absolute_path(submission) if submission else None
    return cache.file_digest(path) if path is not None and path.is_file() else None


def _kept_submission(kept_predictions: list[dict], run_id: str) -> str | None:
    """The run's submission when its folder was deleted, while its file is still there: predict's current record's
    when it is of this run, else the latest predict's that the run cache keeps. `runs` and `submit --run` find it."""
    for record in reversed(kept_predictions):
        name = record.get("extra", {}).get("submission")
        if (record.get("key", {}).get("params", {}).get("run_id") == run_id and isinstance(name, str)
                and cache.absolute_path(name).is_file()):
            return name
    return None


def _competition_of(run: Run) -> str:
    """The competition whose data the run learnt: kaggle:NAME's, else (a zip, a folder) the default one."""
    source = run.source or ""
    return source.split(":", 1)[1] if source.startswith("kaggle:") else config.COMPETITION


def latest_leaderboard(sent: dict, run_id: str, competition: str | None = None,
                       digest: str | None = None) -> Leaderboard | None:
    """What Kaggle said of the run's latest submission sent from this checkout (to competition, when named: a score
    of another competition's leaderboard is not the run's; of the file of that digest, when given: a run predicted
    again with --tta or another weight has a file of its own): the latest it scored, else the latest sent; None when
    none was sent. A send again that failed or waits does not hide the run's score (`runs`, the page, `all`)."""
    entries = in_send_order([entry for key, entry in sent.items() if entry.get("run_id") == run_id
                             and entry.get("status") != SENDING  # cut short: Kaggle may never have had it
                             and competition in (None, entry.get("competition", config.COMPETITION))
                             and digest in (None, entry.get("digest", key))])  # older entries: keyed by it
    if not entries:
        return None
    entry = next((entry for entry in reversed(entries) if entry.get("status") == "COMPLETE"), entries[-1])
    return Leaderboard.from_json({name: entry.get(name) for name in
                                  ("ref", "status", "public_score", "private_score", "error")})


def list_runs(paths: config.Paths) -> list[Run]:
    """Every training run, best first: those in data/models/ and those only the run cache still keeps."""
    runs = _kept_runs(paths)
    for path in paths.run_jsons():
        value = _read_json(path)  # None: damaged, or being rewritten right now (it shows next time)
        run = Run.from_json(value, path.parent.name)
        if run is not None:
            runs[run.id] = run
    sent = sent_submissions(paths, strict=False)
    kept_predictions = _kept_predictions(paths)
    return sorted_runs([_composed(paths, run, sent, kept_predictions) for run in runs.values()])


SORT_KEYS = ("estimate", "leaderboard", "time")


def sorted_runs(runs: list[Run], sort: str = "estimate") -> list[Run]:
    """Best estimate first, best public score first (unscored last), or newest first."""
    if sort == "leaderboard":
        return sorted(runs, key=lambda run: (-(run.public_score or -1.0), -run.accuracy, run.id))
    if sort == "time":
        return sorted(runs, key=lambda run: (run.date, run.id), reverse=True)
    return sorted(runs, key=lambda run: (-run.accuracy, run.id))


def run_for_submission(paths: config.Paths, file: Path) -> tuple[Run | None, Run | None]:
    """(the run whose submission the file is, None); (None, that run) when the file is where the run's predict
    wrote its submission but holds something else, edited since: its score would not be the run's."""
    resolved = Path(file).resolve()
    for run in list_runs(paths):
        if run.submission and cache.absolute_path(run.submission).resolve() == resolved:
            written = written_digests(paths, run.submission)
            if written and resolved.is_file() and cache.file_digest(resolved) not in written:
                return None, run
            return run, None
    return None, None


def written_digests(paths: config.Paths, submission: str) -> set[str]:
    """What predict wrote under this name (relative to the root), by its records: the current one and those the
    run cache keeps; empty when none says (a blend's file, or the run cache cleared)."""
    records = [*run_cache.kept_records(paths, "predict"), cache.load_record("predict") or {}]
    return {record["outputs"][submission] for record in records
            if isinstance(record.get("outputs"), dict) and submission in record["outputs"]}


def submission_message(run: Run | None, file: Path) -> str:
    """The description Kaggle keeps beside a submission: the run in a line, and the file (a run's predictions with
    and without --tta, or with another --final-weight, are files of their own; review 60 H)."""
    if run is None:
        return f"{Path(file).name} (digit-recognizer pipeline)"
    params, estimate = run.params, run.estimate
    estimate_words = f"{estimate.accuracy:.4f} ({estimate.kind})" if estimate else "none"
    if "blend_of" in params:  # a blend has no networks or epochs of its own
        return (f"run {run.id}: blend of {params['blend_of']}, estimate {estimate_words}, source {run.source},"
                f" file {Path(file).name}")
    return (f"run {run.id}: {params.get('architecture')} x{len(run.models)}, "
            f"estimate {estimate_words}, epochs {params.get('epochs')}, "
            f"batch {params.get('batch_size')}, seed {params.get('seed')}, source {run.source}, file {Path(file).name}")
