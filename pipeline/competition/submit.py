"""submit (not a cached stage): check a submission file the way Kaggle will, then send it
(pipeline.competition.kaggle_api).

Kaggle allows only a few submissions a day, so a file already sent is not sent again unless forced,
and a file that Kaggle could not score is refused here rather than spending one.
"""

import shlex
from pathlib import Path

from pipeline.competition import kaggle_api, scores
from pipeline.competition.submission import check_submission, read_submission
from pipeline.core import cache, config, runs, sent_log, stage
from pipeline.core.errors import Interrupted, PipelineError
from pipeline.core.records import Run


def validate_submission_file(path: Path, competition: str) -> int:
    """Number of rows of a valid submission for the competition; PipelineError otherwise."""
    expected_rows = config.COMPETITION_TEST_ROWS.get(competition)
    image_ids, labels = read_submission(path, max_rows=expected_rows)
    check_submission(image_ids, labels, expected_rows, source=str(path))
    return len(image_ids)


def current_submission(paths) -> Path:
    """The file the last predict wrote, or restored from the run cache (a restored file keeps its old
    modification time, so "newest" would pick another run's); the newest file when nothing was predicted here."""
    record = cache.load_record("predict") or {}
    submission = (record.get("extra") or {}).get("submission")
    if not isinstance(submission, str):
        return newest_submission(paths.submissions)
    path = cache.absolute_path(submission)
    if not path.is_file():
        raise PipelineError(f"{path}, which the last predict wrote, is gone: run"
                            f" {config.how_to('`make all`', '`digit-recognizer all`')} again, or name the file to"
                            f" send ({config.how_to('make submit FILE=... or --file', '--file')})")
    # Data changed since (a chain that stopped at prepare on the user's edited train.csv, or a test.csv prepared
    # since): the last predict's file is of the data before, and sending it would spend one of the day's submissions
    # on what the user did not mean. A new split (train's input) or other options do not count: its file is still
    # its run's.
    stale = stage.stale_upstream("predict")
    if stale and stale[0] != "train":
        run_id = ((record.get("key") or {}).get("params") or {}).get("run_id", "?")
        as_it_is = config.how_to(f"`make submit RUN={run_id}`", f"`digit-recognizer submit --run {run_id}`")
        raise PipelineError(f"{path} was predicted before {stale[1]} changed, and {stale[0]} has not run since:"
                            f" run {stage.all_again()} to predict from the data as it is now, or send this file as it"
                            f" is with {as_it_is}")
    return path


