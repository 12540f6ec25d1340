"""download and submit through the CLI, with the real kaggle client against the local stand-in API."""

import json
import re
import zipfile
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, run_pipeline, start_pipeline
from kaggle_stub import FAKE_KEY, KaggleStub

COMPETITION_TEST_ROWS = 28000


@pytest.fixture(scope="module")
def competition_sized_archive(tmp_path_factory):
    """The sample's train.csv with a test.csv of the competition's 28,000 rows (the sample's, tiled)."""
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as sample:
        train = sample.read("train.csv")
        test_lines = sample.read("test.csv").decode().splitlines()
    rows = test_lines[1:]
    test = "\n".join([test_lines[0]] + [rows[index % len(rows)] for index in range(COMPETITION_TEST_ROWS)]) + "\n"
    sample_submission = "ImageId,Label\n" + "".join(f"{index},0\n" for index in range(1, COMPETITION_TEST_ROWS + 1))
    path = tmp_path_factory.mktemp("archive") / "digit-recognizer.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.csv", train)
        archive.writestr("test.csv", test)
        archive.writestr("sample_submission.csv", sample_submission)
    return path


def everything_written(root) -> str:
    """All text the pipeline wrote under root, to look for secrets in."""
    texts = []
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".html", ".txt", ".jsonl"):
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


@pytest.mark.slow
def test_kaggle_run_end_to_end_submit_once_and_the_score_on_the_report_page_and_in_runs(tmp_path,
                                                                                        competition_sized_archive):
    """One chain on the competition-sized data (it takes the longest of the Kaggle tests) serves what were two
    tests: the run end to end and one submit, and a score that appears on the report page and in `runs` without
    another command."""
    root = tmp_path / "project"
    with KaggleStub(mode="ok", archive=competition_sized_archive) as stub:
        env = stub.client_env(tmp_path)
        stub.pending_polls = 0  # scored by the first `submissions`
        quick = ["--preset", "quick", "--epochs", "1"]
        result = run_pipeline(root, "all", *quick, env=env)
        assert result.returncode == 0, result.stderr
        assert "Kaggle credentials found" in result.stdout
        assert stub.competition_names[:1] == ["digit-recognizer"]
        submission = next((root / "submissions").glob("*.csv"))
        assert len(submission.read_text().splitlines()) == COMPETITION_TEST_ROWS + 1
        page = next((root / "data" / "reports").glob("*/index.html"))
        assert "not submitted yet" in page.read_text()
        # run.json is train's alone: what `all`'s predict and report did, and submit and the scores do below,
        # goes to their own records (submission.json, report.json, the log of submissions sent)
        run_file = root / "data" / "models" / page.parent.name / "run.json"
        trained = run_file.read_bytes()
        train_record = json.loads((root / "data" / ".cache" / "train.json").read_text())
        assert json.loads(trained) == train_record["extra"]["run"]
        assert not {"submission", "report", "leaderboard"} & set(json.loads(trained))

        sent = run_pipeline(root, "submit", "--no-wait", env=env)
        assert sent.returncode == 0, sent.stderr
        assert stub.submitted_files == [submission.read_bytes()]
        run_id = submission.stem
        assert stub.submission_descriptions[0].startswith(f"run {run_id}: small")
        # the message names the run's estimate (main renamed val_acc to the estimate and its kind)
        description = stub.submission_descriptions[0]
        assert re.search(r"estimate [01]\.\d{4} \(holdout\)", description), description
        # `submissions` fetches the score: the page and `runs` show it beside the estimate, with the gap
        listed = run_pipeline(root, "submissions", env=env)
        assert listed.returncode == 0, listed.stderr
        text = page.read_text()
        assert "0.99543 public" in text and "points from the estimate" in text and "95 % interval" in text
        table = run_pipeline(root, "runs").stdout
        assert "0.99543" in table and re.search(r"\+\d+\.\d\d (in|out)", table), table
        # `all` after a scored submit says what came of it, not "send it with `make submit`"; a second `all`
        # finds the data cached: no new download request reaches Kaggle
        downloads = len(stub.competition_names)
        again_all = run_pipeline(root, "all", *quick, env=env)
        assert again_all.returncode == 0, again_all.stderr
        assert len(stub.competition_names) == downloads
        # the page `submissions` rewrote with the score is the report's: not drawn again (review 57 H)
        assert "report: up to date" in again_all.stdout, again_all.stdout
        assert "unkept" not in json.loads((root / "data" / ".cache" / "report.json").read_text())  # in the run cache
        assert "sent and scored 0.99543 public" in again_all.stdout.splitlines()[-1]
        assert "make submit`" not in again_all.stdout.splitlines()[-1]

        again = run_pipeline(root, "submit", env=env)
        assert again.returncode == 1 and "already sent" in again.stderr and "FORCE=1" in again.stderr
        assert len(stub.submitted_files) == 1
        # a scored `submit` (waiting) says the score and rewrites the page too
        (root / "data" / "reports" / page.parent.name / "index.html").write_text("stale")
        forced = run_pipeline(root, "submit", "--force", "--message", "second try", env=env)
        assert forced.returncode == 0 and stub.submission_descriptions[-1] == "second try", forced.stderr
        assert "scored 0.99543 public" in forced.stdout.splitlines()[-1]
        assert "score is on the report page" in forced.stdout and "0.99543 public" in page.read_text()
        assert run_file.read_bytes() == trained
        # review 57 F: a send again that Kaggle cannot score says no "score is on the report page", and hides
        # neither the run's score in `runs` nor on its page
        stub.outcome, stub.error_description = "error", "Kaggle could not process the file"
        failed = run_pipeline(root, "submit", "--force", env=env)
        assert failed.returncode == 1 and "could not process" in failed.stderr
        assert "report page" not in failed.stdout, failed.stdout
        assert "0.99543" in run_pipeline(root, "runs").stdout and "0.99543 public" in page.read_text()

    for output in (result.stdout + result.stderr, sent.stdout + sent.stderr, listed.stdout + listed.stderr,
                   again.stderr, forced.stdout + forced.stderr, everything_written(root)):
        assert FAKE_KEY not in output


