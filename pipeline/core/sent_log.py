"""The log of submissions sent to Kaggle from this checkout (data/submissions_sent.json): what was sent, when, its
number and what Kaggle said of it. It is what keeps a file from being sent twice, and where a run's score lives
(pipeline.core.runs composes it into the run). A send is logged before its upload (SENDING), so that one cut short
(Ctrl-C, a closed terminal, a killed process) after Kaggle may have received it is not sent again without a word."""

import contextlib
import datetime
import json
import time
from pathlib import Path

from filelock import FileLock

from pipeline.core import cache, config
from pipeline.core.errors import PipelineError

SENDING = "SENDING"  # logged before the upload; Kaggle's answer replaces it


@contextlib.contextmanager
def sent_log_lock(paths: config.Paths):
    """The sent log's own lock: submit and submissions never wait behind a training run's lock."""
    paths.data.mkdir(parents=True, exist_ok=True)
    # filelock, as cache.exclusive_lock: an OS lock on Linux, macOS and Windows (fcntl is not on Windows).
    with FileLock(paths.data / ".submissions.lock"):
        yield


def sent_submissions(paths: config.Paths, strict: bool = True) -> dict:
    """The log of submissions sent from this checkout: one entry a send (what, when, its number and scoring),
    keyed by the file's digest, then <digest>-2, -3, ... for the same file sent again with --force.
    A damaged log is refused (strict): what was sent, and so what not to send again, is only there, and rewriting
    it would lose every entry. Not strict (the tables and pages that only show scores): read as empty."""
    path = paths.sent_submissions
    try:
        sent = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        sent = error
    if not isinstance(sent, dict) or not all(isinstance(entry, dict) for entry in sent.values()):
        if not strict:
            return {}
        reason = f"not valid JSON ({sent})" if isinstance(sent, Exception) else "not a JSON object of sends"
        raise PipelineError(f"{path}: {reason}; it is the log of what was sent to Kaggle, so nothing is sent or"
                            " recorded until it is mended (or moved aside, which forgets every earlier send)")
    return sent


def in_send_order(entries: list[dict]) -> list[dict]:
    """Log entries oldest first: by when they were sent, then Kaggle's number (the log file is kept sorted by key,
    the file's digest, not by time)."""
    def when(entry: dict) -> tuple[str, int]:
        number = str(entry.get("ref"))
        return str(entry.get("date", "")), int(number) if number.isdigit() else 0
    return sorted(entries, key=when)


def sends_of(sent: dict, digest: str) -> list[dict]:
    """Every logged send of the file with this digest, oldest first (entries older than `digest` are keyed by it)."""
    return in_send_order([entry for key, entry in sent.items() if entry.get("digest", key) == digest])


def record_sending(paths: config.Paths, digest: str, file: Path, message: str, run_id: str | None = None,
                   competition: str = config.COMPETITION) -> str:
    """Log a send before its upload (SENDING, no number yet); its key, for Kaggle's answer (record_sent_submission)
    or for forget_send when it failed before Kaggle had it. Every send keeps its own entry: a forced resend is
    another submission, with its own score."""
    sent = sent_submissions(paths)
    key, number = digest, 1
    while key in sent:
        number += 1
        key = f"{digest}-{number}"
    sent[key] = {"digest": digest, "file": cache.relative_name(file), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "message": message, "answer": None, "ref": None, "run_id": run_id, "competition": competition,
                 "status": SENDING}
    cache.write_json(paths.sent_submissions, sent)
    return key


def forget_send(paths: config.Paths, key: str) -> None:
    """A send that failed before Kaggle had the file (its error said so): no entry, nothing to refuse next time."""
    sent = sent_submissions(paths)
    if sent.pop(key, None) is not None:
        cache.write_json(paths.sent_submissions, sent)


def record_sent_submission(paths: config.Paths, digest: str, file: Path, message: str, answer: dict,
                           run_id: str | None = None, competition: str = config.COMPETITION,
                           key: str | None = None) -> None:
    """Log a sent submission with its Kaggle number (ref; None when Kaggle gave none), before waiting for its score:
    into the entry record_sending made (key), else a new one."""
    key = key or record_sending(paths, digest, file, message, run_id, competition)
    sent = sent_submissions(paths)
    sent[key].update(answer=answer["message"], ref=answer["ref"], status="PENDING")
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


def _cut_short_entry(sent: dict, submission: dict, competition: str | None) -> dict | None:
    """The entry of a send cut short (SENDING) that this listed submission of competition is: the same message and
    competition, listed no earlier than the day before the send (local time against Kaggle's UTC), and a number no
    entry has yet; the newest such send first (an older one cut short before its upload never arrived, and taking it
    left the one that did refused for ever). None where the listing's competition is not known."""
    listed_on = str(submission.get("date") or "")[:10]
    if competition is None or submission["ref"] is None or not listed_on or any(
            entry.get("ref") == submission["ref"] for entry in sent.values()):
        return None
    candidates = [entry for entry in sent.values() if entry.get("status") == SENDING
                  and entry.get("message") == submission["description"]
                  and entry.get("competition", config.COMPETITION) == competition]
    for entry in reversed(in_send_order(candidates)):
        try:
            sent_on = datetime.datetime.strptime(str(entry.get("date")), "%Y-%m-%d %H:%M:%S").date()
        except ValueError:
            continue
        if listed_on >= (sent_on - datetime.timedelta(days=1)).isoformat():
            return entry
    return None


def _entry_of(sent: dict, submission: dict, competition: str | None) -> dict | None:
    """The log entry of a listed submission of competition: by its number (or an old log's message), else the send
    cut short that it turns out to be."""
    return _sent_entry(sent, submission) or _cut_short_entry(sent, submission, competition)


def sent_run_id(paths: config.Paths, submission: dict, competition: str | None = None) -> str | None:
    """The run a listed submission (of competition, when known) came from, when it was sent from this checkout."""
    return (_entry_of(sent_submissions(paths), submission, competition) or {}).get("run_id")


def update_sent_submission(paths: config.Paths, submission: dict, competition: str | None = None) -> dict | None:
    """Record a listed submission's status and scores in its log entry (a send cut short that it turns out to be,
    too, where the listing's competition is known); the entry, None when not ours."""
    sent = sent_submissions(paths)
    entry = _entry_of(sent, submission, competition)
    if entry is None:
        return None
    entry.update(ref=submission["ref"], status=submission["status"], public_score=submission["public_score"],
                 private_score=submission["private_score"], error=submission["error_description"])
    cache.write_json(paths.sent_submissions, sent)
    return entry
