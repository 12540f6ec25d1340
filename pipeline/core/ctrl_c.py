"""Ctrl-C inside Keras's own loops: let the loop end after its running batch, then raise KeyboardInterrupt.

Why: a KeyboardInterrupt raised inside model.fit or model.predict unwinds while TensorFlow's own threads still
work on the batch, and under load that once ended the process with glibc's "free(): invalid next size" abort
instead of the resumable exit.
"""

import contextlib
import signal
import threading


@contextlib.contextmanager
def ctrl_c_stops_after_its_batch(model, flag: str):
    """A Ctrl-C (SIGINT) inside the block sets model.<flag> (Keras's `stop_training` for fit, `stop_predicting`
    for predict, both checked after every batch) and raises KeyboardInterrupt once the block has ended; a second
    Ctrl-C raises at once. Only in the main thread with Python's own handler in place (a Ray worker or a caller
    with its own handler keeps it). The block must not use a stopped loop's partial result: it is left before that.
    """
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    pressed = []

    def on_ctrl_c(signal_number, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signal_number)
        setattr(model, flag, True)

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt
