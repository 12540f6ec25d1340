"""Kaggle's scores of the submissions sent from this checkout: waited for after submit, fetched
later by `submissions`, and kept with the runs they came from.

Kaggle scores a submission a few seconds to minutes after it arrives; until then it lists it as
PENDING. Every submission sent is logged (pipeline.core.sent_log.record_sent_submission) with its number
(`ref`) before any waiting starts, so a submit killed while waiting loses nothing: the next
`submissions` finds the score by that number and records it.
"""

import time

from pipeline.competition import kaggle_api
from pipeline.competition.network import NetworkTimeout
from pipeline.core import config, runs, sent_log
from pipeline.core.console import format_duration, format_table
from pipeline.core.errors import Interrupted, PipelineError
from pipeline.core.estimate import Estimate
from pipeline.core.records import Run, describe_gap
from pipeline.report.writer import refresh_page

DEFAULT_TIMEOUT_S = 300
FIRST_WAIT_S = 2.0  # Kaggle scores this competition's 28,000 rows in seconds
FIRST_LOOK_S = 5.0  # the least a look is given, even with a wait of 0 s (--timeout 0: one look, right after sending)
WAIT_GROWTH = 1.5
LONGEST_WAIT_S = 30.0  # a look every half minute at most: few calls, and a score is seen soon after it exists
HOW_TO_LOOK_LATER = config.how_to("`make submissions` (or `python -m pipeline submissions`)",
                                  "`digit-recognizer submissions`")


def waits(timeout_s: float):
    """The pauses between two looks: growing from FIRST_WAIT_S to LONGEST_WAIT_S, in all at most timeout_s."""
    left, wait = float(timeout_s), FIRST_WAIT_S
    while left > 0:
        pause = min(wait, left)
        yield pause
        left -= pause
        wait = min(wait * WAIT_GROWTH, LONGEST_WAIT_S)


def find(submissions: list[dict], ref: int) -> dict | None:
    """The listed submission numbered ref (a listed one without a number is never it)."""
    return next((submission for submission in submissions
                 if submission["ref"] is not None and submission["ref"] == ref),
                None)


def wait_for_score(competition: str, ref: int, timeout_s: float, sleep=time.sleep) -> dict | None:
    """The submission `ref` as Kaggle lists it once scored (or failed), or as last seen at the time limit. The
    looks count in the limit: a listing that stalls ends with it (each look's own network limits ran past it 37
    times over), and that is "not scored yet", as at the limit, not a failure."""
    ends = time.monotonic() + timeout_s

    def look(seen):
        try:
            left = max(ends - time.monotonic(), FIRST_LOOK_S)  # the first look, at least, gets a few seconds
            return find(kaggle_api.list_submissions(competition, within_s=left), ref) or seen, False
        except NetworkTimeout:
            if time.monotonic() < ends:  # the network's own limit, inside the wait: a failure
                raise
            return seen, True  # the wait's end cut the look short (a key refused, a 500: failures at any time)

    seen, timed_out = look(None)
    for pause in waits(timeout_s):
        if timed_out or (seen is not None and seen["status"] != "PENDING"):
            return seen
        pause = min(pause, ends - time.monotonic())
        if pause <= 0:
            return seen
        sleep(pause)
        seen, timed_out = look(seen)
    return seen


def describe_score(submission: dict, estimate: Estimate | None) -> str:
    """'scored 0.99543 public, 0.99500 private (estimate 0.9952, 95 % 0.9945-0.9958)'."""
    scores = [f"{submission['public_score']} public"]
    if submission.get("private_score"):
        scores.append(f"{submission['private_score']} private")
    line = f"scored {', '.join(scores)}"
    if estimate:
        line += f" (estimate {estimate.accuracy:.4f}, 95 % {estimate.low:.4f}-{estimate.high:.4f})"
    return line


# What a page written again also changes, set by the shell (pipeline.cli): the report stage's record
# (stages.report.remember_refreshed_page; the stages are a layer above this one).
ON_PAGE_REFRESHED = []


def record(paths, submission: dict, console=None, competition: str | None = None) -> str | None:
    """Keep a listed submission (of competition) in the sent log with its status and scores (where `runs` finds its
    run's score), and write the run's report page again when its score is new (the page shows it beside the
    estimate); the run id."""
    changed = False
    with sent_log.sent_log_lock(paths):
        run_id = sent_log.sent_run_id(paths, submission, competition)
        shown = run_id and runs.run_path(paths, run_id).is_file()
        before = runs.read_run(paths, run_id).leaderboard if shown else None  # as `runs` and the page show it
        sent_log.update_sent_submission(paths, submission, competition)
        if shown:
            changed = before != runs.read_run(paths, run_id).leaderboard
    if changed:
        if refresh_page(paths, run_id):
            for hook in ON_PAGE_REFRESHED:
                hook(paths, run_id)
            if console is not None and submission["status"] == "COMPLETE":
                console.say(f"submit: the score is on the report page {paths.report_index(run_id)}")
    return run_id


