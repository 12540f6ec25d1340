"""What the pipeline prints, and how: one Console object passed to every stage, so --quiet reaches all."""

import os
import sys
import threading
from dataclasses import dataclass, field

from pipeline.core.progress import mark_line


@dataclass(frozen=True)
class Console:
    quiet: bool = False
    # The warnings already given: tune's trials train in one command, each would give its own copy.
    _warned: set = field(default_factory=set, compare=False, repr=False)
    _warning: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)  # trials' threads

    def say(self, message: str) -> None:
        """A progress line on stdout; nothing with --quiet."""
        if not self.quiet:  # one write per line: tune's trials print from several threads
            _write(message + "\n", sys.stdout, "standard output")
            mark_line()

    def warn(self, message: str) -> None:
        """A warning on stderr, shown even with --quiet (it asks the user to act); once a command."""
        with self._warning:
            if message in self._warned:
                return
            self._warned.add(message)
        _write(f"warning: {message}\n", sys.stderr, "standard error")


def _write(text: str, stream, name: str) -> None:
    """print's, with the output named when it cannot be written (a log on a full disk): the error named no file,
    and read as one under the pipeline's folders, where there was room."""
    try:
        print(text, end="", file=stream, flush=True)
    except OSError as error:
        if error.filename is None:
            error.filename = f"the command's output ({name})"
        raise


def count(number: int, noun: str) -> str:
    """'1 epoch', '2 epochs': a number with its noun in the right form (plural by an s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """12.3 s, or 2 min 05 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s"


def format_table(header: tuple, rows: list[tuple], align_right: bool = False) -> str:
    """Plain-text columns, as wide as their widest cell."""
    lines = [tuple(header), *[tuple(str(cell) for cell in row) for row in rows]]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    justify = str.rjust if align_right else str.ljust
    return "\n".join("  ".join(justify(cell, width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN, CUDA probing) kept off the terminal.

    That chatter is written straight to file descriptor 2 before any Python logging exists, so it
    is caught there; if the import fails, what was caught is shown after all.
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            tf.get_logger().setLevel("ERROR")  # its Python notes (tf.function retracing) say nothing to a user
        except KeyboardInterrupt:  # Ctrl-C: the chatter explains no failure
            raise
        except BaseException:
            os.dup2(saved_stderr, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