@pytest.mark.slow
def test_submit_refuses_the_samples_predictions(quick_run_root, tmp_path):
    root = quick_run_root  # where `all --preset quick --epochs 1 --no-report` has run on the sample
    with KaggleStub(mode="ok") as stub:
        result = run_pipeline(root, "submit", env=stub.client_env(tmp_path))
        assert result.returncode == 1
        assert "bundled sample (600 test rows)" in result.stderr and result.stderr.count("\n") == 1
        assert stub.submitted_files == []
        # Review 60 F: the same run (its train rows are the sample's) predicting the user's own 28,000 test rows was
        # refused as "the bundled sample (600 test rows)", after `all` had said to send it with `make submit`
        own = tmp_path / "own"
        own.mkdir()
        with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
            (own / "train.csv").write_bytes(archive.read("train.csv"))
            header, *rows = archive.read("test.csv").decode().splitlines()
        (own / "test.csv").write_text("\n".join([header, *(rows[index % len(rows)] for index in range(28000))]) + "\n")
        chain = run_pipeline(root, "all", "--source", str(own), "--preset", "quick", "--epochs", "1", "--no-report")
        assert chain.returncode == 0 and "train: up to date" in chain.stdout, chain.stdout + chain.stderr
        sent = run_pipeline(root, "submit", "--no-wait", env=stub.client_env(tmp_path))
        assert sent.returncode == 0 and len(stub.submitted_files) == 1, sent.stdout + sent.stderr


