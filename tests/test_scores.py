"""From a submission to its leaderboard score: submit waits for it, `submissions` fetches it later,
and both record it with the run; the real kaggle client against the stand-in API (tests/kaggle_stub.py)."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_in_process, run_pipeline, start_pipeline
from kaggle_stub import FAKE_KEY, FAKE_TOKEN, KaggleStub

from pipeline.competition import kaggle_api, scores
from pipeline.core import config, runs, sent_log
from pipeline.core.records import Run

RUN_ID = "20260101-120000-cnn"
ESTIMATE = {"accuracy": 0.9952, "low": 0.9945, "high": 0.9958, "kind": "cross-validation", "images": 42000,
            "errors": 202, "folds": 5}


def make_trained_run(root, source="kaggle:digit-recognizer", rows=28000):
    """A run.json, its submission and predict's record of it, as train and predict leave them (no training needed
    to send one)."""
    submission = root / "submissions" / f"{RUN_ID}.csv"
    submission.parent.mkdir(parents=True)
    submission.write_text("ImageId,Label\n" + "".join(f"{index},{index % 10}\n" for index in range(1, rows + 1)))
    run_dir = root / "data" / "models" / RUN_ID
    run_dir.mkdir(parents=True)
    run = {"id": RUN_ID, "date": "2026-01-01 12:00:00", "source": source, "preset": "default",
           "params": {"architecture": "cnn", "epochs": 18, "seed": 42, "batch_size": 64}, "estimate": ESTIMATE,
           "models": []}
    (run_dir / "run.json").write_text(json.dumps(run))
    (run_dir / "submission.json").write_text(json.dumps({"submission": str(submission), "rows": rows}))
    return submission


def read_run(root):
    """The run as `runs` composes it: run.json with predict's, report's records and the log of submissions sent."""
    return runs.read_run(config.Paths(root), RUN_ID).to_json()


def run_json_bytes(root) -> bytes:
    return (root / "data" / "models" / RUN_ID / "run.json").read_bytes()


def test_waits_grow_to_a_ceiling_and_stay_within_the_time_limit():
    pauses = list(scores.waits(100))
    assert pauses[0] == scores.FIRST_WAIT_S and pauses[1] == scores.FIRST_WAIT_S * scores.WAIT_GROWTH
    assert max(pauses) == scores.LONGEST_WAIT_S
    assert sum(pauses) == pytest.approx(100)
    assert list(scores.waits(0)) == []


def test_submit_waits_for_the_score_and_records_it_with_the_run(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    trained = run_json_bytes(root)
    with KaggleStub() as stub:
        stub.pending_polls, stub.private_score = 2, "0.99500"
        env = stub.client_env(tmp_path)
        result = run_pipeline(root, "submit", env=env)
        listed = run_in_process(root, "runs")
    assert result.returncode == 0, result.stderr
    assert ("scored 0.99543 public, 0.99500 private (estimate 0.9952, 95 % 0.9945-0.9958)"
            in result.stdout.splitlines()[-1])
    assert [name for name, _ in stub.api_calls].count("ListSubmissions") == 3  # pending twice, then scored
    assert read_run(root)["leaderboard"]["public_score"] == "0.99543"
    assert run_json_bytes(root) == trained  # the score lives in the sent log: run.json is train's alone
    header, row = listed.stdout.splitlines()[:2]
    assert "kaggle" in header and "0.99543" in row  # the public score's column
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
        assert "pending" in run_in_process(root, "runs").stdout.splitlines()[1]

        stub.outcome = "complete"
        listed = run_pipeline(root, "submissions", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if RUN_ID in line)
    assert "complete" in row and "0.99543" in row
    assert read_run(root)["leaderboard"]["public_score"] == "0.99543"
    sent = json.loads((root / "data" / "submissions_sent.json").read_text())
    assert [entry["public_score"] for entry in sent.values()] == ["0.99543"]
    assert [entry["run_id"] for entry in sent.values()] == [RUN_ID]


def test_killed_while_waiting_loses_nothing(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome, stub.pending_polls = "pending", 0  # scored at the first look once the outcome is complete
        env = stub.client_env(tmp_path)
        process = start_pipeline(root, "submit", "--timeout", "120", env=env)  # its temporary folder in the suite's
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
    assert lines[-1].endswith("scores are recorded with their runs (`make runs`)")  # review 57 F: the make form


@pytest.mark.parametrize("ignores_paging", [False, True], ids=["pages", "a server that ignores the page"])
def test_submissions_finds_a_waiting_send_behind_twenty_newer_ones(tmp_path, ignores_paging):
    """`submissions` read Kaggle's first page only (20): a send of ours with 20 newer submissions above it never got
    its score recorded."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls, stub.ignores_paging = 0, ignores_paging
        env = stub.client_env(tmp_path)
        assert run_pipeline(root, "submit", "--no-wait", env=env).returncode == 0
        for number in range(25):
            stub.add_submission(f"sent from the website {number}", "mine.csv")
        listed = run_pipeline(root, "submissions", env=env)
        pages = [request.get("page") for name, request in stub.api_calls if name == "ListSubmissions"]
    assert listed.returncode == 0, listed.stderr
    if ignores_paging:  # the second page repeats the first: no endless loop, the send stays waiting
        assert pages == [1, 2]
        assert read_run(root)["leaderboard"]["status"] == "PENDING"
        return
    assert pages == [1, 2]
    assert read_run(root)["leaderboard"]["public_score"] == "0.99543"
    rows = listed.stdout.splitlines()
    assert len([row for row in rows if "sent from the website" in row]) == 20  # the first page
    assert RUN_ID in rows[21] and "0.99543" in rows[21]  # then the send found on the second


