"""Progress inside an epoch or a prediction pass: one line every ~10 s, on a terminal only.

A log file or a pipe keeps the pipeline's one line per epoch; a person watching a terminal sees the
batches move during epochs of half a minute or more, and a prediction of 28,000 images.
"""

import os
import sys
import threading
import time

# Seconds between two lines; PIPELINE_PROGRESS_SECONDS changes it (the tests' epochs on the sample last seconds).
INTERVAL_S = float(os.environ.get("PIPELINE_PROGRESS_SECONDS", "10"))
_last_line_at = time.monotonic()


def mark_line() -> None:
    """Note that a line was just printed (Console.say does): the ticker counts its silence from the last one."""
    global _last_line_at
    _last_line_at = time.monotonic()


def on_terminal() -> bool:
    return sys.stdout.isatty()


def batch_ticker(log, label: str, total_batches: int, phase: str = "train"):
    """A Keras callback that logs 'LABEL: batch B of N, S s' every INTERVAL_S seconds (phase: train or predict),
    and measures how much longer the first batch took (building the graph) than the others.

    The lines come from a thread, not from batch ends: the first batch, a smaller last batch and the first
    pass over the validation rows each build a graph for many seconds without ending a batch.
    """
    import keras

    class BatchTicker(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.label = label  # the caller may change it between epochs
            self._stop = threading.Event()
            self._thread = None
            self._begin()

        def _begin(self, logs=None):
            self.started = self.first_batch_end = self.last_batch_end = time.monotonic()
            self.batches = 0
            self.checking = False  # measuring the validation rows, after the epoch's batches

        def _batch_end(self, batch, logs=None):
            self.last_batch_end = time.monotonic()
            self.batches += 1
            if self.batches == 1:
                self.first_batch_end = self.last_batch_end

        def status(self) -> str:
            if self.checking:
                doing = "checking the validation rows"
            elif self.batches == 0:
                doing = f"building the graph, batch 1 of {total_batches}"
            else:
                doing = f"batch {min(self.batches + 1, total_batches)} of {total_batches}"
            return f"{self.label}: {doing}, {time.monotonic() - self.started:.0f} s"

        def _run_start(self, logs=None):
            if not on_terminal() or self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()

        def stop(self, logs=None):
            """End the lines (also called by the caller when fit or predict raised, e.g. on Ctrl-C)."""
            if self._thread is not None:
                self._stop.set()
                self._thread.join()
                self._thread = None

        def _beat(self):
            # Every INTERVAL_S without any line (the model's set-up before fit counts too), one line.
            while not self._stop.wait(min(1.0, INTERVAL_S / 2)):
                if time.monotonic() - _last_line_at >= INTERVAL_S:
                    log(self.status())
                    mark_line()

        def first_batch_extra_s(self) -> float:
            """How much longer the first batch took than the others (building the graph): 0 when unknown."""
            if self.batches < 2:
                return 0.0
            per_batch = (self.last_batch_end - self.first_batch_end) / (self.batches - 1)
            return max(0.0, self.first_batch_end - self.started - per_batch)

    ticker = BatchTicker()
    if phase == "train":
        ticker.on_train_begin = ticker._run_start
        ticker.on_epoch_begin = lambda epoch, logs=None: ticker._begin()
        ticker.on_train_batch_end = ticker._batch_end
        ticker.on_test_begin = lambda logs=None: setattr(ticker, "checking", True)
        ticker.on_train_end = ticker.stop
    else:
        ticker.on_predict_begin = lambda logs=None: (ticker._begin(), ticker._run_start())
        ticker.on_predict_batch_end = ticker._batch_end
        ticker.on_predict_end = ticker.stop
    return ticker
