"""The one exception a user sees: a single line, then a non-zero exit (see cli.main)."""


class PipelineError(Exception):
    """A problem the user can fix: bad input, missing credentials, a refused upload.

    The message is one line that names the file, row or column and says what was expected.
    The CLI prints it as `error: <message>` and exits with status 1, never with a traceback.
    """
