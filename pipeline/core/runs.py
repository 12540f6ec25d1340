"""Run history: one run.json beside each trained model, and the log of submissions sent to Kaggle.
The `runs` command's table and diff are pipeline.tools.runs_table."""

import contextlib
import json
import re
import time
from pathlib import Path

from filelock import FileLock

from pipeline.core import cache, config, run_cache
from pipeline.core.errors import PipelineError
from pipeline.core.estimate import public_score, valid_estimate

# A run id is a folder name under data/models/: never a path that could lead elsewhere.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def run_path(paths: config.Paths, run_id: str) -> Path:
    if not RUN_ID.fullmatch(run_id or ""):
        raise PipelineError(f"--run {run_id}: not a run id (a name such as 20250101-120000-cnn; "
                            "see `python -m pipeline runs`)")
    return paths.run_dir(run_id) / "run.json"


def model_paths(train_record: dict) -> list[Path]:
    """The model files a train record names, one per ensemble member."""
    return [path for path in cache.output_paths(train_record) if path.suffix == ".keras"]


def write_run(paths: config.Paths, run: dict) -> None:
    cache.write_json(run_path(paths, run["id"]), run)


def read_run(paths: config.Paths, run_id: str) -> dict:
    try:
        run = json.loads(run_path(paths, run_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineError(f"--run {run_id}: no such run (see `python -m pipeline runs`)") from None
    if not isinstance(run, dict):
        raise PipelineError(f"{run_path(paths, run_id)}: not a run record (a JSON object was expected)")
    return run


def update_run(paths: config.Paths, run_id: str, durations_s: dict | None = None, **fields) -> None:
    run = read_run(paths, run_id)
    run.update(fields)
    if durations_s:
        run["durations_s"] = {**run.get("durations_s", {}), **durations_s}
    cache.write_json(run_path(paths, run_id), run)


def list_runs(paths: config.Paths) -> list[dict]:
    """Every training run, best first: those in data/models/ and those only the run cache still keeps."""
    runs = {}
    for record in run_cache.kept_records(paths, "train"):
        run = record.get("extra", {}).get("run")
        if isinstance(run, dict) and "id" in run:
            runs[run["id"]] = run
    for path in paths.models.glob("*/run.json"):
        try:
            run = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # damaged, or being rewritten right now (it shows next time)
        if isinstance(run, dict):
            runs[run.get("id", path.parent.name)] = run
    return sorted_runs(list(runs.values()))


def estimated_accuracy(run: dict) -> float:
    """The run's estimate (nothing chosen on it); 0 for runs made before estimates existed."""
    return (valid_estimate(run.get("estimate")) or {}).get("accuracy", 0.0)


SORT_KEYS = ("estimate", "leaderboard", "time")


def sorted_runs(runs: list[dict], sort: str = "estimate") -> list[dict]:
    """Best estimate first, best public score first (unscored last), or newest first."""
    if sort == "leaderboard":
        return sorted(runs, key=lambda run: (-(public_score(run) or -1.0), -estimated_accuracy(run), run.get("id", "")))
    if sort == "time":
        return sorted(runs, key=lambda run: (run.get("date", ""), run.get("id", "")), reverse=True)
    return sorted(runs, key=lambda run: (-estimated_accuracy(run), run.get("id", "")))


def run_for_submission(paths: config.Paths, file: Path) -> dict | None:
    resolved = Path(file).resolve()
    for run in list_runs(paths):
        if run.get("submission") and cache.absolute_path(run["submission"]).resolve() == resolved:
            return run
    return None


def submission_message(run: dict | None, file: Path) -> str:
    if run is None:
        return f"{Path(file).name} (digit-recognizer pipeline)"
    params = run.get("params", {})
    estimate = valid_estimate(run.get("estimate"))
    estimate_words = f"{estimate['accuracy']:.4f} ({estimate['kind']})" if estimate else "none"
    return (f"run {run['id']}: {params.get('architecture')} x{len(run.get('models', []))}, "
            f"estimate {estimate_words}, epochs {params.get('epochs')}, "
            f"batch {params.get('batch_size')}, seed {params.get('seed')}, source {run.get('source')}")


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
