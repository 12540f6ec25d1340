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


def on_terminal() -> bool:
    return sys.stdout.isatty()


def batch_ticker(log, label: str, total_batches: int, phase: str = "train"):
    """A Keras callback that logs 'LABEL: batch B of N, S s' every INTERVAL_S seconds (phase: train or predict),
    and measures how much longer the first batch took (building the graph) than the others."""
    import keras

    class BatchTicker(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.label = label  # the caller may change it between epochs
            self._begin()

        def _begin(self, logs=None):
            self.started = self.last_line = self.first_batch_end = self.last_batch_end = time.monotonic()
            self.batches = 0

        def _batch_end(self, batch, logs=None):
            now = self.last_batch_end = time.monotonic()
            self.batches += 1
            if self.batches == 1:
                self.first_batch_end = now
            if on_terminal() and now - self.last_line >= INTERVAL_S:
                self.last_line = now
                log(f"{self.label}: batch {batch + 1} of {total_batches}, {now - self.started:.0f} s")

        def _heartbeat(self, stop: threading.Event) -> None:
            # Between two batch callbacks TensorFlow can work for a minute without a word: the first epoch's
            # last, smaller batch makes it build the step's graph again (57 s on a loaded 2-core machine).
            while not stop.wait(1.0):
                now = time.monotonic()
                if now - self.last_line >= INTERVAL_S:
                    self.last_line = now
                    log(f"{self.label}: still working (TensorFlow prepares a step), {now - self.started:.0f} s")

        def _start_heartbeat(self, logs=None):
            self._begin()
            if on_terminal():
                self.stop_heartbeat = threading.Event()
                threading.Thread(target=self._heartbeat, args=(self.stop_heartbeat,), daemon=True).start()

        def _stop_heartbeat(self, *arguments):
            if getattr(self, "stop_heartbeat", None) is not None:
                self.stop_heartbeat.set()
                self.stop_heartbeat = None

        def first_batch_extra_s(self) -> float:
            """How much longer the first batch took than the others (building the graph): 0 when unknown."""
            if self.batches < 2:
                return 0.0
            per_batch = (self.last_batch_end - self.first_batch_end) / (self.batches - 1)
            return max(0.0, self.first_batch_end - self.started - per_batch)

    ticker = BatchTicker()
    if phase == "train":
        ticker.on_epoch_begin = lambda epoch, logs=None: ticker._start_heartbeat()
        ticker.on_train_batch_end = ticker._batch_end
        ticker.on_epoch_end = ticker.on_train_end = ticker._stop_heartbeat
    else:
        ticker.on_predict_begin = ticker._start_heartbeat
        ticker.on_predict_batch_end = ticker._batch_end
        ticker.on_predict_end = ticker._stop_heartbeat
    return ticker
