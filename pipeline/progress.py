"""Progress inside an epoch or a prediction pass: one line every ~10 s, on a terminal only.

A log file or a pipe keeps the pipeline's one line per epoch; a person watching a terminal sees the
batches move during epochs of half a minute or more, and a prediction of 28,000 images.
"""

import os
import sys
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

        def first_batch_extra_s(self) -> float:
            """How much longer the first batch took than the others (building the graph): 0 when unknown."""
            if self.batches < 2:
                return 0.0
            per_batch = (self.last_batch_end - self.first_batch_end) / (self.batches - 1)
            return max(0.0, self.first_batch_end - self.started - per_batch)

    ticker = BatchTicker()
    if phase == "train":
        ticker.on_epoch_begin = lambda epoch, logs=None: ticker._begin()
        ticker.on_train_batch_end = ticker._batch_end
    else:
        ticker.on_predict_begin = lambda logs=None: ticker._begin()
        ticker.on_predict_batch_end = ticker._batch_end
    return ticker
