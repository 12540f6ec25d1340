"""Weight averaging: an exponential moving average (EMA) of a model's weights, taken after every training
step and swapped in for the model's own weights after its last epoch (Polyak averaging).

The average covers every float variable of the model, the BatchNorm statistics included, so the averaged
network is consistent with itself. Early on the momentum is min(momentum, (1 + t) / (10 + t)) at step t (as
TensorFlow's ExponentialMovingAverage with num_updates), so the first steps' random weights fade fast.
The average lives beside the model in each epoch's checkpoint (`save`, `load`), so a resumed run continues
the same average and ends where the uninterrupted one does.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def averaged_variables(model) -> list:
    """The variables the average covers: every float one (weights, BatchNorm statistics), not the layers'
    random state."""
    return [variable for variable in model.variables
            if "float" in str(variable.dtype) and "seed_generator" not in variable.path]


class WeightAverage(keras.callbacks.Callback):
    """The EMA of a model's weights, updated at the end of every training batch of `fit`."""

    def __init__(self, model, momentum: float):
        super().__init__()
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must lie between 0 and 1, got {momentum}.")
        self.momentum = momentum
        self.watched = averaged_variables(model)
        self.optimizer = model.optimizer
        self.shadows = [tf.Variable(keras.ops.convert_to_numpy(variable).astype(np.float32), trainable=False)
                        for variable in self.watched]
        self._update = tf.function(self._update_now)

    def _update_now(self):
        step = tf.cast(self.optimizer.iterations, tf.float32)
        decay = tf.minimum(tf.constant(self.momentum, tf.float32), (1.0 + step) / (10.0 + step))
        for shadow, variable in zip(self.shadows, self.watched):
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(variable.value, tf.float32))

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def swap_in(self) -> None:
        """Give the model the averaged weights (after its last epoch)."""
        for shadow, variable in zip(self.shadows, self.watched):
            variable.assign(tf.cast(shadow, variable.dtype))

    def save(self, path: Path) -> None:
        with open(path, "wb") as stream:
            np.savez(stream, *[shadow.numpy() for shadow in self.shadows])

    def load(self, path: Path) -> None:
        with np.load(path) as arrays:
            values = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
        if [value.shape for value in values] != [tuple(shadow.shape) for shadow in self.shadows]:
            raise ValueError(f"{path}: the weight average does not fit this model")
        for shadow, value in zip(self.shadows, values):
            shadow.assign(value)
