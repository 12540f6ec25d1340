"""Keras networks, the learning-rate schedule and the compile settings.

Architectures (`ARCHITECTURES`), all Functional, input (28, 28, 1) float32 in [0, 1], output
10 softmax probabilities in float32 whatever the dtype policy:

- "mlp": the baseline: Flatten, Dense 128 relu, Dense 64 relu, Dense 10 softmax.
- "small": a fast CNN for quick runs and tests (two conv + pool blocks, about 0.7 M MACs/image).
- "deotte": the reference (Chris Deotte's Kaggle notebook): 32C3-32C3-32C5S2-64C3-64C3-64C5S2-128C4
  with BatchNorm after every conv and dropout 0.4 after each block (about 15 M MACs/image).
- "cnn": the recommended default: the same topology as "deotte", trained differently:
  `recommended_schedule` (2 warm-up epochs to 2e-3, cosine to 0) for 18 epochs instead of
  45 epochs of 1e-3 * 0.95**epoch, batch 64, `mixed_bfloat16`, augmentation 10 deg / 0.1 / 0.1.
  Measured: 99.60 % +- 0.07 accuracy on the rows each model never saw, over 3 cross-validation folds
  with the last epoch's weights (docs/experiments.md); the 99.69 % of the best epoch on one 90/10
  split was optimistic. 18 epochs of about 27 s (quiet machine) to 41 s (busy machine) each on 2 CPU
  cores.
  The presets that use it are in pipeline.core.config.PRESETS.
- "nopool": An et al. 2020's M5 at half width (16-32-48-64-80 filters of 5x5, no pooling, batch norm),
  a different family of network for ensembles (about 2.3x the work of "cnn").
- "resnet": a small residual network (a 3x3 stem, a strided convolution and one residual block at 14x14
  and at 7x7, global average pooling), another family for ensembles (about 2.4x the work of "cnn").

Any of them can start with a `Deskew` layer (`deskew=True`): the same network seeing the digits upright,
whose errors differ from the plain network's, so that the two averaged make fewer (docs/experiments.md).

The schedule is Keras's `CosineDecay` with its linear warm-up, keyed on the optimizer step, so a
checkpoint that holds the optimizer state resumes it exactly.
"""

import math
from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipeline.core.config import (ARCHITECTURES, IMAGE_SHAPE, NUM_CLASSES, RECALIBRATION_IMAGES, check_dropout,
                                  check_width)
from pipeline.core.errors import PipelineError, one_line
from pipeline.training.device import DTYPE_POLICIES

# Keras's default 0.99 lets the moving statistics lag far behind on small data (the bundled
# sample's 34 steps an epoch gave 10 % validation accuracy); 0.9 follows them within an epoch.
BATCH_NORM_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="pipeline")
class WarmupCosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The schedule of earlier versions, the same curve as `recommended_schedule`'s. Kept registered
    only so that their saved models and checkpoints still load (`load_model(safe_mode=True)`).
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0, warmup_divisor=10.0,
                 final_learning_rate=0.0):
        if peak_learning_rate <= 0:
            raise ValueError(f"peak_learning_rate must be positive, got {peak_learning_rate}.")
        if total_steps < 1 or not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"need total_steps >= 1 and 0 <= warmup_steps < total_steps, got {total_steps} and {warmup_steps}."
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_divisor = float(warmup_divisor)
        self.final_learning_rate = float(final_learning_rate)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        start = peak / self.warmup_divisor
        warmup = start + (peak - start) * step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 0.0, 1.0)
        cosine = (self.final_learning_rate
                  + 0.5 * (peak - self.final_learning_rate) * (1.0 + ops.cos(math.pi * progress)))
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_divisor": self.warmup_divisor,
            "final_learning_rate": self.final_learning_rate,
        }


