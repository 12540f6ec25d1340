"""Stage 4, train: fit a Keras model on the training part of the split, checking it on the rest.

Every completed epoch is checkpointed (model, optimizer, history, early-stopping state), so a run
that was stopped continues from its last completed epoch. The shuffle order and augmentation of
an epoch depend only on (seed, epoch) (pipeline.augment), so the resumed run sees exactly the
batches the uninterrupted one would have seen and ends at the same place.
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.cache import atomic_path, write_json
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class TrainingConfig:
    architecture: str = "cnn"
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3  # the schedule's peak, after a 2-epoch warm-up; cosine to 0 at the end
    seed: int = 42
    precision: str = "float32"  # or "mixed_bfloat16"
    augment: bool = True
    patience: int = 10  # epochs without a better validation accuracy before stopping early
    members: int = 1  # models in the ensemble, each with its own seed
    deterministic: bool = False
    strategy: str = "default"  # or "mirrored": every local GPU (or logical CPU device)

    def check(self) -> None:
        if self.epochs < 1:
            raise PipelineError(f"--epochs {self.epochs}: expected at least 1")
        if not 0 < self.learning_rate < 1:
            raise PipelineError(f"--learning-rate {self.learning_rate}: expected a value between 0 and 1, e.g. 0.002")
        if self.batch_size < 1:
            raise PipelineError(f"--batch-size {self.batch_size}: expected at least 1")
        if self.members < 1:
            raise PipelineError(f"--members {self.members}: expected at least 1")
        if self.precision not in ("float32", "mixed_bfloat16"):
            raise PipelineError(f"--precision {self.precision}: expected float32 or mixed_bfloat16")
        if self.strategy not in ("default", "mirrored"):
            raise PipelineError(f"--strategy {self.strategy}: expected default or mirrored")

    def as_dict(self) -> dict:
        return asdict(self)


def configure_tensorflow(config: TrainingConfig):
    """Seeds, precision and distribution strategy; returns the strategy to build the model under."""
    import keras
    import tensorflow as tf

    logical_cpus = int(os.environ.get("PIPELINE_LOGICAL_CPUS", "0"))
    if logical_cpus > 1:
        # Lets MirroredStrategy be exercised on a machine without accelerators (the tests do).
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.precision)
    if config.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


class _Checkpoint:
    """A training run's state after each completed epoch, in its own folder.

    Files are named after their epoch and state.json, written last, names the current ones, so a
    process killed between two writes leaves the previous consistent state in place.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.state_path = folder / "state.json"

    def load_state(self) -> dict | None:
        try:
            state = json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        needed = [self.folder / state["model_file"], self.folder / state["best_weights_file"]]
        return state if all(path.exists() for path in needed) else None

    def save(self, model, state: dict, improved: bool) -> dict:
        epoch = state["completed_epochs"]
        state = dict(state, model_file=f"epoch-{epoch}.keras")
        with atomic_path(self.folder / state["model_file"]) as temporary:
            model.save(temporary)
        if improved:
            state["best_weights_file"] = f"best-{epoch}.weights.h5"
            with atomic_path(self.folder / state["best_weights_file"]) as temporary:
                model.save_weights(temporary)
        write_json(self.state_path, state)
        keep = {state["model_file"], state["best_weights_file"], "state.json"}
        for path in self.folder.iterdir():
            if path.name not in keep and not path.name.startswith(".tmp-"):
                path.unlink()
        return state


