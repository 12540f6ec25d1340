"""The only place the project talks to Kaggle, through the official client (kaggle + kagglesdk).

The client is imported lazily: `import kaggle` authenticates at import time, creates its config
folder and, without credentials, prints a page of help to stdout. Every failure of the client
(HTTP errors, a lost connection, its `SystemExit` when no credentials are found) becomes a
PipelineError with one line that says what to do, and never contains the Kaggle key or token.
"""

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from pipeline.competition.credentials import (MAX_MESSAGE_CHARS, _detail, _error, _one_line,
                                              find_credentials, how_to_configure, redact,
                                              refuse_a_kaggle_json_the_client_breaks_on)
from pipeline.competition.network import (NETWORK_TIMEOUT_VARIABLE, _AnswerTooLarge, _network_limits,
                                          network_timeout, timed_out)
from pipeline.core.cache import make_folder
from pipeline.core.errors import PipelineError

# What KaggleApi.competition_submit returns, instead of raising, when the upload itself failed.
UPLOAD_FAILED_MESSAGE = "Could not submit to competition"
# Competition slugs are letters, digits and hyphens; anything else could also escape dest_dir.
COMPETITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
DOWNLOAD_ATTEMPTS = 3  # a download that times out is tried again, up to this many times in all
LISTING_ATTEMPTS = 3  # as for a listing of submissions: safe to repeat too
# A listing of 20 submissions (one page, the client's default) is about 20 kB: an answer far larger is
# refused part way, before it takes seconds and gigabytes to parse (a broken server sent 330 MB).
MAX_LISTING_BYTES = 10 * 10**6
# Before the second try; doubled before each further one. On top of the client's own retries, an
# immediate retry would only add load to a server that is already failing.
RETRY_FIRST_WAIT_S = 2.0


# ---- Talking to the client ----


def _no_credentials_error() -> PipelineError:
    source = find_credentials()
    if source and "token" in source.lower():  # a token is checked over the network: expired or revoked
        return _error(f"Kaggle did not accept the access token from {source} (expired or revoked?):"
                      f" {how_to_configure(source)}")
    if source:
        return _error(f"the kaggle client did not accept the credentials from {source}: {how_to_configure(source)}")
    return _error(f"no Kaggle credentials found: {how_to_configure(None)}")


def _import_kaggle():
    """The kaggle package; importing it authenticates a KaggleApi (kaggle.api), errors swallowed."""
    refuse_a_kaggle_json_the_client_breaks_on()
    try:
        import kaggle
    except ImportError as error:
        raise _error(f"the kaggle package is not installed ({error}); run: pip install -r requirements.txt") from None
    except Exception as error:  # e.g. it cannot create its config folder
        raise _error(f"cannot load the kaggle client: {type(error).__name__}: {_detail(error)}") from None
    return kaggle


def _authenticated_api():
    """A KaggleApi that has found credentials; an API key's validity is only known at the first call."""
    # Import and authenticate print help or warnings to stdout: our own messages replace them.
    with contextlib.redirect_stdout(io.StringIO()):
        kaggle = _import_kaggle()
        # The import already authenticated kaggle.api (it then names the method it used): reuse it
        # rather than check a token over the network twice.
        if kaggle.api.get_config_value(kaggle.api.CONFIG_NAME_AUTH_METHOD):
            return kaggle.api
        try:
            api = kaggle.KaggleApi()
            api.authenticate()  # again, this time to see why it failed
        except SystemExit:  # the client's way of saying "no credentials"
            raise _no_credentials_error() from None
        except Exception as error:  # an access token is checked over the network here
            raise _client_error(error, competition=None) from None
    return api


def _server_message(error) -> str:
    """The server's own message (the client puts a JSON error's message in the exception text)."""
    response = error.response
    return _detail(str(error) or (response.reason if response is not None else "") or "no message")


