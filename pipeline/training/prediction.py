"""Prediction: the models' averaged probabilities of some images, with test-time augmentation
(the image and its one-pixel shifts). Used by training (the out-of-fold predictions, pseudo-labels)
and by the predict stage alike.
"""

import time

import numpy as np

from pipeline.core import config
from pipeline.core.ctrl_c import ctrl_c_stops_after_its_batch
from pipeline.core.progress import batch_ticker

# Test-time augmentation: the image itself and shifted by one pixel each way (zeros fill in).
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shift_images(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Move every (N, 28, 28, 1) image by whole pixels, filling with background (zeros)."""
    shifted = np.zeros_like(images)
    size = images.shape[1]
    source_rows = slice(max(0, -rows), size - max(0, rows))
    target_rows = slice(max(0, rows), size - max(0, -rows))
    source_columns = slice(max(0, -columns), size - max(0, columns))
    target_columns = slice(max(0, columns), size - max(0, -columns))
    shifted[:, target_rows, target_columns] = images[:, source_rows, source_columns]
    return shifted


def predict_probabilities(models: list, images: np.ndarray, batch_size: int = 1024, tta: bool = False,
                          verbose: int = 0, log=None, weights: list[float] | None = None) -> np.ndarray:
    """Mean softmax over the models (and the TTA views): (N, 10) float32. weights: each model's weight in that
    mean (None: equal).

    log: where progress goes: a line after each of several passes (model x view), and on a terminal
    one every ~10 s within a pass."""
    from pipeline.training.augment import make_evaluation_dataset  # TensorFlow: loaded by now, with the models

    views = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    total = np.zeros((len(images), config.NUM_CLASSES), dtype=np.float64)
    passes, started = len(models) * len(views), time.perf_counter()
    weights = [1.0] * len(models) if weights is None else weights
    for model_number, (model, weight) in enumerate(zip(models, weights, strict=True)):
        for view_number, (rows, columns) in enumerate(views):
            view = images if (rows, columns) == (0, 0) else shift_images(images, rows, columns)
            done = model_number * len(views) + view_number
            callbacks = []
            if log is not None:
                callbacks.append(batch_ticker(log, f"predict: pass {done + 1} of {passes}",
                                              -(-len(view) // batch_size), phase="predict"))
            try:  # a dataset of ours, not the array: Keras's own has the autotuning that stalls (training.augment)
                # A Ctrl-C raises KeyboardInterrupt after predict's running batch, before its partial output is used.
                with ctrl_c_stops_after_its_batch(model, "stop_predicting"):
                    probabilities = model.predict(make_evaluation_dataset(view, batch_size=batch_size),
                                                  verbose=verbose, callbacks=callbacks)
                total += weight * probabilities
            finally:
                for ticker in callbacks:
                    ticker.stop()
            if log is not None and passes > 1:
                log(f"predict: pass {done + 1} of {passes} done (model {model_number + 1} of {len(models)}, view"
                    f" {view_number + 1} of {len(views)}), {time.perf_counter() - started:.0f} s")
    return (total / (sum(weights) * len(views))).astype(np.float32)