def newest_submission(folder: Path) -> Path:
    finished = [path for path in folder.glob("*.csv") if not path.name.startswith(".")]
    candidates = sorted(finished, key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise PipelineError(f"{folder}: no submission yet (run"
                            f" {config.how_to('`make all` or `python -m pipeline predict`', '`digit-recognizer all`')}"
                            " first)")
    return candidates[-1]


def refuse_sample_run(run: Run | None, file: Path, competition: str) -> None:
    """A model trained on the bundled sample predicted the sample's 600 test rows, not the competition's."""
    if run is not None and run.source == "sample" and competition in config.COMPETITION_TEST_ROWS:
        raise PipelineError(
            f"{file} comes from run {run.id}, trained and predicted on the bundled sample (600 test rows), which"
            f" Kaggle cannot score for {competition}: get the competition's data first (Kaggle credentials, README"
            f" 'Kaggle credentials', or {config.how_to('make all SOURCE=', 'digit-recognizer all --source ')}"
            f"path/to/digit-recognizer.zip), then {config.how_to('`make all`', '`digit-recognizer all`')} and submit")


def _send_again(file: Path | None, run_id: str | None, competition: str) -> str:
    """The command that sends the same file again: with the options that named it (`make submit FORCE=1` alone
    sent the last chain's file instead, spending a submission on it)."""
    make, command = [], []
    if run_id is not None:
        make, command = [f"RUN={shlex.quote(run_id)}"], ["--run", shlex.quote(run_id)]
    elif file is not None:
        make, command = [f"FILE={shlex.quote(str(file))}"], ["--file", shlex.quote(str(file))]
    if competition != config.COMPETITION:
        make, command = [*make, f"COMPETITION={shlex.quote(competition)}"], [*command, "--competition",
                                                                            shlex.quote(competition)]
    return config.how_to(f"`make submit {' '.join([*make, 'FORCE=1'])}`",
                         f"`digit-recognizer submit {' '.join([*command, '--force'])}`")


def send(paths, console, file: Path | None, run_id: str | None, message: str | None, competition: str,
         force: bool, wait: bool = True, timeout_s: float = 300) -> None:
    """Check a submission (the last predicted, or the run's, or file), send it once unless forced, and wait for
    its score."""
    if file is not None and run_id is not None:
        raise PipelineError(f"--run {run_id} and --file {file}: name one (--run sends that run's submission)")
    kaggle_api.check_competition_name(competition)  # before "already sent", whose advice (--force) would not do
    again = _send_again(file, run_id, competition)
    if message is not None and not message.strip():
        raise PipelineError(f"--message {message!r}: expected some text (leave it out for one that names the run)")
    if file is None and run_id is not None:
        submission = runs.read_run(paths, run_id).submission
        if not submission:
            again = config.how_to("`make all` with its options", "`digit-recognizer all` with its options")
            raise PipelineError(f"--run {run_id}: this run has no submission yet ({again} restores it and predicts"
                                " its submission)")
        file = cache.absolute_path(submission)
    file = Path(file) if file else current_submission(paths)
    if not 0 <= timeout_s < float("inf"):  # NaN too: refused before anything is sent
        raise PipelineError(f"--timeout {timeout_s}: expected a number of seconds, 0 or more")
    run, edited_from = runs.run_for_submission(paths, file)
    try:
        rows = validate_submission_file(file, competition)
    except PipelineError:  # the sample's 600 rows: said as such. A run trained on the sample that predicted the
        refuse_sample_run(run or edited_from, file, competition)  # user's own 28,000 test rows is sent.
        raise
    if edited_from is not None:
        console.say(f"submit: {file} is not what predict wrote for run {edited_from.id} (edited since): it is sent"
                    " as a file of no run, and its score will not be shown as that run's")
    digest = cache.file_digest(file)
    message = runs.submission_message(run, file) if message is None else message
    with sent_log.sent_log_lock(paths):  # two submits at once must not both send the same file
        earlier = sent_log.sends_of(sent_log.sent_submissions(paths), digest)
        if earlier and not force:
            when = earlier[-1].get("date", "?")
            if earlier[-1].get("status") == sent_log.SENDING:
                raise PipelineError(f"{file}: its send on {when} did not finish (interrupted, killed, or a network"
                                    f" failure after the upload) and may have arrived: {scores.HOW_TO_LOOK_LATER}"
                                    f" lists it, and records it if it did; {again} sends it again")
            raise PipelineError(f"{file}: this file was already sent on {when} (as {earlier[-1].get('file', '?')});"
                                f" Kaggle allows few submissions a day, so {again} sends it again")
        kaggle_api.check_credentials(competition)  # before the line that says it sends
        console.say(f"submit: sending {file} ({rows} rows) to {competition}: {message!r}")
        # Logged before the upload: a send cut short where Kaggle may have it (a closed terminal, a kill, Ctrl-C, a
        # dropped connection, a 5xx) is not sent again without a word. Kaggle's answer fills the entry in; a refusal
        # (4xx) or a failed upload removes it.
        key = sent_log.record_sending(paths, digest, file, message, run.id if run else None, competition)
        try:
            answer = kaggle_api.submit_file(competition, file, message, quiet=console.quiet)
        except KeyboardInterrupt:  # sending it again now could spend a second submission on the same file
            raise Interrupted(f"the upload of {file} was cut short and may have arrived: check with"
                              f" {scores.HOW_TO_LOOK_LATER} before sending it again") from None
        except kaggle_api.NotReceived:  # refused, or never uploaded: nothing to wait for
            sent_log.forget_send(paths, key)
            raise
        # The log is where the run's leaderboard status lives from now on (pipeline.core.runs.latest_leaderboard).
        sent_log.record_sent_submission(paths, digest, file, message, answer, key=key)
    console.say(f"submit: Kaggle answered: {answer['message']}")
    if answer["ref"] is None:  # nothing tells it apart from another submission with the same message
        console.say("submit: Kaggle's answer carried no submission number, so its score cannot be matched to this"
                    f" run; see it with {scores.HOW_TO_LOOK_LATER}")
    elif wait:
        scores.wait_and_report(paths, console, competition, answer["ref"], run, timeout_s)
    else:
        console.say(f"submit: not waiting for the score; see it later with {scores.HOW_TO_LOOK_LATER}")