def _http_error(error, competition: str | None) -> PipelineError:
    response = error.response
    status = response.status_code if response is not None else None
    message = _server_message(error)
    name = competition
    if status == 401:
        source = find_credentials()
        return _error(f"Kaggle rejected the credentials from {source or 'your Kaggle credentials'} (401: {message});"
                      f" {how_to_configure(source)}")
    if status == 403 and name:
        return _error(
            f"Kaggle refused access to competition {name!r} (403: {message}); accept its rules at "
            f"https://www.kaggle.com/competitions/{name}/rules, signed in as the owner of your API token, "
            "then run again; a misspelled competition name gets the same answer, so check the name too"
        )
    if status == 404 and name:
        return _error(
            f"Kaggle has no competition {name!r} (404: {message}); check the name against https://www.kaggle.com/competitions"
        )
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        wait = f"wait {retry_after} s" if retry_after else "wait a few minutes"
        return _error(f"Kaggle is rate limiting this account (429: {message}); {wait} and try again")
    return _error(f"Kaggle answered {status}: {message}")


def _is_cut_off_download(error) -> bool:
    import requests
    import urllib3

    if isinstance(error, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return True
    # After its retries, the client checks the size itself and raises a plain ValueError.
    return isinstance(error, ValueError) and "does not match expected size" in str(error)


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception that requests and urllib3 wrapped (e.g. "Connection refused")."""
    seen = {id(error)}
    while True:
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((arg for arg in reversed(error.args) if isinstance(arg, BaseException)), None)
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


class NotReceived(PipelineError):
    """Kaggle answered with a 4xx, or the client could not upload the file: a submission that failed so did not
    arrive (a 5xx, a dropped connection or a timeout may come after Kaggle has it)."""


def _client_error(error: BaseException, competition: str | None, attempts: int = 1,
                  retry_advice: str = "try again later") -> PipelineError:
    """Turn what the client raised into one line saying what happened and what to do."""
    import requests

    if isinstance(error, requests.HTTPError):
        refused = _http_error(error, competition)
        status = error.response.status_code if error.response is not None else None
        return NotReceived(str(refused)) if status is not None and 400 <= status < 500 else refused
    if _is_cut_off_download(error):
        return _error(
            f"the connection to Kaggle dropped during the download of {competition}, even after the client's retries "
            f"({_detail(_root_cause(error))}); nothing was kept, run the command again"
        )
    if isinstance(error, requests.Timeout):
        return timed_out(
            f"Kaggle sent nothing for {network_timeout():g} s, {attempts} time{'s' * (attempts > 1)} "
            f"({_detail(_root_cause(error))}); check the network connection and {retry_advice}, or give a slow "
            f"connection more time with {NETWORK_TIMEOUT_VARIABLE}=<seconds>")
    if isinstance(error, requests.ConnectionError):
        reason = _detail(_root_cause(error))
        return _error(f"cannot reach Kaggle: {reason} (check the network connection and any proxy settings)")
    if isinstance(error, requests.exceptions.InvalidJSONError):  # an OSError too, but nothing was written
        return _error(
            f"Kaggle's answer was not valid JSON ({_detail(error)}); something between here and Kaggle (a proxy, a "
            f"login page of the network) may have answered instead: check the network connection and {retry_advice}")
    if isinstance(error, _AnswerTooLarge):
        return _error(f"Kaggle's answer for {competition} was more than {error.limit_bytes // 10**6} MB (a listing of"
                      f" 20 submissions is about 20 kB), so it was not read; {retry_advice}")
    if isinstance(error, OSError):  # after the requests errors, which are OSErrors too
        return _error(f"cannot write the download: {_detail(error)}")
    return _error(f"the kaggle client failed: {type(error).__name__}: {_detail(error)}")


def retry_wait_s(attempt: int) -> float:
    """The pause after failed try `attempt` (1, 2, ...): doubled each time, so a struggling server gets room."""
    return RETRY_FIRST_WAIT_S * 2 ** (attempt - 1)


def _pause_before_retry(seconds: float) -> None:
    """Sleep with the deadline's alarm stopped: the deadline bounds Kaggle's answers, not our own pauses."""
    import signal
    import threading
    import time

    in_main_thread = threading.current_thread() is threading.main_thread()
    remaining_s = signal.setitimer(signal.ITIMER_REAL, 0)[0] if in_main_thread else 0.0
    try:
        time.sleep(seconds)
    finally:
        if remaining_s:
            signal.setitimer(signal.ITIMER_REAL, remaining_s)


def _call_client(action, competition: str, attempts: int = 1, retry_advice: str = "try again later"):
    """action(), with up to `attempts` tries when the network stalls (only for what is safe to repeat),
    waiting retry_wait_s(1), retry_wait_s(2), ... between them."""
    import requests

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except SystemExit as error:  # the client exits in a few places instead of raising
            raise _error(f"the kaggle client stopped (exit status {error.code}) while working on"
                         f" {competition}") from None
        except Exception as error:
            if attempt < attempts and isinstance(error, (requests.Timeout, requests.ConnectionError)):
                _pause_before_retry(retry_wait_s(attempt))
                continue
            raise _client_error(error, competition, attempts=attempt, retry_advice=retry_advice) from None


def check_competition_name(competition: str) -> None:
    if not COMPETITION_NAME.fullmatch(competition or ""):
        raise PipelineError(
            f"{competition!r} is not a Kaggle competition name (expected letters, digits and hyphens,"
            " e.g. digit-recognizer)"
        )


# ---- Download ----


def _zip_problem(path: Path) -> str | None:
    """What is wrong with the zip at path, or None when every member reads back with its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as error:
        return str(error) or type(error).__name__
    return f"member {bad_member} is corrupt" if bad_member else None


def _staged_file(staging_dir: Path, expected: Path, competition: str) -> Path:
    """The file the client saved; it names it after the URL's extension, which should be .zip."""
    if expected.is_file():
        return expected
    saved = sorted(path.name for path in staging_dir.iterdir() if not path.name.endswith(".kaggle-partial"))
    raise _error(f"Kaggle sent no zip for {competition} (saved: {', '.join(saved) or 'nothing'})")


def download_competition(competition: str, dest_dir: Path, force: bool = False, quiet: bool = False,
                         check: Callable[[Path, str], None] | None = None) -> Path:
    """Download the competition's zip to dest_dir/<competition>.zip and return its path.

    The client writes into a temporary folder inside dest_dir; the zip is renamed into place only
    once it reads back whole, so a download that dies half way never leaves a file that looks done.
    Without force, an intact zip already there is handed to the client, which skips the download
    when it is as large as and not older than the server's copy. check(zip, name): the caller's test of what
    the zip holds (raising PipelineError), run before it replaces the one kept, which a zip of the wrong
    files must not.
    """
    check_competition_name(competition)
    with _network_limits(f"the download of {competition}"):
        return _download_competition(competition, Path(dest_dir), force, quiet, check)


class _RetryLines(io.TextIOBase):
    """The client's printed lines during a download: its retries pass, as the pipeline's; the rest goes."""

    RETRIES = ("Retrying in ", "Retry ", "Rate limited")  # its attempts, its resumes, and Kaggle's 429

    def __init__(self, out):
        self.out, self.pending = out, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.startswith(self.RETRIES):
                print(f"download: {line.strip()}", file=self.out, flush=True)
        return len(text)


def _download_competition(competition: str, dest_dir: Path, force: bool, quiet: bool, check) -> Path:
    final_path = dest_dir / f"{competition}.zip"
    api = _authenticated_api()
    make_folder(dest_dir)
    # ".tmp-": a process killed mid-download leaves it behind, and the next run sweeps it (cache.py).
    staging_dir = Path(tempfile.mkdtemp(prefix=".tmp-download-", dir=dest_dir))
    try:
        staged = staging_dir / final_path.name
        if not force and final_path.is_file() and _zip_problem(final_path) is None:
            shutil.copy2(final_path, staged)  # keeps the mtime the client compares with Last-Modified
        # Of the client's own lines only its retries stay (a slow link shows that it is still trying): on a failure
        # they say a partial file was kept to resume, which this download never keeps (its temporary folder goes).
        # Its progress bar, on stderr, stays.
        with contextlib.redirect_stdout(_RetryLines(sys.stdout)):
            _call_client(
                lambda: api.competition_download_files(competition, path=str(staging_dir), force=force, quiet=quiet),
                competition, attempts=DOWNLOAD_ATTEMPTS,
            )
        staged = _staged_file(staging_dir, staged, competition)
        problem = _zip_problem(staged)
        if problem:
            raise _error(f"the download of {competition} is not a complete zip ({problem}); run the command again")
        if check:
            check(staged, f"the download of {competition}")
        os.replace(staged, final_path)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return final_path


# ---- Submit ----


def check_credentials(competition: str) -> None:
    """The competition's name and the client's credentials (an access token is checked over the network), before
    a command says that it sends anything."""
    check_competition_name(competition)
    with _network_limits("the check of the Kaggle credentials"):
        _authenticated_api()


def submit_file(competition: str, csv_path: Path, message: str, quiet: bool = False) -> dict:
    """Submit csv_path to the competition with message as its description.

    Returns {"message": the server's answer, "ref": the submission's number, by which its score is found}.
    """
    check_competition_name(competition)
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise PipelineError(f"{csv_path}: no such file to submit")
    # Never retried: a submission whose answer was lost may have arrived, and Kaggle allows few a day.
    check_first = (f"check https://www.kaggle.com/competitions/{competition}/submissions before "
                   "sending it again (it may have arrived)")
    with _network_limits(f"the submission of {csv_path} ({check_first})"):
        api = _authenticated_api()
        response = _call_client(
            lambda: api.competition_submit(str(csv_path), message, competition, quiet=quiet), competition,
            retry_advice=check_first,
        )
    # A failed upload does not raise: the client returns this message (and printed the cause).
    if response.message == UPLOAD_FAILED_MESSAGE:
        raise NotReceived(f"the upload of {csv_path} to Kaggle failed ({UPLOAD_FAILED_MESSAGE}); run submit again")
    # No number (None): the score cannot be told apart from another submission's, so it is never guessed.
    return {"message": response.message, "ref": int(response.ref) if response.ref else None}


# ---- Scores ----

# The client's SubmissionStatus enum by name; what the project keeps of a listed submission.
SUBMISSION_FIELDS = ("ref", "description", "file_name", "status", "public_score", "private_score", "error_description")


LISTING_PAGE_SIZE = 20  # the client's own page


def list_submissions(competition: str, page: int = 1, within_s: float | None = None) -> list[dict]:
    """The competition's submissions by this account, newest first, as plain values: the page-th page of
    LISTING_PAGE_SIZE (fewer on the last page); within_s: the network's limits at most that, retries included.

    Each: {"ref" (None when Kaggle gives none), "date" (ISO 8601 text), "description", "file_name", "status" (PENDING,
    COMPLETE or ERROR), "public_score", "private_score" (text as Kaggle gives it, "" when none), "error_description"}.
    """
    check_competition_name(competition)
    with _network_limits(f"the listing of submissions to {competition}", max_answer_bytes=MAX_LISTING_BYTES,
                         within_s=within_s):
        api = _authenticated_api()
        listed = _call_client(lambda: api.competition_submissions(competition, page_number=page,
                                                                  page_size=LISTING_PAGE_SIZE),
                              competition, attempts=LISTING_ATTEMPTS) or []
    submissions = []
    for item in listed:
        if item is None:
            continue
        values = {name: getattr(item, name, None) for name in SUBMISSION_FIELDS}
        status = values["status"]
        values["status"] = getattr(status, "name", str(status or "PENDING"))
        values["ref"] = int(values["ref"]) if values["ref"] else None  # never 0: a number no send was given
        values["date"] = item.date.isoformat(timespec="seconds") if getattr(item, "date", None) else ""
        # Kaggle's texts, shown, kept in the sent log and on report pages, may quote a key as its errors may.
        for name in ("description", "file_name", "public_score", "private_score", "error_description"):
            values[name] = redact(str(values[name] or ""))
        values["error_description"] = _one_line(values["error_description"], MAX_MESSAGE_CHARS)
        submissions.append(values)
    return submissions