@pytest.mark.parametrize("mode, expected", [
    ("rules", "https://www.kaggle.com/competitions/digit-recognizer/rules"),
    ("unauthenticated", "401"),
    ("not-found", "404"),
])
def test_download_errors_are_one_line(tmp_path, mode, expected):
    with KaggleStub(mode=mode) as stub:
        result = run_pipeline(tmp_path / "project", "download", "--source", "kaggle", env=stub.client_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert FAKE_KEY not in result.stdout + result.stderr
    assert not (tmp_path / "project" / "data" / "raw" / "train.csv").exists()


def test_a_download_of_the_wrong_files_keeps_the_zip_it_would_replace(tmp_path):
    """A Kaggle download that was a valid zip without train.csv replaced the kept data/raw/ zip before it was
    refused: the good copy was lost, and the next run without --force handed the client the wrong one."""
    root, raw = tmp_path / "project", tmp_path / "project" / "data" / "raw"
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("test.csv", "pixel0\n0\n")
    with KaggleStub(mode="ok") as stub:
        env = stub.client_env(tmp_path)
        assert run_pipeline(root, "download", "--source", "kaggle", env=env).returncode == 0
        kept = {path.name: path.read_bytes() for path in raw.iterdir()}
        stub.archive = wrong
        result = run_pipeline(root, "download", "--source", "kaggle", "--force", env=env)
    assert result.returncode == 1
    assert {path.name: path.read_bytes() for path in raw.iterdir()} == kept  # the zip and the CSVs as they were
    assert result.stderr.splitlines()[-1] == "error: the download of digit-recognizer: no train.csv in the " \
                                             "archive (expected the competition's files)"  # after the client's bar
    assert "digit-recognizer.zip" in kept


def test_kaggle_source_without_credentials(tmp_path):
    result = run_pipeline(tmp_path / "project", "download", "--source", "kaggle",
                          env={"HOME": str(tmp_path), "KAGGLE_CONFIG_DIR": str(tmp_path / "none")})
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "kaggle.json" in result.stderr


def test_group_readable_kaggle_json_is_warned_about(tmp_path):
    with KaggleStub(mode="ok") as stub:
        env = stub.client_env(tmp_path)
        (Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json").chmod(0o644)
        result = run_pipeline(tmp_path / "project", "download", "--source", "kaggle", env=env)
    assert result.returncode == 0, result.stderr
    assert "chmod 600" in result.stderr and FAKE_KEY not in result.stderr


def test_killed_kaggle_download_leaves_no_temporary_behind(tmp_path):
    """Issue 9: the client's staging folder outlived a killed download for ever."""
    import os
    import signal
    import subprocess
    import time

    root = tmp_path / "project"
    raw = root / "data" / "raw"
    with KaggleStub(mode="silent") as stub:
        # (start_pipeline: its temporary folder in the suite's, not left in /tmp by the kill)
        process = start_pipeline(root, "download", "--source", "kaggle", env=stub.client_env(tmp_path),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        def download_started() -> bool:
            return raw.is_dir() and any(path.name.startswith(".") for path in raw.iterdir())

        while time.time() < deadline and not download_started():
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert [path.name for path in raw.iterdir() if path.name.startswith(".")], "the download never started"
    result = run_pipeline(root, "download", "--source", "sample")
    assert result.returncode == 0, result.stderr
    assert [path.name for path in raw.iterdir() if path.name.startswith(".")] == []


@pytest.mark.slow
def test_submit_after_going_back_through_the_run_cache_sends_the_restored_runs_file(tmp_path,
                                                                                  competition_sized_archive):
    """Issue 21: seed 7, seed 42, seed 7 again (restored, with its old modification time): submit sent seed 42's."""
    root = tmp_path / "project"
    options = ("--preset", "quick", "--epochs", "1", "--no-report")
    with KaggleStub(mode="ok", archive=competition_sized_archive) as stub:
        env = stub.client_env(tmp_path)
        for seed in ("7", "42", "7"):
            result = run_pipeline(root, "all", *options, "--seed", seed, env=env)
            assert result.returncode == 0, result.stderr
        assert "predict: restored from the run cache" in result.stdout
        chosen = Path(result.stdout.splitlines()[-1].split("submission ", 1)[1].split(" (send it")[0])
        files = sorted((root / "submissions").glob("*.csv"), key=lambda path: path.stat().st_mtime)
        assert len(files) == 2 and files[-1] != chosen  # the newest file is the other run's
        sent = run_pipeline(root, "submit", "--no-wait", env=env)
    assert sent.returncode == 0, sent.stderr
    assert stub.submitted_files == [chosen.read_bytes()] and f"sending {chosen}" in sent.stdout
    assert "seed 7" in stub.submission_descriptions[0]
