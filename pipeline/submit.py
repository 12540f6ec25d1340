"""Stage 6, submit: check a submission file the way Kaggle will, then send it (pipeline.kaggle_api).

Kaggle allows only a few submissions a day, so a file already sent is not sent again unless forced,
and a file that Kaggle could not score is refused here rather than spending one.
"""

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.submission import check_submission, read_submission

# Rows of the competition's test.csv: a file with any other count cannot be scored.
COMPETITION_TEST_ROWS = {"digit-recognizer": 28000}


def validate_submission_file(path: Path, competition: str) -> int:
    """Number of rows of a valid submission for the competition; PipelineError otherwise."""
    image_ids, labels = read_submission(path)
    expected_rows = COMPETITION_TEST_ROWS.get(competition)
    check_submission(image_ids, labels, expected_rows, source=str(path))
    return len(image_ids)


def newest_submission(folder: Path) -> Path:
    finished = [path for path in folder.glob("*.csv") if not path.name.startswith(".")]
    candidates = sorted(finished, key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise PipelineError(f"{folder}: no submission yet (run `make all` or `python -m pipeline predict` first)")
    return candidates[-1]


def send(paths, console, file: Path | None, run_id: str | None, message: str | None, competition: str,
         force: bool) -> None:
    """Check a submission (the newest, or the run's, or file) and send it, once unless forced."""
    from pipeline import cache, kaggle_api, runs

    if file is None and run_id is not None:
        submission = runs.read_run(paths, run_id).get("submission")
        if not submission:
            raise PipelineError(f"--run {run_id}: this run has no submission yet (run `python -m pipeline predict`)")
        file = cache.absolute_path(submission)
    file = Path(file) if file else newest_submission(paths.submissions)
    rows = validate_submission_file(file, competition)
    digest = cache.file_digest(file)
    message = message or runs.submission_message(runs.run_for_submission(paths, file), file)
    with cache.exclusive_lock():  # two submits at once must not both send the same file
        earlier = runs.sent_submissions(paths).get(digest)
        if earlier and not force:
            raise PipelineError(f"{file}: this file was already sent on {earlier['date']} (as {earlier['file']}); "
                                "Kaggle allows few submissions a day, so pass --force to send it again")
        console.say(f"submit: sending {file} ({rows} rows) to {competition}: {message!r}")
        answer = kaggle_api.submit_file(competition, file, message, quiet=console.quiet)
        runs.record_sent_submission(paths, digest, file, message, answer)
    console.say(f"submit: Kaggle answered: {answer}")
