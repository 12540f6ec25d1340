"""The one exception a user sees: a single line, then a non-zero exit (see cli.main)."""

import errno
import re


def one_line(error: BaseException | str, max_chars: int = 300, every_line: bool = False) -> str:
    """An error's text as one line of a message: its first line (or, every_line, all its lines joined, for a
    server's reason that wraps), cut to max_chars with "..."; an exception without text gives its type's name."""
    text = str(error).strip()
    if not text:
        return "" if isinstance(error, str) else type(error).__name__
    line = " ".join(text.split()) if every_line else text.splitlines()[0]
    return line if len(line) <= max_chars else line[: max_chars - 3] + "..."


def quoted(text: str, max_chars: int = 60) -> str:
    """A value of the user's as a message quotes it: its repr, cut at max_chars with its length (a header of 785
    columns, or of 400,000, in one line)."""
    return repr(text) if len(text) <= max_chars else f"{text[:max_chars]!r}... ({len(text):,} characters)"


class PipelineError(Exception):
    """A problem the user can fix: bad input, missing credentials, a refused upload.

    The message is one line that names the file, row or column and says what was expected.
    The CLI prints it as `error: <message>` and exits with status 1, never with a traceback.
    """


class TrainingDiverged(PipelineError):
    """A model's loss became NaN or infinite: its training stopped at that batch (tune records the trial as
    diverged and goes on with the others)."""


class Interrupted(Exception):
    """Ctrl-C where the usual advice, run the same command again, would be wrong (a submit that has sent its
    file): the message says what to do instead. The CLI prints it as `interrupted: <message>`, exit status 130."""


# Failures to write that the user fixes outside the pipeline: a full disk or quota, a file-size
# limit, a read-only or forbidden folder.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def write_error(error: OSError, path=None) -> PipelineError | None:
    """The one-line error for an OSError of WRITE_ERRNOS (or a write cut short), naming path (else the error's own
    file); None for others."""
    short_write = _is_short_write(error)
    if error.errno not in WRITE_ERRNOS and not short_write:
        return None
    where = path or error.filename or "a file under the pipeline's folders"
    cause = "written in part only: a full disk or a file-size limit" if short_write else error.strerror or str(error)
    if error.errno == errno.EFBIG:  # a limit on a file's size (ulimit -f), not a full disk
        advice = "raise the file-size limit (ulimit -f), then run the same command again: finished outputs are kept"
    elif short_write or error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space, then run the same command again: finished outputs are kept"
    else:
        advice = "make the folder writable (or set PIPELINE_ROOT to one that is), then run the same command again"
    return PipelineError(f"{where}: cannot write ({cause}); {advice}")


def _is_short_write(error: OSError) -> bool:
    """NumPy's tofile (under np.save) says a write cut short by a full disk or a file-size limit without an errno:
    `6000 requested and 4064 written`."""
    return error.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(error)) is not None