def recommended_schedule(steps_per_epoch, epochs, peak_learning_rate=2e-3, warmup_epochs=2, warmup_divisor=10.0,
                         floor=0.0):
    """The default: a linear warm-up from peak/warmup_divisor to the peak over warmup_epochs, then a
    cosine decay to floor * peak (0 by default) at the end of the last epoch. A one-cycle-like schedule:
    it converges in far fewer epochs than the reference's 1e-3 * 0.95**epoch. A floor keeps the last
    steps moving, which weight averaging needs: a cosine to 0 leaves nothing to average."""
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"steps_per_epoch and epochs must be at least 1, got {steps_per_epoch} and {epochs}.")
    if peak_learning_rate <= 0:
        raise ValueError(f"peak_learning_rate must be positive, got {peak_learning_rate}.")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1), got {floor}.")
    total_steps = steps_per_epoch * epochs
    warmup_steps = min(int(steps_per_epoch * warmup_epochs), total_steps - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak_learning_rate / warmup_divisor, decay_steps=total_steps - warmup_steps, alpha=floor,
        warmup_target=peak_learning_rate, warmup_steps=warmup_steps,
    )


@keras.saving.register_keras_serializable(package="pipeline")
class Deskew(layers.Layer):
    """Each image sheared so that its strokes stand upright and moved so that its ink's centre of mass is
    the image's centre: the classic MNIST deskewing (LeCun et al. 1998's "deslanted" inputs), here a layer
    so that training, prediction and saved models all see the same input. No weights; float32."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **{key: value for key, value in kwargs.items() if key != "dtype"})

    def call(self, images):
        ops = keras.ops
        rows, columns = images.shape[1], images.shape[2]
        ink = images[..., 0]
        total = ops.maximum(ops.sum(ink, axis=(1, 2)), 1e-6)
        row_index = ops.reshape(ops.arange(rows, dtype="float32"), (1, rows, 1))
        column_index = ops.reshape(ops.arange(columns, dtype="float32"), (1, 1, columns))
        row_mean = ops.sum(ink * row_index, axis=(1, 2)) / total
        column_mean = ops.sum(ink * column_index, axis=(1, 2)) / total
        row_offset = row_index - row_mean[:, None, None]
        row_variance = ops.sum(ink * row_offset**2, axis=(1, 2)) / total
        covariance = ops.sum(ink * row_offset * (column_index - column_mean[:, None, None]), axis=(1, 2)) / total
        slant = covariance / ops.maximum(row_variance, 1e-6)
        centre_row, centre_column = (rows - 1) / 2, (columns - 1) / 2
        # Output pixel (x, y) reads input (x + slant * (y - centre_row) + column_mean - centre_column,
        # y + row_mean - centre_row): Keras's projective transform [a0, a1, a2, b0, b1, b2, c0, c1].
        ones, zeros = ops.ones_like(slant), ops.zeros_like(slant)
        transform = ops.stack([ones, slant, column_mean - centre_column - slant * centre_row,
                               zeros, ones, row_mean - centre_row, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="constant")


def _scaled(units, width):
    """A layer's filters or units times the network's width multiplier, at least 1."""
    return max(1, round(units * width))


def _mlp(inputs, policy, dropout_rate, width):
    hidden = layers.Flatten(name="flatten")(inputs)
    hidden = layers.Dense(_scaled(128, width), activation="relu", dtype=policy, name="dense_128")(hidden)
    return layers.Dense(_scaled(64, width), activation="relu", dtype=policy, name="dense_64")(hidden)


def _small(inputs, policy, dropout_rate, width):
    hidden = layers.Conv2D(_scaled(16, width), 3, activation="relu", dtype=policy, name="conv_1")(inputs)
    hidden = layers.MaxPooling2D(2, dtype=policy, name="pool_1")(hidden)
    hidden = layers.Conv2D(_scaled(32, width), 3, activation="relu", dtype=policy, name="conv_2")(hidden)
    hidden = layers.MaxPooling2D(2, dtype=policy, name="pool_2")(hidden)
    hidden = layers.Flatten(dtype=policy, name="flatten")(hidden)
    hidden = layers.Dropout(dropout_rate, dtype=policy, name="dropout")(hidden)
    return layers.Dense(_scaled(64, width), activation="relu", dtype=policy, name="dense_64")(hidden)


def _conv_block(hidden, filters, kernel_size, policy, name, strides=1, padding=None, activation="relu"):
    padding = padding or ("same" if strides > 1 else "valid")
    hidden = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, activation=activation,
                           dtype=policy, name=f"{name}_conv")(hidden)
    return layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, dtype=policy, name=f"{name}_norm")(hidden)


def _deotte(inputs, policy, dropout_rate, width):
    narrow, middle, wide = _scaled(32, width), _scaled(64, width), _scaled(128, width)
    hidden = _conv_block(inputs, narrow, 3, policy, "block1a")
    hidden = _conv_block(hidden, narrow, 3, policy, "block1b")
    hidden = _conv_block(hidden, narrow, 5, policy, "block1c", strides=2)
    hidden = layers.Dropout(dropout_rate, dtype=policy, name="block1_dropout")(hidden)
    hidden = _conv_block(hidden, middle, 3, policy, "block2a")
    hidden = _conv_block(hidden, middle, 3, policy, "block2b")
    hidden = _conv_block(hidden, middle, 5, policy, "block2c", strides=2)
    hidden = layers.Dropout(dropout_rate, dtype=policy, name="block2_dropout")(hidden)
    hidden = _conv_block(hidden, wide, 4, policy, "block3")
    hidden = layers.Flatten(dtype=policy, name="flatten")(hidden)
    return layers.Dropout(dropout_rate, dtype=policy, name="block3_dropout")(hidden)


def _nopool(inputs, policy, dropout_rate, width):
    """An et al. 2020's M5 at half its width: five 5x5 convolutions and no pooling (28 -> 8 pixels), batch
    norm after each; a different family from "cnn" for ensembles, about 2.3x its work."""
    hidden = inputs
    for number, filters in enumerate((16, 32, 48, 64, 80), start=1):
        hidden = _conv_block(hidden, _scaled(filters, width), 5, policy, f"conv{number}")
    hidden = layers.Flatten(dtype=policy, name="flatten")(hidden)
    return layers.Dropout(dropout_rate, dtype=policy, name="dropout")(hidden)


def _residual_block(hidden, filters, policy, name):
    """Two 3x3 convolutions (same padding) whose output is added to the block's input, then relu."""
    branch = _conv_block(hidden, filters, 3, policy, f"{name}a", padding="same")
    branch = _conv_block(branch, filters, 3, policy, f"{name}b", padding="same", activation=None)
    return layers.Activation("relu", dtype=policy, name=f"{name}_relu")(layers.Add(dtype=policy, name=f"{name}_add")(
        [hidden, branch]))