def wait_and_report(paths, console, competition: str, ref: int, run: Run | None, timeout_s: float) -> None:
    """After a submit: wait for the score, say it beside the run's estimate, and record it.

    The file is sent by now: a failure or Ctrl-C while waiting says so, and points to `submissions`
    (never to sending it again, which would spend another of the day's submissions).
    """
    console.say(f"submit: waiting up to {format_duration(timeout_s)} for Kaggle's score (submission {ref})")
    started = time.monotonic()
    sent = f"submission {ref} was sent"
    try:
        seen = wait_for_score(competition, ref, timeout_s)
    except PipelineError as error:
        raise PipelineError(f"{sent}, but looking for its score failed: {error}; see the score later with"
                            f" {HOW_TO_LOOK_LATER} (no need to send it again)") from None
    except KeyboardInterrupt:
        raise Interrupted(f"{sent}; Kaggle scores it without this command: see the score with {HOW_TO_LOOK_LATER}"
                          " (no need to send it again)") from None
    if seen is None or seen["status"] == "PENDING":
        console.say(f"submit: not scored yet after {format_duration(time.monotonic() - started)}; Kaggle keeps"
                    f" scoring it: see the score later with {HOW_TO_LOOK_LATER}")
        return
    record(paths, seen, console, competition)
    if seen["status"] == "ERROR":
        reason = " ".join(seen["error_description"].split()) or "no reason given"  # Kaggle's reason can span lines
        raise PipelineError(f"Kaggle could not score submission {ref}: {reason}")
    gap = describe_gap(runs.read_run(paths, run.id)) if run else ""
    console.say(f"submit: {describe_score(seen, run.estimate if run else None)}{f': {gap}' if gap else ''}")


# How far back `submissions` looks for a send of this checkout still waiting for its score: 200 submissions.
MOST_PAGES = 10


def listed_with_waiting_sends(paths, competition: str) -> list[dict]:
    """Kaggle's first page of submissions, and the sends of this checkout still waiting for a score from the pages
    after it: 20 newer submissions push a send off the first page, and its score is found only by its number."""
    listed = page = kaggle_api.list_submissions(competition)
    ours = [entry for entry in sent_log.sent_submissions(paths).values()
            if entry.get("competition", competition) == competition]
    waiting = {entry["ref"] for entry in ours if entry.get("ref") and entry.get("status") == "PENDING"}
    cut_short = {entry.get("message") for entry in ours if entry.get("status") == sent_log.SENDING}  # by message
    seen = {submission["ref"] for submission in listed}
    number = 1
    while ((waiting - seen or cut_short - {submission["description"] for submission in listed})
           and len(page) >= kaggle_api.LISTING_PAGE_SIZE and number < MOST_PAGES):
        number += 1
        page = kaggle_api.list_submissions(competition, page=number)
        new = [submission for submission in page if submission["ref"] not in seen]
        if not new:  # a server that answers its first page again
            break
        seen |= {submission["ref"] for submission in new}
        listed = listed + [submission for submission in new
                           if submission["ref"] in waiting or submission["description"] in cut_short]
    return listed


def show_submissions(paths, competition: str, footer: bool = True) -> str:
    """The competition's submissions with their scores and runs (the latest 20, and older sends of this checkout
    that were waiting for a score); scores of ours are recorded on the way."""
    listed = listed_with_waiting_sends(paths, competition)
    for submission in reversed(listed):  # oldest first, so a run sent twice keeps its newest score
        if submission["status"] != "PENDING":
            record(paths, submission, competition=competition)
    rows = []
    for submission in listed:
        run_id = sent_log.sent_run_id(paths, submission, competition)
        score = {"COMPLETE": submission["public_score"], "ERROR": "error"}.get(submission["status"], "pending")
        rows.append((submission["ref"] or "-", submission["date"][:19].replace("T", " "), submission["status"].lower(),
                     score, submission["private_score"] or "-", run_id or "-",
                     _shorten(submission["error_description"] or submission["description"])))
    if not rows:
        return (f"no submissions to {competition} yet (send one with"
                f" {config.how_to('`make submit`', '`digit-recognizer submit`')})")
    table = format_table(("ref", "date", "status", "public", "private", "run", "description"), rows)
    pending = sum(1 for submission in listed if submission["status"] == "PENDING")
    note = f"\n{pending} still pending: look again in a minute" if pending else ""
    if not footer:  # --quiet: the table alone (README)
        return table
    return (f"{table}\nrun: sent from this checkout; scores are recorded with their runs"
            f" ({config.how_to('`make runs`', '`digit-recognizer runs`')}){note}")


def _shorten(text: str, limit: int = 60) -> str:
    """One cell: one line, escape sequences shown as text (a description may hold any), at most limit characters."""
    text = " ".join(text.split())
    text = "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
