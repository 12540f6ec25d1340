"""Run history: one run.json beside each trained model, and the log of submissions sent to Kaggle."""

import contextlib
import json
import re
import time
from pathlib import Path

from filelock import FileLock

from pipeline.core import cache, config, run_cache
from pipeline.core.console import format_table
from pipeline.core.errors import PipelineError
from pipeline.core.estimate import describe, describe_gap, public_score, short_kind, valid_estimate

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


def is_full_size(run: dict) -> bool:
    """Trained on the competition's data (or a copy of it), not on the bundled sample."""
    return run.get("source") != "sample"


def preset_cell(run: dict) -> str:
    """The preset, and which trial of a `tune` search the run was ('quick t3')."""
    trial = run.get("tune") or {}
    return f"{run.get('preset', '?')} t{trial['trial']}" if trial.get("trial") else run.get("preset", "?")


def _number(value) -> str:
    """0.002 as '0.002', 1.0 as '1': short cells."""
    return f"{value:g}" if isinstance(value, (int, float)) else "-" if value is None else str(value)


def format_runs_table(runs: list[dict], kept_ids: set[str] = frozenset(), wide: bool = False) -> str:
    """One line a run: by default the columns that tell runs apart, within 100 characters; wide: every column.
    `gap`: leaderboard minus estimate in points, `in` or `out` of its 95 % interval; `kept`: its models are
    in the run cache, so its settings come back in seconds."""
    if not runs:
        return "no runs yet (run `make all` or `python -m pipeline train`)"
    # The run id ends with the model's name (20260101-120000-cnn): no column of its own within 100 characters.
    header = ("run", "preset", "ep", "lr", "aug", "drop", "w", "estimate", "kaggle", "gap")
    if wide:
        header = ("run", "preset", "model", *header[2:-3], "seed", "members", "models", "source", "date", "estimate",
                  "95 % interval", "kind", "kaggle", "gap", "train_s", "kept", "submission")
    rows = []
    for run in runs:
        params = run.get("params", {})
        estimate = valid_estimate(run.get("estimate"))  # a wrong-shaped one reads as none
        cells = [run.get("id", "?"), preset_cell(run), *([params.get("architecture", "-")] if wide else []),
                 _number(params.get("epochs")),
                 _number(params.get("learning_rate")), _number(params.get("augmentation")),
                 _number(params.get("dropout")), _number(params.get("width"))]
        scored = [f"{estimate['accuracy']:.4f}" if estimate else "none", leaderboard_cell(run.get("leaderboard")),
                  describe_gap(run, short=True) or "-"]
        if wide:
            cells += [_number(params.get("seed")), _number(params.get("members")), len(run.get("models", [])),
                      run.get("source", "?"), run.get("date", "?"), scored[0],
                      *_estimate_cells(estimate)[1:2], *_estimate_cells(estimate)[2:], *scored[1:],
                      f"{run.get('durations_s', {}).get('train', 0) or 0:.0f}",
                      "yes" if run.get("id") in kept_ids else "no", Path(run.get("submission") or "-").name]
        else:
            cells += scored
        rows.append(tuple(cells))
    return format_table(header, rows)


def _estimate_cells(estimate) -> tuple[str, str, str]:
    estimate = valid_estimate(estimate)
    if not estimate:
        return "-", "-", "none"
    return f"{estimate['accuracy']:.4f}", f"{estimate['low']:.4f}-{estimate['high']:.4f}", short_kind(estimate)


def leaderboard_cell(leaderboard: dict | None) -> str:
    """The public score Kaggle gave the run's latest scored submission; pending, error, or - (not sent)."""
    if not leaderboard:
        return "-"
    return {"COMPLETE": leaderboard.get("public_score") or "-", "ERROR": "error"}.get(leaderboard["status"], "pending")


def show_runs(paths: config.Paths, wide: bool = False, everything: bool = False, sort: str = "estimate") -> str:
    """The runs table (full-size runs only when there are any, unless everything) and what the run cache holds."""
    if sort not in SORT_KEYS:
        raise PipelineError(f"--sort {sort}: expected one of {', '.join(SORT_KEYS)}")
    kept_ids = {record["extra"].get("run_id") for record in run_cache.kept_records(paths, "train")}
    total, extra = run_cache.disk_usage(paths)
    listed = list_runs(paths)
    shown = listed if everything or not any(map(is_full_size, listed)) else list(filter(is_full_size, listed))
    hidden = len(listed) - len(shown)
    note = f"{hidden} runs on the bundled sample not shown (`runs --all` lists them)\n" if hidden else ""
    return (f"{format_runs_table(sorted_runs(shown, sort), kept_ids, wide)}\n{note}"
            f"run cache: {total / 1e6:.1f} MB in {cache.relative_name(paths.store)}, {extra / 1e6:.1f} MB of it not"
            " shared with current outputs\n(`make clean-cache` empties it)")


def differences(first: dict, second: dict) -> list[tuple[str, str, str]]:
    """(field, first's value, second's) of every parameter, data fact, estimate and score that differs."""
    def facts(run: dict) -> dict:
        estimate = run.get("estimate") or {}
        return {
            **{f"params.{name}": value for name, value in (run.get("params") or {}).items()},
            "preset": preset_cell(run), "source": run.get("source"),
            **{f"split.{name}": value for name, value in (run.get("split") or {}).items()},
            **{f"data.{name}": (digest or "")[:12] for name, digest in (run.get("data") or {}).items()},
            "models": len(run.get("models", [])),
            "estimate": describe(estimate) if estimate else "none",
            "leaderboard": leaderboard_cell(run.get("leaderboard")),
            "gap": describe_gap(run) or "-",
        }
    ours, theirs = facts(first), facts(second)
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
