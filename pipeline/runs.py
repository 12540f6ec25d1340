"""Run history: one run.json beside each trained model, and the log of submissions sent to Kaggle."""

import json
import time
from pathlib import Path

from pipeline import config
from pipeline.cache import write_json
from pipeline.errors import PipelineError




def sent_file() -> Path:
    return config.DATA_DIR / "submissions_sent.json"


def run_path(run_id: str) -> Path:
    return config.MODELS_DIR / run_id / "run.json"


def write_run(run_dir: Path, run: dict) -> None:
    write_json(run_dir / "run.json", run)


def read_run(run_id: str) -> dict:
    try:
        return json.loads(run_path(run_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise PipelineError(f"--run {run_id}: no such run (see `python -m pipeline runs`)") from None


def update_run(run_id: str, durations_s: dict | None = None, **fields) -> None:
    run = read_run(run_id)
    run.update(fields)
    if durations_s:
        run["durations_s"] = {**run.get("durations_s", {}), **durations_s}
    write_json(run_path(run_id), run)


def list_runs() -> list[dict]:
    runs = []
    for path in config.MODELS_DIR.glob("*/run.json"):
        try:
            runs.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue  # a run.json being rewritten right now; it shows next time
    return sorted(runs, key=lambda run: (-run.get("val_accuracy", 0.0), run.get("id", "")))


def format_runs_table(runs: list[dict]) -> str:
    if not runs:
        return "no runs yet (run `make all` or `python -m pipeline train`)"
    header = ("run", "date", "source", "model", "epochs", "members", "val_acc", "train_s", "submission")
    rows = [header]
    for run in runs:
        params = run.get("params", {})
        rows.append((
            run.get("id", "?"), run.get("date", "?"), str(run.get("source", "?")), params.get("architecture", "?"),
            str(params.get("epochs", "?")), str(params.get("members", "?")), f"{run.get('val_accuracy', 0):.4f}",
            f"{run.get('durations_s', {}).get('train', 0) or 0:.0f}", Path(run.get("submission") or "-").name,
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def run_for_submission(file: Path) -> dict | None:
    resolved = Path(file).resolve()
    for run in list_runs():
        if run.get("submission") and Path(run["submission"]).resolve() == resolved:
            return run
    return None


def submission_message(run: dict | None, file: Path) -> str:
    if run is None:
        return f"{Path(file).name} (digit-recognizer pipeline)"
    params = run.get("params", {})
    return (f"run {run['id']}: {params.get('architecture')} x{params.get('members', 1)}, "
            f"val_acc {run.get('val_accuracy', 0):.4f}, epochs {params.get('epochs')}, "
            f"batch {params.get('batch_size')}, seed {params.get('seed')}, source {run.get('source')}")


def sent_submissions() -> dict:
    try:
        return json.loads(sent_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def record_sent_submission(digest: str, file: Path, message: str, answer: str) -> None:
    sent = sent_submissions()
    sent[digest] = {"file": str(file), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "message": message,
                    "answer": answer}
    write_json(sent_file(), sent)
