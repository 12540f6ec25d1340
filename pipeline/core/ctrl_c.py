"""Ctrl-C inside other code's loops and callbacks: taken when the block ends, then KeyboardInterrupt.

Why: a KeyboardInterrupt raised inside model.fit or model.predict unwinds while TensorFlow's own threads still
work on the batch, and under load that once ended the process with glibc's "free(): invalid next size" abort
instead of the resumable exit; one raised inside matplotlib's weakref callbacks (the report's pictures) is only
printed by Python, and the command went on to exit 0.
"""

import contextlib
import signal
import threading


@contextlib.contextmanager
def ctrl_c_after_the_block(on_press=None):
    """A Ctrl-C (SIGINT) inside the block raises KeyboardInterrupt once the block has ended, never inside it, where
    a library's callback could swallow it (Python only prints an exception raised in a weakref callback, as
    matplotlib's, and goes on); on_press() runs at the first press; a second Ctrl-C raises at once. Only in the
    main thread with Python's own handler in place (a Ray worker or a caller with its own handler keeps it)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pressed = []

    def on_ctrl_c(signal_number, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signal_number)
        if on_press is not None:
            on_press()

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt


def ctrl_c_stops_after_its_batch(model, flag: str):
    """A Ctrl-C (SIGINT) inside the block sets model.<flag> (Keras's `stop_training` for fit, `stop_predicting`
    for predict, both checked after every batch) and raises KeyboardInterrupt once the block has ended; a second
    Ctrl-C raises at once. The block must not use a stopped loop's partial result: it is left before that."""
    return ctrl_c_after_the_block(lambda: setattr(model, flag, True))