def _resnet(inputs, policy, dropout_rate, width):
    """A small residual network: a 3x3 stem, then at 14x14 and at 7x7 a strided 3x3 convolution and one
    residual block, global average pooling; a different family from "cnn" (no dense layer over positions),
    about 2.4x its work."""
    hidden = _conv_block(inputs, _scaled(32, width), 3, policy, "stem", padding="same")
    for stage, filters in enumerate((64, 128), start=1):
        hidden = _conv_block(hidden, _scaled(filters, width), 3, policy, f"stage{stage}_down", strides=2)
        hidden = _residual_block(hidden, _scaled(filters, width), policy, f"stage{stage}_block")
    hidden = layers.GlobalAveragePooling2D(dtype=policy, name="pool")(hidden)
    return layers.Dropout(dropout_rate, dtype=policy, name="dropout")(hidden)


_BODIES = {"mlp": _mlp, "small": _small, "deotte": _deotte, "cnn": _deotte, "nopool": _nopool, "resnet": _resnet}
assert set(_BODIES) == set(ARCHITECTURES), "pipeline.core.config.ARCHITECTURES names the networks built here"


def build_network(architecture, *, dtype_policy="float32", dropout_rate=0.4, width=1.0, deskew=False):
    """The uncompiled Functional model for one of ARCHITECTURES; width multiplies every layer's filters or units;
    deskew puts a Deskew layer before the first."""
    if architecture not in _BODIES:
        raise ValueError(f"Unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
    if dtype_policy not in DTYPE_POLICIES:
        raise ValueError(f"Unknown dtype policy {dtype_policy!r}; choose one of {', '.join(DTYPE_POLICIES)}.")
    check_dropout(dropout_rate, "dropout_rate")
    check_width(width, "width")
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    first = Deskew(name="deskew")(inputs) if deskew else inputs
    hidden = _BODIES[architecture](first, dtype_policy, dropout_rate, width)
    # Always float32: a softmax in bfloat16 would round the probabilities.
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name=architecture)


