"""Stage 4, train: fit a Keras model on the training part of the split, checking it on the rest.

Every completed epoch is checkpointed (model, optimizer, history, early-stopping state), so a run
that was stopped continues from its last completed epoch. The shuffle order and augmentation of
an epoch depend only on (seed, epoch) (pipeline.augment), so the resumed run sees exactly the
batches the uninterrupted one would have seen and ends at the same place.
"""

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.cache import atomic_path, write_json
from pipeline.console import format_duration
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run is; every value comes from a preset (pipeline.config.PRESETS) or an option."""

    architecture: str
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    precision: str
    augment: bool
    patience: int
    members: int
    deterministic: bool
    strategy: str

    def check(self) -> None:
        if self.architecture not in config.ARCHITECTURES:
            raise PipelineError(f"--model {self.architecture}: expected one of {', '.join(config.ARCHITECTURES)}")
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


def resolve_preset(preset: str, **overrides) -> dict:
    """The preset's values with every option that was given (not None) in their place."""
    if preset not in config.PRESETS:
        raise PipelineError(f"--preset {preset}: expected one of {', '.join(config.PRESETS)}")
    return {**config.PRESETS[preset], **{name: value for name, value in overrides.items() if value is not None}}


def training_config(values: dict) -> TrainingConfig:
    """The TrainingConfig of resolved preset values (the split's and predict's values are left out)."""
    training = TrainingConfig(**{field.name: values[field.name] for field in fields(TrainingConfig)})
    training.check()
    return training


def configure_tensorflow(training: TrainingConfig):
    """Seeds, precision and distribution strategy; returns the strategy to build the model under."""
    import keras
    import tensorflow as tf

    logical_cpus = int(os.environ.get("PIPELINE_LOGICAL_CPUS", "0"))
    if logical_cpus > 1:
        # Lets MirroredStrategy be exercised on a machine without accelerators (the tests do).
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    keras.utils.set_random_seed(training.seed)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(training.precision)
    if training.strategy == "mirrored":
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


def fit_one_model(train_images, train_labels, val_images, val_labels, training: TrainingConfig, seed: int,
                  checkpoint_folder: Path, strategy, verbose: int = 1, log=print, epochs_after: int = 0):
    """Train one model (resuming from checkpoint_folder if it holds a state); return (model, state).

    epochs_after: epochs still to come once this model is done (later ensemble members), for the
    estimate of the time left.
    """
    import keras

    from pipeline import augment, model as model_library

    steps_per_epoch = math.ceil(len(train_images) / training.batch_size)
    checkpoint = _Checkpoint(checkpoint_folder)
    checkpoint_folder.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load_state()
    with strategy.scope():
        if state is None:
            keras.utils.set_random_seed(seed)
            schedule = model_library.recommended_schedule(steps_per_epoch, training.epochs, training.learning_rate)
            model = model_library.build_model(
                training.architecture, learning_rate=schedule, dtype_policy=training.precision
            )
            state = {"completed_epochs": 0, "history": {}, "best_val_accuracy": -1.0, "best_epoch": 0,
                     "epochs_without_improvement": 0, "best_weights_file": ""}
        else:
            log(f"resuming from epoch {state['completed_epochs']} of {training.epochs} ({checkpoint_folder})")
            model = model_library.load_model(checkpoint_folder / state["model_file"])
    validation = augment.make_evaluation_dataset(val_images, val_labels, batch_size=512)
    epoch_seconds = []
    for epoch in range(state["completed_epochs"], training.epochs):
        if state["epochs_without_improvement"] >= training.patience:
            break
        started = time.perf_counter()
        reseed_layers(model, seed, epoch)
        dataset = augment.make_training_dataset(
            train_images, train_labels, training.batch_size, seed, epoch, augment=training.augment
        )
        result = model.fit(dataset, validation_data=validation, epochs=epoch + 1, initial_epoch=epoch,
                           shuffle=False, verbose=verbose, callbacks=[_progress_bar(training.epochs)] if verbose else [])
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
        left = (training.epochs - epoch - 1 + epochs_after) * float(np.median(epoch_seconds))
        log(f"epoch {epoch + 1}/{training.epochs}: val_accuracy {val_accuracy:.4f}"
            f" (best {state['best_val_accuracy']:.4f} at epoch {state['best_epoch']}),"
            f" {epoch_seconds[-1]:.0f} s, about {format_duration(left)} left")
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


def save_model(model, path: Path) -> None:
    with atomic_path(path) as temporary:
        model.save(temporary)