def test_submit_refuses_a_model_trained_on_the_sample(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root, source="sample", rows=600)  # review 60 F: one of 28,000 rows (the user's test.csv) is sent
    with KaggleStub() as stub:
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "bundled sample" in result.stderr and "600 test rows" in result.stderr
    assert stub.submitted_files == []


# ---- Issue 21: the listing is bounded, and a failure after the send says the file was sent ----


def error_lines(result) -> list[str]:
    """What stderr says besides the client's upload bar."""
    return [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]


def assert_one_line_failure(result) -> str:
    """Exit 1 with one `error:` line on stderr (beside the upload's bar), no traceback, no secret."""
    lines = error_lines(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr and FAKE_KEY not in result.stdout + result.stderr
    return lines[0]


@pytest.mark.parametrize("mode", ["list-silent", "list-trickle"])
def test_submissions_on_a_stalled_listing_ends_in_one_line_within_the_limit(tmp_path, mode):
    """A listing without a time limit waited for ever (still waiting at 150 s with a 5 s setting)."""
    root = tmp_path / "project"
    with KaggleStub(mode=mode) as stub:
        env = {**stub.client_env(tmp_path), "PIPELINE_NETWORK_TIMEOUT": "1"}
        started = time.monotonic()
        result = run_pipeline(root, "submissions", env=env, timeout=60)
        elapsed = time.monotonic() - started
    message = assert_one_line_failure(result)
    assert "PIPELINE_NETWORK_TIMEOUT" in message and elapsed < 30, (message, elapsed)


@pytest.mark.parametrize("mode, expected", [("list-silent", "PIPELINE_NETWORK_TIMEOUT"),
                                            ("list-trickle", "PIPELINE_NETWORK_TIMEOUT"),
                                            ("list-fails", "500")])
def test_a_failure_while_waiting_says_the_file_was_sent_and_how_to_see_the_score(tmp_path, mode, expected):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub(mode=mode) as stub:
        env = {**stub.client_env(tmp_path), "PIPELINE_NETWORK_TIMEOUT": "1"}
        started = time.monotonic()
        result = run_pipeline(root, "submit", env=env, timeout=60)
        elapsed = time.monotonic() - started
    message = assert_one_line_failure(result)
    assert "submission 1001 was sent" in message and "make submissions" in message and expected in message, message
    assert "--force" not in message and elapsed < 30
    assert len(stub.submitted_files) == 1
    assert read_run(root)["leaderboard"] == {"ref": 1001, "status": "PENDING"}


def test_the_wait_for_a_score_ends_at_its_timeout_even_when_the_listing_stalls(tmp_path):
    """Review 57 F: `submit --timeout 5` waited 97 s on a listing that never answered (3 looks of the network's own
    limits, each 30-60 s): the looks now count in the wait, and its end is "not scored yet", not a failure."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub(mode="list-silent") as stub:
        started = time.monotonic()
        result = run_pipeline(root, "submit", "--timeout", "5", env=stub.client_env(tmp_path), timeout=120)
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submit: not scored yet after" in result.stdout and "make submissions" in result.stdout
    assert elapsed < 5 + scores.FIRST_LOOK_S + 10, elapsed  # the wait, a last look's few seconds, the start-up
    assert len(stub.submitted_files) == 1


def test_a_huge_listing_is_refused_in_one_line(tmp_path):
    """A 330 MB listing took 50 s and 1.8 GB: the answer is read up to a limit."""
    root = tmp_path / "project"
    with KaggleStub(mode="list-huge") as stub:
        stub.huge_listing_bytes = 3 * kaggle_api.MAX_LISTING_BYTES
        started = time.monotonic()
        result = run_pipeline(root, "submissions", env=stub.client_env(tmp_path), timeout=60)
        elapsed = time.monotonic() - started
    message = assert_one_line_failure(result)
    assert f"more than {kaggle_api.MAX_LISTING_BYTES // 10**6} MB" in message and elapsed < 30, (message, elapsed)


def test_an_error_reason_with_a_newline_is_one_line(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome, stub.error_description = "error", "Submission scoring failed:\nERROR: Label 11 is out of range"
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
    message = assert_one_line_failure(result)
    assert "Submission scoring failed: ERROR: Label 11 is out of range" in message


def test_kaggle_s_texts_about_a_submission_never_show_or_keep_a_key(tmp_path):
    """Kaggle's reason for not scoring a submission was printed, logged and put on the run's page as it came: whole,
    at any length, a key it quoted included. A description holding escape sequences reached the terminal as such."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome, stub.error_description = "error", f"Bad submission (auth {FAKE_KEY}) " + "x" * 3000
        env = stub.client_env(tmp_path)
        sent = run_pipeline(root, "submit", env=env)
        stub.outcome = "complete"
        stub.add_submission(f"from the website \x1b[31mred {FAKE_KEY}", "mine.csv")
        listed = run_pipeline(root, "submissions", env=env)
    message = assert_one_line_failure(sent)
    assert message.startswith("error: Kaggle could not score submission 1001: Bad submission (auth ***) xxx")
    assert len(message) < 1000
    assert listed.returncode == 0 and FAKE_KEY not in listed.stdout + listed.stderr and "\x1b" not in listed.stdout
    assert "from the website \\x1b[31mred ***" in listed.stdout
    assert FAKE_KEY not in (root / "data" / "submissions_sent.json").read_text()
    assert "auth ***" in json.dumps(read_run(root)["leaderboard"])


def test_a_forced_resend_keeps_every_send_in_the_log(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls = 0
        env = stub.client_env(tmp_path)
        first = run_pipeline(root, "submit", env=env)
        again = run_pipeline(root, "submit", "--force", "--message", "second try", env=env)
        refused = run_pipeline(root, "submit", env=env)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert refused.returncode == 1 and "already sent" in refused.stderr
    sent = json.loads((root / "data" / "submissions_sent.json").read_text())
    assert sorted((entry["ref"], entry["message"][:10], entry["status"]) for entry in sent.values()) == [
        (1001, "run 202601", "COMPLETE"), (1002, "second try", "COMPLETE")]


def test_a_send_without_a_number_is_never_matched_to_another_submission(tmp_path):
    """A missing ref was logged as 0, then matched by message to an older submission with the same text."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls = 0
        stub.add_submission("my message", "older.csv")  # sent earlier from elsewhere, scored 0.99543
        stub.omit_ref, stub.public_score = True, "0.97000"
        env = stub.client_env(tmp_path)
        sent = run_pipeline(root, "submit", "--message", "my message", env=env)
        listed = run_pipeline(root, "submissions", env=env)
    assert sent.returncode == 0, sent.stderr
    assert "no submission number" in sent.stdout and "make submissions" in sent.stdout
    assert [name for name, _ in stub.api_calls].count("ListSubmissions") == 1  # submissions, not the wait
    assert listed.returncode == 0, listed.stderr
    entry, = json.loads((root / "data" / "submissions_sent.json").read_text()).values()
    assert entry["ref"] is None and entry["status"] == "PENDING"
    assert "leaderboard" not in read_run(root) or read_run(root)["leaderboard"].get("ref") is None
    assert RUN_ID not in listed.stdout


def test_ctrl_c_while_waiting_points_to_submissions_not_to_sending_again(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.outcome = "pending"
        line, stderr = interrupted_submit(root, stub.client_env(tmp_path), ["--force", "--timeout", "120"],
                                          "waiting up to", ready=lambda: False, within_s=0.5)
    assert "make submissions" in line and "submission 1001 was sent" in line
    assert "same command again" not in stderr and "Traceback" not in stderr


def interrupted_submit(root, env: dict, arguments: list[str], started: str, ready, within_s: float):
    """Start `submit ARGUMENTS`, wait for a line with `started` and then until ready() (at most within_s), press
    Ctrl-C: its one error line (checked: exit 130, one line) and its stderr."""
    process = start_pipeline(root, "submit", *arguments, env=env)
    try:
        for output_line in process.stdout:
            if started in output_line:
                break
        deadline = time.monotonic() + within_s
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    lines = error_lines(subprocess.CompletedProcess([], 130, "", stderr))
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), stderr
    return lines[0], stderr



def test_ctrl_c_during_the_upload_says_it_may_have_arrived(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub(mode="silent") as stub:
        line, stderr = interrupted_submit(root, stub.client_env(tmp_path), [], "submit: sending",
                                          ready=lambda: bool(stub.api_calls), within_s=30)  # the upload has started
    assert "may have arrived" in line and "make submissions" in line and "same command again" not in stderr

@pytest.mark.parametrize("estimate", ["n/a", {"accuracy": 0.99, "high": 0.995, "kind": "holdout"}, [0.99]])
def test_a_run_json_with_a_wrong_shaped_estimate_is_treated_as_without_one(tmp_path, estimate):
    """`runs` and `submit` ended in a traceback (README: such records are treated as missing)."""
    root = tmp_path / "project"
    make_trained_run(root)
    run_file = root / "data" / "models" / RUN_ID / "run.json"
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "estimate": estimate}))
    listed = run_in_process(root, "runs")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert RUN_ID in listed.stdout and "none" in listed.stdout.splitlines()[1]
    with KaggleStub() as stub:
        stub.pending_polls = 0
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    last_line = result.stdout.splitlines()[-1]
    assert "scored 0.99543 public" in last_line and "estimate" not in last_line
    assert "estimate none" in stub.submission_descriptions[0]


def test_the_run_s_score_is_its_latest_send_s_whatever_the_file_s_digest(pipeline_root):
    """The log is kept sorted by key (the file's digest), not by time: the latest send is found by its date and
    number, so a run sent as two files (with and without TTA) shows the second one's score."""
    paths = config.paths()
    sent_log.record_sent_submission(paths, "f" * 64, paths.root / "a.csv", "with TTA", {"message": "ok", "ref": 1001},
                                    RUN_ID)
    sent_log.record_sent_submission(paths, "0" * 64, paths.root / "b.csv", "without", {"message": "ok", "ref": 1002},
                                    RUN_ID)
    for ref, score in ((1001, "0.91000"), (1002, "0.95000")):
        sent_log.update_sent_submission(paths, {"ref": ref, "status": "COMPLETE", "public_score": score,
                                                "private_score": "", "error_description": "", "description": ""})
    assert list(json.loads(paths.sent_submissions.read_text())) == ["0" * 64, "f" * 64]  # file order: by digest
    latest = runs.latest_leaderboard(sent_log.sent_submissions(paths), RUN_ID)
    assert (latest.ref, latest.public_score) == (1002, "0.95000")
    assert [entry["ref"] for entry in sent_log.sends_of(sent_log.sent_submissions(paths), "0" * 64)] == [1002]


@pytest.mark.parametrize("damage", ['{"abc": {"ref": 1001},', "[1, 2]"])
def test_a_damaged_sent_log_is_refused_before_sending_and_kept(tmp_path, damage):
    """It alone says what was sent: read as empty, the file would be sent again and the log rewritten."""
    root = tmp_path / "project"
    make_trained_run(root)
    log = root / "data" / "submissions_sent.json"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(damage)
    with KaggleStub() as stub:
        result = run_pipeline(root, "submit", "--no-wait", env=stub.client_env(tmp_path))
        listed = run_in_process(root, "runs")
    message = assert_one_line_failure(result)
    assert f"{log}: not " in message and "log of what was sent to Kaggle" in message
    assert stub.submissions == [] and log.read_text() == damage
    assert listed.returncode == 0 and RUN_ID in listed.stdout  # the table still lists the run, without a score


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1"])
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused_before_sending(tmp_path, timeout):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        result = run_pipeline(root, "submit", "--timeout", timeout, env=stub.client_env(tmp_path))
    message = assert_one_line_failure(result)
    assert f"--timeout {float(timeout)}: expected a number of seconds, 0 or more" in message
    assert stub.submissions == [] and not (root / "data" / "submissions_sent.json").exists()


@pytest.mark.parametrize("options, expected", [
    (["--run", RUN_ID, "--file", "other.csv"], f"--run {RUN_ID} and --file other.csv: name one (--run sends that"
                                               " run's submission)"),  # --run was ignored without a word
    (["--message", ""], "--message '': expected some text"),  # the default message was sent instead
    (["--message", "   "], "--message '   ': expected some text"),  # sent as typed
    (["--competition", "../x", "--force"], "'../x' is not a Kaggle competition name"),
])
def test_submit_options_that_cannot_be_meant_are_refused_before_sending(tmp_path, options, expected):
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        result = run_pipeline(root, "submit", *options, env=stub.client_env(tmp_path))
    assert expected in assert_one_line_failure(result)
    assert "sending" not in result.stdout  # it said it was sending, then refused
    assert stub.submissions == [] and not (root / "data" / "submissions_sent.json").exists()


def test_submit_without_credentials_never_says_it_is_sending(tmp_path):
    root = tmp_path / "project"
    make_trained_run(root)
    result = run_pipeline(root, "submit", env={"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path / "none")})
    assert "no Kaggle credentials found" in assert_one_line_failure(result)
    assert result.stdout == ""


def test_a_file_sent_before_is_refused_as_such_even_without_credentials(tmp_path):
    """With the credentials check first, sending a file again said `no Kaggle credentials found`, not that it was
    sent already."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls = 0
        assert run_pipeline(root, "submit", "--no-wait", env=stub.client_env(tmp_path)).returncode == 0
    again = run_pipeline(root, "submit", env={"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path / "none")})
    refused = assert_one_line_failure(again)
    assert "this file was already sent on" in refused
    assert refused.endswith("so `make submit FORCE=1` sends it again")  # review 57 F: `make submit --force` is make's
    # a bad competition name first: "pass --force to send it again" would only lead to that refusal
    named = run_pipeline(root, "submit", "--competition", "../x")
    assert "'../x' is not a Kaggle competition name" in assert_one_line_failure(named)


def test_a_send_killed_after_kaggle_had_it_is_not_sent_again_and_its_score_is_found(tmp_path):
    """Review 58 L: a submit killed (a closed terminal, the OOM killer) after Kaggle accepted the file but before the
    log had its answer: the next `make submit` sent the same file again without a word, a second of the day's few."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls, stub.answer_created_after_s = 0, 60
        env = stub.client_env(tmp_path)
        process = start_pipeline(root, "submit", "--no-wait", env=env)
        deadline = time.time() + 60
        while not stub.submissions and time.time() < deadline:
            time.sleep(0.05)
        process.kill()
        process.wait(timeout=30)
        assert len(stub.submissions) == 1 and process.returncode == -signal.SIGKILL
        stub.answer_created_after_s = 0
        again = run_pipeline(root, "submit", env=env)
        refused = assert_one_line_failure(again)
        assert "its send on " in refused and "did not finish (interrupted, killed, or a network failure after the" \
            " upload) and may have arrived: `make submissions`" in refused
        assert len(stub.submissions) == 1  # not sent again
        assert read_run(root).get("leaderboard") is None  # not known to have arrived: no status shown as the run's
        listed = run_pipeline(root, "submissions", env=env)  # the send found on Kaggle's list: its score is the run's
        assert listed.returncode == 0 and read_run(root)["leaderboard"]["public_score"] == "0.99543", listed.stdout
        third = run_pipeline(root, "submit", env=env)
        assert "this file was already sent on" in assert_one_line_failure(third) and len(stub.submissions) == 1


@pytest.mark.parametrize("mode, kept", [("upload-fails", False), ("unauthenticated", False), ("garbage", True)])
def test_a_failed_send_is_refused_next_time_only_where_kaggle_may_have_it(tmp_path, mode, kept):
    """Review 58 (diff): the log forgot every failed send whose message lacked one phrase, a dropped connection
    after the upload too. A refusal (4xx) or a failed upload did not arrive; an answer that is not Kaggle's may
    come after it has the file."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub(mode=mode) as stub:
        env = stub.client_env(tmp_path)
        assert run_pipeline(root, "submit", "--no-wait", env=env).returncode == 1
        stub.mode = "ok"
        again = run_pipeline(root, "submit", "--no-wait", env=env)
    if kept:
        assert "and may have arrived" in assert_one_line_failure(again) and len(stub.submissions) == 0
    else:
        assert again.returncode == 0 and len(stub.submissions) == 1, again.stderr


def test_submissions_quiet_prints_the_table_alone(tmp_path):
    """README: QUIET prints only errors (and the tables of `runs`, `submissions`); review 58 R: its footer came too."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub() as stub:
        stub.pending_polls = 0
        env = stub.client_env(tmp_path)
        assert run_pipeline(root, "submit", "--no-wait", env=env).returncode == 0
        loud, quiet = (run_pipeline(root, *quiet, "submissions", env=env) for quiet in ([], ["--quiet"]))
    assert loud.returncode == quiet.returncode == 0 and "run: sent from this checkout" in loud.stdout
    assert quiet.stdout.splitlines() == loud.stdout.splitlines()[:2] and quiet.stdout.startswith("ref "), quiet.stdout


def test_a_send_cut_short_is_adopted_only_by_a_listed_submission_that_can_be_it(pipeline_root):
    """Review 58 (diff): a cut-short send took the ref and score of any listed submission with its message, one
    made in 2020 or on another competition too."""
    from pipeline.core import cache

    paths = config.paths()
    submission = make_trained_run(pipeline_root)
    sent_log.record_sending(paths, cache.file_digest(submission), submission, "my message", RUN_ID)
    today = time.strftime("%Y-%m-%d")

    def listed(ref, date):
        return {"ref": ref, "date": f"{date}T12:00:00.000Z", "description": "my message", "status": "COMPLETE",
                "public_score": "0.5", "private_score": "", "error_description": ""}

    assert sent_log.update_sent_submission(paths, listed(55, "2020-01-01"), "digit-recognizer") is None  # older
    assert sent_log.update_sent_submission(paths, listed(56, today), "titanic") is None  # another competition's
    assert sent_log.update_sent_submission(paths, listed(57, today)) is None  # the listing's competition unknown
    newer = sent_log.record_sending(paths, cache.file_digest(submission), submission, "my message", RUN_ID)
    # review 58 R: of two sends cut short, the newest is the one Kaggle lists (the older never arrived): taking the
    # oldest left the newer refused for ever
    assert sent_log.update_sent_submission(paths, listed(58, today), "digit-recognizer")["ref"] == 58
    assert sent_log.sent_submissions(paths)[newer]["ref"] == 58
    assert runs.read_run(paths, RUN_ID).leaderboard.public_score == "0.5"


def test_the_advice_to_send_again_names_the_run_or_file_that_was_asked_for(tmp_path):
    """Review 58 K: after `make submit RUN=<A>` or `FILE=mine.csv` was refused as sent already, the advice was
    `make submit FORCE=1`, which sent the last chain's file instead: a day's submission spent on another file."""
    root = tmp_path / "project"
    make_trained_run(root)
    run_id = read_run(root)["id"]
    mine = tmp_path / "my copy.csv"
    mine.write_bytes(next((root / "submissions").glob("*.csv")).read_bytes())
    with KaggleStub() as stub:
        stub.pending_polls = 0
        env = stub.client_env(tmp_path)
        assert run_pipeline(root, "submit", "--no-wait", env=env).returncode == 0
        by_run = run_pipeline(root, "submit", "--run", run_id, env=env)
        by_file = run_pipeline(root, "submit", "--file", str(mine), env=env)
        assert len(stub.submissions) == 1
    assert assert_one_line_failure(by_run).endswith(f"so `make submit RUN={run_id} FORCE=1` sends it again")
    assert assert_one_line_failure(by_file).endswith(f"so `make submit FILE='{mine}' FORCE=1` sends it again")


def test_a_score_on_another_competition_s_leaderboard_is_not_the_run_s(pipeline_root):
    """A run's file sent with `--competition titanic` had its score shown as the run's, with the gap to its estimate."""
    from pipeline.core import cache

    submission = make_trained_run(pipeline_root)
    paths = config.paths()
    digest = cache.file_digest(submission)
    sent_log.record_sent_submission(paths, digest, submission, "m", {"message": "ok", "ref": 1001}, RUN_ID, "titanic")
    sent_log.update_sent_submission(paths, {"ref": 1001, "status": "COMPLETE", "public_score": "0.77000",
                                            "private_score": "", "error_description": "", "description": ""})
    assert runs.read_run(paths, RUN_ID).leaderboard is None
    sent = sent_log.sent_submissions(paths)
    assert runs.latest_leaderboard(sent, RUN_ID).public_score == "0.77000"  # any competition
    sent_log.record_sent_submission(paths, digest, submission, "m", {"message": "ok", "ref": 1002}, RUN_ID)
    assert runs.read_run(paths, RUN_ID).leaderboard.ref == 1002  # its own competition's


def test_a_send_again_that_kaggle_could_not_score_leaves_the_run_s_score_shown(pipeline_root):
    """Review 57 F: a second send of a scored run that failed (or still waited) showed `error` in `runs`, sorted the
    run last by score, and replaced the score on its page and in `all`'s last line."""
    from pipeline.core import cache

    submission = make_trained_run(pipeline_root)
    paths = config.paths()
    for ref, status, score in ((1001, "COMPLETE", "0.99543"), (1002, "ERROR", "")):  # the same file, twice
        sent_log.record_sent_submission(paths, cache.file_digest(submission), submission, "m",
                                        {"message": "ok", "ref": ref}, RUN_ID)
        sent_log.update_sent_submission(paths, {"ref": ref, "status": status, "public_score": score,
                                                "private_score": "", "error_description": "no", "description": ""})
    shown = runs.read_run(paths, RUN_ID).leaderboard
    assert (shown.ref, shown.status, shown.public_score) == (1001, "COMPLETE", "0.99543")


def test_the_score_shown_beside_a_run_s_submission_is_that_file_s(pipeline_root):
    """Review 57 H: after `predict --tta` (a second file of the run), `runs` and the page showed the latest score
    of the run beside the file listed, whichever file had earned it."""
    from pipeline.core import cache

    plain = make_trained_run(pipeline_root)
    paths = config.paths()
    with_tta = plain.with_name(f"{RUN_ID}-2.csv")
    with_tta.write_text(plain.read_text().replace("\n1,1\n", "\n1,7\n"))
    for ref, file, score in ((1001, plain, "0.82100"), (1002, with_tta, "0.83000")):
        sent_log.record_sent_submission(paths, cache.file_digest(file), file, "m", {"message": "ok", "ref": ref},
                                        RUN_ID)
        sent_log.update_sent_submission(paths, {"ref": ref, "status": "COMPLETE", "public_score": score,
                                                "private_score": "", "error_description": "", "description": ""})
    assert runs.read_run(paths, RUN_ID).leaderboard.public_score == "0.82100"  # predict's record names <run>.csv
    (pipeline_root / "data" / "models" / RUN_ID / "submission.json").write_text(
        json.dumps({"submission": str(with_tta), "rows": 28000}))
    assert runs.read_run(paths, RUN_ID).leaderboard.public_score == "0.83000"
    never_sent = plain.with_name(f"{RUN_ID}-3.csv")
    never_sent.write_text(plain.read_text().replace("\n1,1\n", "\n1,2\n"))
    (pipeline_root / "data" / "models" / RUN_ID / "submission.json").write_text(
        json.dumps({"submission": str(never_sent), "rows": 28000}))
    assert runs.read_run(paths, RUN_ID).leaderboard is None  # not "0.83000" beside a file never sent


def test_a_send_logged_by_an_earlier_version_keeps_its_score_beside_the_file(pipeline_root):
    """Review 57 diff: entries of the sent log written before it held a "digest" field (keyed by the digest) lost
    their score once the score beside a file was that file's."""
    from pipeline.core import cache

    submission = make_trained_run(pipeline_root)
    paths = config.paths()
    digest = cache.file_digest(submission)
    paths.sent_submissions.write_text(json.dumps({digest: {
        "file": f"submissions/{RUN_ID}.csv", "date": "2026-01-02 10:00:00", "message": "m", "ref": 1001,
        "run_id": RUN_ID, "status": "COMPLETE", "public_score": "0.99000"}}))
    assert runs.read_run(paths, RUN_ID).leaderboard.public_score == "0.99000"


def test_a_failure_at_the_end_of_a_wait_of_0_s_is_a_failure(tmp_path):
    """Review 57 diff: with --timeout 0, any failure of the one look (a 500, a key refused) was "not scored yet"."""
    root = tmp_path / "project"
    make_trained_run(root)
    with KaggleStub(mode="list-fails") as stub:
        result = run_pipeline(root, "submit", "--timeout", "0", env=stub.client_env(tmp_path))
    message = assert_one_line_failure(result)
    assert "submission 1001 was sent, but looking for its score failed" in message and "500" in message


def test_a_blend_s_submission_message_names_its_runs():
    """A blend's message, which Kaggle keeps on the leaderboard page for good, read `None x2, epochs None, ...`."""
    blend = Run.from_json({"id": "20260101-130000-blend", "source": "kaggle:digit-recognizer", "preset": "blend",
                           "params": {"blend_of": "1 x 20260101-120000-cnn + 2 x 20260101-110000-cnn"},
                           "estimate": ESTIMATE, "models": []}, "20260101-130000-blend")
    assert runs.submission_message(blend, Path("x.csv")) == (
        "run 20260101-130000-blend: blend of 1 x 20260101-120000-cnn + 2 x 20260101-110000-cnn, estimate 0.9952"
        " (cross-validation), source kaggle:digit-recognizer, file x.csv")


def test_all_s_last_line_knows_a_file_sent_before_under_another_run(pipeline_root):
    """After `make clean`, a chain made the sent file again byte for byte under a new run: its last line said to send
    it with `make submit`, which then refused it as sent already."""
    from pipeline.core import cache
    from pipeline.stages import chain

    submission = make_trained_run(pipeline_root)
    paths = config.Paths(pipeline_root)
    sent_log.record_sent_submission(paths, cache.file_digest(submission), pipeline_root / "submissions" / "old.csv",
                                    "m", {"message": "ok", "ref": 7}, run_id="20251231-120000-cnn")
    sent_log.update_sent_submission(paths, {"ref": 7, "status": "COMPLETE", "public_score": "0.99521",
                                            "private_score": "", "error_description": ""})
    said = chain._what_kaggle_said(RUN_ID, submission)
    assert said.startswith("the same file was sent on ") and said.endswith(
        " as submissions/old.csv, scored 0.99521 public; `make submit FORCE=1` sends it again")


def test_an_edited_submission_is_sent_as_no_run_s(tmp_path):
    """A file where predict wrote the run's submission but holding something else: its score is not the run's."""
    from pipeline.core import cache

    root = tmp_path / "project"
    submission = make_trained_run(root)
    record = {"stage": "predict", "key": {"params": {}}, "extra": {"submission": f"submissions/{RUN_ID}.csv"},
              "outputs": {f"submissions/{RUN_ID}.csv": cache.file_digest(submission)}, "finished_at": "x"}
    (root / "data" / ".cache").mkdir(parents=True)
    (root / "data" / ".cache" / "predict.json").write_text(json.dumps(record))
    (root / "data" / "models" / RUN_ID / "submission.json").write_text(
        json.dumps({"submission": f"submissions/{RUN_ID}.csv", "rows": 28000}))
    submission.write_text(submission.read_text().replace("\n5,5\n", "\n5,3\n"))  # one label changed by hand
    with KaggleStub() as stub:
        stub.pending_polls = 0
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"is not what predict wrote for run {RUN_ID} (edited since)" in result.stdout
    assert stub.submission_descriptions == [f"{RUN_ID}.csv (digit-recognizer pipeline)"]  # not the run's message
    entry, = json.loads((root / "data" / "submissions_sent.json").read_text()).values()
    assert entry["run_id"] is None and (read_run(root).get("leaderboard") or {}).get("ref") is None


@pytest.mark.parametrize("token_text", ["{token}\r", "{token}\n", "file:{token}\nsecond-line"])
def test_a_token_with_a_line_end_is_never_printed(tmp_path, token_text):
    """A token ending in \\r (a .env file saved on Windows) reached the error escaped (`...SECRET\\r`, two
    characters), which the raw value did not match: the whole token was printed."""
    root = tmp_path / "project"
    with KaggleStub() as stub:
        env = stub.client_env(tmp_path, credentials=None)
        text = token_text.format(token=FAKE_TOKEN)
        if text.startswith("file:"):
            (tmp_path / "token").write_text(text.removeprefix("file:"))
            env["KAGGLE_API_TOKEN"] = str(tmp_path / "token")
        else:
            env["KAGGLE_API_TOKEN"] = text
        results = [run_pipeline(root, *command, env=env) for command in (["submissions"],
                                                                         ["download", "--source", "kaggle"])]
    for result in results:
        output = result.stdout + result.stderr
        assert FAKE_TOKEN not in output and FAKE_TOKEN.replace("-SECRET", "") not in output, output
        assert "second-line" not in output and result.returncode == 1 and "Traceback" not in output


def test_an_access_token_file_that_cannot_be_read_is_one_line(tmp_path):
    """A folder where ~/.kaggle/access_token should be: a traceback (IsADirectoryError) from the client's lookup."""
    root = tmp_path / "project"
    with KaggleStub() as stub:
        env = stub.client_env(tmp_path, credentials=None)
        token_path = Path(env["HOME"]) / ".kaggle" / "access_token"
        token_path.mkdir(parents=True)
        result = run_pipeline(root, "download", "--source", "auto", env=env)
    message = assert_one_line_failure(result)
    assert message == (f"error: {token_path}: cannot be read as a Kaggle access token (IsADirectoryError); fix it or"
                       " remove it (README, 'Kaggle credentials')")


@pytest.mark.parametrize("content, said", [
    ('{"username": "me", "key": "abc123",}', "is not valid JSON, so the kaggle client ignores it"),
    ('{"username": "me"}', 'has no "username" and "key", so the kaggle client ignores it'),
    ('[{"username": "me", "key": "abc123"}]',  # it said "not valid JSON"
     'is a JSON array, not an object with "username" and "key", so the kaggle client cannot use it')])
def test_a_kaggle_json_the_client_ignores_is_said_when_make_all_falls_back_to_the_sample(tmp_path, content, said):
    """`--source auto` (make all) said only "no Kaggle credentials found": the warning written for this case
    came with --source kaggle alone."""
    root = tmp_path / "project"
    with KaggleStub() as stub:
        env = stub.client_env(tmp_path, credentials=None)
    kaggle_json = tmp_path / "kaggle-stub-config" / "kaggle.json"
    kaggle_json.write_text(content)
    kaggle_json.chmod(0o600)
    result = run_pipeline(root, "download", "--source", "auto", env=env)
    assert result.returncode == 0 and "no Kaggle credentials found, using the bundled sample" in result.stdout
    assert f"warning: {kaggle_json} {said}" in result.stderr
    assert "abc123" not in result.stdout + result.stderr


def test_a_kaggle_json_that_is_a_list_is_one_line_naming_it(tmp_path):
    """The client itself failed on it: `TypeError: list indices must be integers or slices, not str`."""
    root = tmp_path / "project"
    with KaggleStub() as stub:
        env = stub.client_env(tmp_path, credentials=None)
        kaggle_json = tmp_path / "kaggle-stub-config" / "kaggle.json"
        kaggle_json.write_text('["me", "abc123"]')
        kaggle_json.chmod(0o600)
        result = run_pipeline(root, "submissions", env=env)
    message = assert_one_line_failure(result)
    assert message.startswith(f"error: {kaggle_json}: a JSON array, expected an object") and "abc123" not in message
