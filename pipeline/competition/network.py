"""Time and size limits on the kaggle client's network calls: no call waits for ever, no answer is read
past its limit. The limits are set where every request of the client goes through (requests' HTTPAdapter).
"""

import contextlib
import os

from pipeline.competition.credentials import _error
from pipeline.core.errors import PipelineError

# A network call that receives no byte for this long is ended; the setting changes it.
NETWORK_TIMEOUT_VARIABLE = "PIPELINE_NETWORK_TIMEOUT"
DEFAULT_NETWORK_TIMEOUT_S = 60.0
# A server that trickles bytes never times out: the whole command gives up after this many timeouts.
DEADLINE_TIMEOUTS = 5


# ---- Time limits: no call waits for ever ----


def network_timeout() -> float:
    """Seconds without a byte after which a network call is ended ($PIPELINE_NETWORK_TIMEOUT, default 60)."""
    value = os.environ.get(NETWORK_TIMEOUT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_NETWORK_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 1e6:
        raise PipelineError(f"{NETWORK_TIMEOUT_VARIABLE}={value}: expected a number of seconds, e.g. 60")
    return seconds


class NetworkTimeout(PipelineError):
    """Kaggle sent nothing for the time limit, or not all of its answer: a wait for a score that ends then has
    only not seen the score yet (any other failure is one)."""


def timed_out(message: str) -> NetworkTimeout:
    return NetworkTimeout(str(_error(message)))


class _DeadlinePassed(BaseException):
    """Raised by the alarm; a BaseException, so the client's own `except Exception` retries miss it."""


class _AnswerTooLarge(Exception):
    def __init__(self, limit_bytes: int):
        super().__init__(f"more than {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


def _read_at_most(response, limit_bytes: int) -> None:
    """Read the answer's body into the response (where requests keeps it), or refuse it past limit_bytes."""
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit_bytes:
            response.close()
            raise _AnswerTooLarge(limit_bytes)
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what response.content and .json() then read


@contextlib.contextmanager
def _network_limits(what: str, max_answer_bytes: int | None = None, within_s: float | None = None):
    """Every request the client makes inside the block ends after network_timeout() seconds
    without a byte, and the whole block after DEADLINE_TIMEOUTS times that (a server that trickles).
    With max_answer_bytes, an answer read whole (not a download's stream) is refused past that size.
    within_s: both limits at most that (what is left of a wait for a score).

    The client passes no timeout of its own to requests (or 300 s), so the limit is set where every
    request goes through: requests' HTTPAdapter.send. The deadline is an alarm signal, which only
    the main thread receives; elsewhere only the per-request timeout applies.
    """
    import signal
    import threading
    import time

    from requests.adapters import HTTPAdapter

    timeout_s = network_timeout()
    deadline_s = DEADLINE_TIMEOUTS * timeout_s
    if within_s is not None:
        timeout_s, deadline_s = min(timeout_s, within_s), min(deadline_s, within_s)
    original_send = HTTPAdapter.send

    def send_with_timeout(adapter, request, stream=False, timeout=None, *args, **kwargs):
        if max_answer_bytes is None or stream:
            return original_send(adapter, request, stream, (timeout_s, timeout_s), *args, **kwargs)
        response = original_send(adapter, request, True, (timeout_s, timeout_s), *args, **kwargs)
        _read_at_most(response, max_answer_bytes)
        return response

    def on_alarm(signal_number, frame):
        raise _DeadlinePassed()

    in_main_thread = threading.current_thread() is threading.main_thread()
    HTTPAdapter.send = send_with_timeout
    if in_main_thread:
        previous_handler = signal.signal(signal.SIGALRM, on_alarm)
        previous_timer_s, _ = signal.setitimer(signal.ITIMER_REAL, deadline_s)
        started = time.monotonic()
    try:
        yield
    except _DeadlinePassed:
        raise timed_out(
            f"gave up on {what} after {deadline_s:g} s: Kaggle's answer was still not complete (the connection is "
            f"far too slow, or stalled); try again later, or give a slow connection more time with "
            f"{NETWORK_TIMEOUT_VARIABLE}=<seconds> (the command gives up after {DEADLINE_TIMEOUTS} times that)"
        ) from None
    finally:
        if in_main_thread:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_timer_s:  # someone else's alarm (pytest-timeout's, say) goes on where it was
                signal.setitimer(signal.ITIMER_REAL, max(previous_timer_s - (time.monotonic() - started), 0.001))
        HTTPAdapter.send = original_send
