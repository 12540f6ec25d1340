"""Run history: one run folder beside each trained model (its files, each with one writer, named by
pipeline.core.config.Paths), composed into a `Run` (pipeline.core.records), and the log of submissions sent to
Kaggle. The `runs` command's table and diff are pipeline.tools.runs_table."""

import contextlib
import json
import re
import time
from pathlib import Path

from filelock import FileLock

from pipeline.core import cache, config, run_cache
from pipeline.core.errors import PipelineError
from pipeline.core.records import Leaderboard, ReportRecord, Run, SubmissionRecord, TuneMark

# A run id is a folder name under data/models/: never a path that could lead elsewhere.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def run_path(paths: config.Paths, run_id: str) -> Path:
    if not RUN_ID.fullmatch(run_id or ""):
        raise PipelineError(f"--run {run_id}: not a run id (a name such as 20250101-120000-cnn; "
                            "see `python -m pipeline runs`)")
    return paths.run_json(run_id)


def model_paths(train_record: dict) -> list[Path]:
    """The model files a train record names, one per ensemble member."""
    return [path for path in cache.output_paths(train_record) if path.suffix == ".keras"]


def write_run(paths: config.Paths, run: Run) -> None:
    """run.json: written by train (or blend) alone, once; what later stages say of the run goes to their own files."""
    cache.write_json(run_path(paths, run.id), run.run_json())


def write_submission_record(paths: config.Paths, run_id: str, record: SubmissionRecord) -> None:
    """predict's (or blend's) own file in the run folder."""
    cache.write_json(paths.submission_json(run_id), record.to_json())


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


def read_run(paths: config.Paths, run_id: str) -> Run:
    path = run_path(paths, run_id)
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineError(f"--run {run_id}: no such run (see `python -m pipeline runs`)") from None
    run = Run.from_json(value, run_id)
    if run is None:
        raise PipelineError(f"{path}: not a run record (a JSON object was expected)")
    return _composed(paths, run, sent_submissions(paths))


def _composed(paths: config.Paths, run: Run, sent: dict) -> Run:
    """The run with what predict, report, tune and the sent log say of it; what an earlier version wrote into
    run.json itself stays where nothing newer says otherwise."""
    if not RUN_ID.fullmatch(run.id or ""):
        return run
    predicted = SubmissionRecord.from_json(_read_json(paths.submission_json(run.id)))
    durations = ({**run.durations_s, "predict": predicted.seconds} if predicted and predicted.seconds is not None
                 else None)
    return run.with_records(
        submission=predicted.submission if predicted else None, durations_s=durations,
        report=getattr(ReportRecord.from_json(_read_json(paths.report_json(run.id))), "index", None),
        tune=TuneMark.from_json(_read_json(paths.tune_json(run.id))),
        leaderboard=latest_leaderboard(sent, run.id))


def latest_leaderboard(sent: dict, run_id: str) -> Leaderboard | None:
    """What Kaggle said of the run's latest submission sent from this checkout; None when none was sent."""
    entries = [entry for entry in sent.values() if entry.get("run_id") == run_id]
    if not entries:
        return None
    entry = entries[-1]  # the log keeps sends in their order
    return Leaderboard.from_json({name: entry.get(name) for name in
                                  ("ref", "status", "public_score", "private_score", "error")})


def list_runs(paths: config.Paths) -> list[Run]:
    """Every training run, best first: those in data/models/ and those only the run cache still keeps."""
    runs = {}
    for record in run_cache.kept_records(paths, "train"):
        run = Run.from_json(record.get("extra", {}).get("run"))
        if run is not None and run.id:
            runs[run.id] = run
    for path in paths.run_jsons():
        value = _read_json(path)  # None: damaged, or being rewritten right now (it shows next time)
        run = Run.from_json(value, path.parent.name)
        if run is not None:
            runs[run.id] = run
    sent = sent_submissions(paths)
    return sorted_runs([_composed(paths, run, sent) for run in runs.values()])


SORT_KEYS = ("estimate", "leaderboard", "time")