def ensemble_accuracy(models: list, images: np.ndarray, labels: np.ndarray, tta: bool = False) -> float:
    """Accuracy of the averaged models, predicting as predict does (with or without TTA)."""
    from pipeline.predict import predict_probabilities

    probabilities = predict_probabilities(models, images, tta=tta, verbose=0)
    return float((probabilities.argmax(axis=1) == labels).mean())


# ----------------------------------------------------------------------------------------- the stage

def train_members(train_images, train_labels, val_images, val_labels, training: TrainingConfig, strategy,
                  checkpoints: Path, run_dir: Path, console) -> tuple[list[Path], list, list[dict]]:
    """Train the ensemble's members one after another, member k with seed training.seed + k and its own
    resumable checkpoint folder, and save each as run_dir/member-k.keras: (paths, models, final states)."""
    paths, models, states = [], [], []
    for member in range(training.members):
        if training.members > 1:
            console.say(f"train: ensemble member {member + 1} of {training.members}, seed {training.seed + member}")
        model, state = fit_one_model(
            train_images, train_labels, val_images, val_labels, training, training.seed + member,
            checkpoints / f"member-{member}", strategy, verbose=console.keras_verbosity, log=console.say,
            epochs_after=(training.members - member - 1) * training.epochs)
        path = run_dir / f"member-{member}.keras"
        save_model(model, path)
        paths.append(path)
        models.append(model)
        states.append(state)
    return paths, models, states


def _upstream_summary() -> dict:
    from pipeline.cache import load_record

    records = {name: load_record(name) for name in ("download", "prepare", "split")}
    return {
        "source": (records["download"] or {}).get("extra", {}).get("source"),
        "split": (records["split"] or {}).get("key", {}).get("params", {}),
        "durations_s": {name: record["extra"].get("seconds") for name, record in records.items() if record},
    }


def define(paths, console, training: TrainingConfig, preset: str):
    """The train stage: the prepared arrays and the split in, data/models/<run>/ (models, history) out."""
    from pipeline import runs
    from pipeline.stage import Definition, require

    require("split", "python -m pipeline split")

    def work():
        from pipeline.console import import_tensorflow_quietly
        from pipeline.split import load_split_arrays

        import_tensorflow_quietly()
        started = time.perf_counter()
        train_images, train_labels, val_images, val_labels = load_split_arrays(paths)
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{training.architecture}"
        run_dir = paths.run_dir(run_id)
        checkpoints = paths.checkpoints / definition.key_id  # the same settings resume the same folder
        strategy = configure_tensorflow(training)
        devices = strategy.num_replicas_in_sync
        console.say(f"train: {training.members} x {training.architecture}, {training.epochs} epochs, batch "
                    f"{training.batch_size}, {training.precision}, on {len(train_images)} images"
                    f" ({devices} device{'s' * (devices > 1)})")
        model_paths, models, states = train_members(train_images, train_labels, val_images, val_labels, training,
                                                    strategy, checkpoints, run_dir, console)
        val_accuracy = ensemble_accuracy(models, val_images, val_labels)
        val_accuracy_tta = ensemble_accuracy(models, val_images, val_labels, tta=True)
        history_path = run_dir / "history.json"
        write_json(history_path, [state["history"] for state in states])
        upstream = _upstream_summary()
        run = {
            "id": run_id, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "source": upstream["source"], "preset": preset,
            "params": {**training.as_dict(), **upstream["split"]},
            "val_accuracy": val_accuracy, "val_accuracy_tta": val_accuracy_tta,
            "member_val_accuracy": [state["best_val_accuracy"] for state in states],
            "best_epochs": [state["best_epoch"] for state in states],
            "durations_s": {**upstream["durations_s"], "train": round(time.perf_counter() - started, 1)},
            "models": [str(path) for path in model_paths],
        }
        runs.write_run(paths, run)
        shutil.rmtree(checkpoints, ignore_errors=True)
        return [*model_paths, history_path], {"run_id": run_id, "val_accuracy": val_accuracy,
                                              "val_accuracy_tta": val_accuracy_tta,
                                              "train_size": len(train_images), "preset": preset, "run": run}

    def describe(record):
        extra = record["extra"]
        return (f"run {extra['run_id']}, validation accuracy {extra['val_accuracy']:.4f}"
                f" ({extra.get('val_accuracy_tta', 0):.4f} with test-time augmentation),"
                f" models in {paths.run_dir(extra['run_id'])}")

    def after_restore(record):
        if not runs.run_path(paths, record["extra"]["run_id"]).is_file():
            runs.write_run(paths, record["extra"]["run"])

    inputs = [paths.train_images, paths.train_labels, paths.split_file]
    # work() names the checkpoint folder after this definition's key, hence the name used before it is set.
    definition = Definition("train", training.as_dict(), inputs, work, describe, after_restore)
    return definition