def fit_one_model(train_images, train_labels, val_images, val_labels, config: TrainingConfig, seed: int,
                  checkpoint_folder: Path, strategy, verbose: int = 1, log=print, epochs_after: int = 0):
    """Train one model (resuming from checkpoint_folder if it holds a state); return (model, state).

    epochs_after: epochs still to come once this model is done (later ensemble members), for the
    estimate of the time left.
    """
    import keras

    from pipeline import augment, model as model_library

    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    checkpoint = _Checkpoint(checkpoint_folder)
    checkpoint_folder.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load_state()
    with strategy.scope():
        if state is None:
            keras.utils.set_random_seed(seed)
            schedule = model_library.recommended_schedule(steps_per_epoch, config.epochs, config.learning_rate)
            model = model_library.build_model(
                config.architecture, learning_rate=schedule, dtype_policy=config.precision
            )
            state = {"completed_epochs": 0, "history": {}, "best_val_accuracy": -1.0, "best_epoch": 0,
                     "epochs_without_improvement": 0, "best_weights_file": ""}
        else:
            log(f"resuming from epoch {state['completed_epochs']} of {config.epochs} ({checkpoint_folder})")
            model = keras.models.load_model(checkpoint_folder / state["model_file"], safe_mode=True)
    validation = augment.make_evaluation_dataset(val_images, val_labels, batch_size=512)
    epoch_seconds = []
    for epoch in range(state["completed_epochs"], config.epochs):
        if state["epochs_without_improvement"] >= config.patience:
            break
        started = time.perf_counter()
        reseed_layers(model, seed, epoch)
        dataset = augment.make_training_dataset(
            train_images, train_labels, config.batch_size, seed, epoch, augment=config.augment
        )
        result = model.fit(dataset, validation_data=validation, epochs=epoch + 1, initial_epoch=epoch,
                           shuffle=False, verbose=verbose, callbacks=[_progress_bar(config.epochs)] if verbose else [])
        history = state["history"]
        for name, values in result.history.items():
            history.setdefault(name, []).append(float(values[-1]))
        history.setdefault("learning_rate", []).append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        val_accuracy = history["val_accuracy"][-1]
        improved = val_accuracy > state["best_val_accuracy"]
        state.update(completed_epochs=epoch + 1)
        if improved:
            state.update(best_val_accuracy=val_accuracy, best_epoch=epoch + 1, epochs_without_improvement=0)
        else:
            state["epochs_without_improvement"] += 1
        state = checkpoint.save(model, state, improved)
        epoch_seconds.append(time.perf_counter() - started)
        left = (config.epochs - epoch - 1 + epochs_after) * float(np.median(epoch_seconds))
        log(f"epoch {epoch + 1}/{config.epochs}: val_accuracy {val_accuracy:.4f}"
            f" (best {state['best_val_accuracy']:.4f} at epoch {state['best_epoch']}),"
            f" {epoch_seconds[-1]:.0f} s, about {_duration(left)} left")
    model.load_weights(checkpoint_folder / state["best_weights_file"])
    return model, state


def _progress_bar(total_epochs: int):
    """Keras's progress bar, headed "Epoch k/total" although each fit() call runs one epoch."""
    import keras

    class EpochOfTotalProgress(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params(params)
            self.epochs = total_epochs

    return EpochOfTotalProgress()


def reseed_layers(model, seed: int, epoch: int) -> None:
    """Set the random state of every layer (dropout) from (seed, epoch).

    Keras does not save these states with a model, so without this a resumed run would drop
    other units than the uninterrupted one and end elsewhere.
    """
    generators = [variable for variable in model.variables if "seed_generator_state" in variable.path]
    seeds = np.random.default_rng([seed, epoch, 7]).integers(1, 2**31 - 1, size=len(generators))
    for variable, layer_seed in zip(generators, seeds):
        variable.assign(np.array([layer_seed, 0], dtype=variable.dtype))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def save_model(model, path: Path) -> None:
    with atomic_path(path) as temporary:
        model.save(temporary)


def write_history(path: Path, history: dict) -> None:
    write_json(path, history)


def ensemble_accuracy(models: list, images: np.ndarray, labels: np.ndarray, tta: bool = False) -> float:
    """Accuracy of the averaged models, predicting as predict does (with or without TTA)."""
    from pipeline.predict import predict_probabilities

    probabilities = predict_probabilities(models, images, tta=tta, verbose=0)
    return float((probabilities.argmax(axis=1) == labels).mean())