def sorted_runs(runs: list[Run], sort: str = "estimate") -> list[Run]:
    """Best estimate first, best public score first (unscored last), or newest first."""
    if sort == "leaderboard":
        return sorted(runs, key=lambda run: (-(run.public_score or -1.0), -run.accuracy, run.id))
    if sort == "time":
        return sorted(runs, key=lambda run: (run.date, run.id), reverse=True)
    return sorted(runs, key=lambda run: (-run.accuracy, run.id))


def run_for_submission(paths: config.Paths, file: Path) -> Run | None:
    resolved = Path(file).resolve()
    for run in list_runs(paths):
        if run.submission and cache.absolute_path(run.submission).resolve() == resolved:
            return run
    return None


def submission_message(run: Run | None, file: Path) -> str:
    if run is None:
        return f"{Path(file).name} (digit-recognizer pipeline)"
    params, estimate = run.params, run.estimate
    estimate_words = f"{estimate.accuracy:.4f} ({estimate.kind})" if estimate else "none"
    return (f"run {run.id}: {params.get('architecture')} x{len(run.models)}, "
            f"estimate {estimate_words}, epochs {params.get('epochs')}, "
            f"batch {params.get('batch_size')}, seed {params.get('seed')}, source {run.source}")


@contextlib.contextmanager
def sent_log_lock(paths: config.Paths):
    """The sent log's own lock: submit and submissions never wait behind a training run's lock."""
    paths.data.mkdir(parents=True, exist_ok=True)
    # filelock, as cache.exclusive_lock: an OS lock on Linux, macOS and Windows (fcntl is not on Windows).
    with FileLock(paths.data / ".submissions.lock"):
        yield


def sent_submissions(paths: config.Paths) -> dict:
    """The log of submissions sent from this checkout: one entry a send (what, when, its number and scoring),
    keyed by the file's digest, then <digest>-2, -3, ... for the same file sent again with --force."""
    try:
        sent = json.loads(paths.sent_submissions.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if not isinstance(sent, dict):
        return {}
    return {key: entry for key, entry in sent.items() if isinstance(entry, dict)}


def sends_of(sent: dict, digest: str) -> list[dict]:
    """Every logged send of the file with this digest, oldest first (entries older than `digest` are keyed by it)."""
    return [entry for key, entry in sent.items() if entry.get("digest", key) == digest]


def record_sent_submission(paths: config.Paths, digest: str, file: Path, message: str, answer: dict,
                           run_id: str | None = None, competition: str = config.COMPETITION) -> None:
    """Log a sent submission with its Kaggle number (ref; None when Kaggle gave none), before waiting for its score.
    Every send keeps its own entry: a forced resend is another submission, with its own score."""
    sent = sent_submissions(paths)
    key, number = digest, 1
    while key in sent:
        number += 1
        key = f"{digest}-{number}"
    sent[key] = {"digest": digest, "file": cache.relative_name(file), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "message": message, "answer": answer["message"], "ref": answer["ref"], "run_id": run_id,
                 "competition": competition, "status": "PENDING"}
    cache.write_json(paths.sent_submissions, sent)


def _sent_entry(sent: dict, submission: dict) -> dict | None:
    """The log entry of a listed submission: by its number, else (logs older than numbers, without a "ref")
    by its message. An entry logged without a number is never matched: another submission can share its message."""
    if submission["ref"] is not None:
        for entry in sent.values():
            if entry.get("ref") == submission["ref"]:
                return entry
    for entry in sent.values():
        if "ref" not in entry and entry.get("message") == submission["description"]:
            return entry
    return None


def sent_run_id(paths: config.Paths, submission: dict) -> str | None:
    """The run a listed submission came from, when it was sent from this checkout."""
    return (_sent_entry(sent_submissions(paths), submission) or {}).get("run_id")


def update_sent_submission(paths: config.Paths, submission: dict) -> dict | None:
    """Record a listed submission's status and scores in its log entry; the entry, None when not ours."""
    sent = sent_submissions(paths)
    entry = _sent_entry(sent, submission)
    if entry is None:
        return None
    entry.update(ref=submission["ref"], status=submission["status"], public_score=submission["public_score"],
                 private_score=submission["private_score"], error=submission["error_description"])
    cache.write_json(paths.sent_submissions, sent)
    return entry
