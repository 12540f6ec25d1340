"""From a submission to its leaderboard score: submit waits for it, `submissions` fetches it later,
and both record it with the run; the real kaggle client against the stand-in API (tests/kaggle_stub.py)."""

import json
import signal
import subprocess
import sys
import os

import pytest

from conftest import PROJECT_ROOT, run_pipeline
from kaggle_stub import FAKE_KEY, KaggleStub
from pipeline import scores

RUN_ID = "20260101-120000-cnn"
ESTIMATE = {"accuracy": 0.9952, "low": 0.9945, "high": 0.9958, "kind": "cross-validation", "images": 42000,
            "errors": 202, "folds": 5}


def make_trained_run(root, source="kaggle:digit-recognizer", rows=28000):
    """A run.json and its submission, as train and predict leave them (no training needed to send one)."""
    submission = root / "submissions" / f"{RUN_ID}.csv"
    submission.parent.mkdir(parents=True)
    submission.write_text("ImageId,Label\n" + "".join(f"{index},{index % 10}\n" for index in range(1, rows + 1)))
    run_dir = root / "data" / "models" / RUN_ID
    run_dir.mkdir(parents=True)
    run = {"id": RUN_ID, "date": "2026-01-01 12:00:00", "source": source, "preset": "default",
           "params": {"architecture": "cnn", "epochs": 18, "seed": 42, "batch_size": 64}, "estimate": ESTIMATE,
           "models": [], "submission": str(submission)}
    (run_dir / "run.json").write_text(json.dumps(run))
    return submission


def read_run(root):
    return json.loads((root / "data" / "models" / RUN_ID / "run.json").read_text())


def test_waits_grow_to_a_ceiling_and_stay_within_the_time_limit():
    pauses = list(scores.waits(100))
    assert pauses[0] == scores.FIRST_WAIT_S and pauses[1] == scores.FIRST_WAIT_S * scores.WAIT_GROWTH
    assert max(pauses) == scores.LONGEST_WAIT_S
    assert sum(pauses) == pytest.approx(100)
    assert list(scores.waits(0)) == []


def test_submit_waits_for_the_score_and_records_it_with_the_run(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls, stub.private_score = 2, "0.99500"
        env = stub.client_env(tmp_path)
        result = run_pipeline(root, "submit", env=env)
        listed = run_pipeline(root, "runs")
    assert result.returncode == 0, result.stderr
    assert ("scored 0.99543 public, 0.99500 private (estimate 0.9952, 95 % 0.9945-0.9958)"
            in result.stdout.splitlines()[-1])
    assert [name for name, _ in stub.api_calls].count("ListSubmissions") == 3  # pending twice, then scored
    assert read_run(root)["leaderboard"]["public_score"] == "0.99543"
    header, row = listed.stdout.splitlines()[:2]
    assert "leaderboard" in header and "0.99543" in row
    assert FAKE_KEY not in result.stdout + result.stderr


def test_a_submission_kaggle_cannot_score_prints_its_error(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome = "error"
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # beside the upload's bar
    assert len(errors) == 1 and stub.error_description in errors[0]
    assert read_run(root)["leaderboard"]["status"] == "ERROR"


def test_still_pending_at_the_limit_is_no_error_and_submissions_picks_it_up(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome = "pending"
        env = stub.client_env(tmp_path)
        result = run_pipeline(root, "submit", "--timeout", "1", env=env)
        assert result.returncode == 0, result.stderr
        assert "not scored yet" in result.stdout and "make submissions" in result.stdout
        assert read_run(root)["leaderboard"]["status"] == "PENDING"
        assert "pending" in run_pipeline(root, "runs").stdout.splitlines()[1]

        stub.outcome = "complete"
        listed = run_pipeline(root, "submissions", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if RUN_ID in line)
    assert "complete" in row and "0.99543" in row
    assert read_run(root)["leaderboard"]["public_score"] == "0.99543"
    sent = json.loads((root / "data" / "submissions_sent.json").read_text())
    assert [entry["public_score"] for entry in sent.values()] == ["0.99543"]


def test_killed_while_waiting_loses_nothing(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome, stub.pending_polls = "pending", 0  # scored at the first look once the outcome is complete
        env = {**os.environ, **stub.client_env(tmp_path), "PIPELINE_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen([sys.executable, "-m", "pipeline", "submit", "--timeout", "120"], cwd=PROJECT_ROOT,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for line in process.stdout:  # the log entry is written before the waiting starts
                if "waiting up to" in line:
                    break
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        stub.outcome = "complete"
        listed = run_pipeline(root, "submissions", env=env)
    assert process.returncode == -signal.SIGKILL
    assert listed.returncode == 0, listed.stderr
    assert read_run(root)["leaderboard"]["public_score"] == "0.99543"


def test_submissions_lists_others_without_a_run_and_no_wait_does_not_poll(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls = 0
        stub.add_submission("sent from the website", "mine.csv")
        env = stub.client_env(tmp_path)
        sent = run_pipeline(root, "submit", "--no-wait", env=env)
        assert "ListSubmissions" not in [name for name, _ in stub.api_calls]
        listed = run_pipeline(root, "submissions", env=env)
    assert sent.returncode == 0 and "make submissions" in sent.stdout
    lines = listed.stdout.splitlines()
    assert RUN_ID in lines[1]  # newest first
    assert "sent from the website" in lines[2] and RUN_ID not in lines[2]


def test_submit_refuses_a_model_trained_on_the_sample(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root, source="sample")
    with KaggleStub() as stub:
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "bundled sample" in result.stderr and "600 test rows" in result.stderr
    assert stub.submitted_files == []