def compile_model(model, *, learning_rate=1e-3, label_smoothing=0.0, weight_decay=0.0):
    """Adam, categorical cross-entropy on one-hot labels (with optional smoothing), accuracy.

    weight_decay > 0: Keras applies it decoupled from the gradient (AdamW), to every trainable variable, so
    the optimizer's own config holds all of it and a checkpoint resumes it exactly.

    learning_rate: a float or a LearningRateSchedule such as `recommended_schedule(...)`.
    No XLA (jit_compile): it was 4-5x slower on the CPU this was tuned on (docs/experiments.md).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=weight_decay or None),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


def build_model(architecture, *, learning_rate=1e-3, dtype_policy="float32", dropout_rate=0.4, width=1.0,
                label_smoothing=0.0, weight_decay=0.0, deskew=False):
    """build_network + compile_model: a compiled model ready for fit on one-hot labels."""
    model = build_network(architecture, dtype_policy=dtype_policy, dropout_rate=dropout_rate, width=width,
                          deskew=deskew)
    return compile_model(model, learning_rate=learning_rate, label_smoothing=label_smoothing,
                         weight_decay=weight_decay)


def multiply_adds(network) -> int:
    """Multiply-adds of one image's forward pass through the convolutions and dense layers (the rest is small)."""
    total = 0
    for layer in network.layers:
        if isinstance(layer, layers.Conv2D):
            height, width, channels_out = layer.output.shape[1:]
            total += height * width * math.prod(layer.kernel_size) * layer.input.shape[-1] * channels_out
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def recalibrate_batch_norm(network, images, batch_size=256, most_images=RECALIBRATION_IMAGES) -> int:
    """Every BatchNormalization layer's moving mean and variance set to the exact statistics of its input over
    (up to most_images, evenly spaced, of) `images`, in inference mode, layer by layer in the network's order so
    that each layer sees its upstream layers' new statistics. Training's moving averages follow augmented images
    with dropout on; the images predicted are clean, with dropout off (docs/experiments.md, 2026-12-05). Returns
    how many layers it recalibrated."""
    if len(images) > most_images:
        images = images[np.linspace(0, len(images) - 1, most_images).astype(int)]
    normalisations = [layer for layer in network.layers if isinstance(layer, layers.BatchNormalization)]
    for layer in normalisations:  # a Functional model lists its layers upstream first
        probe = keras.Model(network.inputs, layer.input)
        total = squares = 0.0
        for start in range(0, len(images), batch_size):
            values = keras.ops.convert_to_numpy(probe([images[start:start + batch_size]], training=False))
            values = values.reshape(-1, values.shape[-1])  # sums in float64 without a float64 copy: memory
            total = total + values.sum(axis=0, dtype=np.float64)
            squares = squares + np.square(values, dtype=np.float64).sum(axis=0)
        count = len(images) * math.prod(layer.input.shape[1:-1])
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(squares / count - mean ** 2, 0).astype(np.float32))
    return len(normalisations)


def load_model(path: Path):
    """Load with Keras's safe mode: a model file that would run code when loaded is refused, and so
    is one that does not map 28x28x1 images to 10 outputs."""
    try:
        model = keras.models.load_model(path, safe_mode=True)
    except Exception as error:
        raise PipelineError(f"{path}: cannot load this model safely ({one_line(error, 200)})") from None
    check_model_shapes(model, path)
    return model


def check_model_shapes(model, path: Path) -> None:
    """Refuse a model that does not map (N, 28, 28, 1) images to (N, 10) probabilities."""
    try:
        input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    except (AttributeError, TypeError, ValueError):  # several inputs or outputs
        raise PipelineError(f"{path}: not a digit model (it must take one image and give 10 probabilities)") from None
    if input_shape[1:] != IMAGE_SHAPE or output_shape[1:] != (NUM_CLASSES,):
        raise PipelineError(f"{path}: the model takes {input_shape} and gives {output_shape}, expected "
                            f"(None, {', '.join(map(str, IMAGE_SHAPE))}) and (None, {NUM_CLASSES}); retrain it")


def load_models(paths: list[Path]) -> list:
    return [load_model(path) for path in paths]
