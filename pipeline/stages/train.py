"""Stage 4, train: the models of a run, and the accuracy estimate nothing was chosen on.

A run is a list of parts (`plan_parts`), one model each: the members of a holdout split, or one
model per cross-validation fold, plus optionally a model on all rows. Every model keeps its LAST
epoch's weights: picking the best epoch on the rows that measure it would make the estimate
optimistic. Each part's predictions of the rows it never saw are the run's out-of-fold
predictions, from which `pipeline.estimate` makes the reported accuracy and its 95 % interval.

Every completed epoch is checkpointed (model, optimizer, history), part by part, so a run that
was stopped continues from its last completed epoch and redoes no finished part. The shuffle order and augmentation of
an epoch depend only on (seed, epoch) (pipeline.augment), so the resumed run sees exactly the
batches the uninterrupted one would have seen and ends at the same place.
"""

import contextlib
import json
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.core.cache import atomic_path, path_digest, relative_name, require_free_space, write_json
from pipeline.core.console import count, format_duration
from pipeline.core.errors import PipelineError
from pipeline.training.device import resolve_precision, use_device


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run is; every value comes from a preset (pipeline.config.PRESETS) or an option."""

    architecture: str
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    precision: str
    augmentation: float  # 0: none; 1: 10 degrees, 10 % zoom, 10 % shift
    elastic: float  # 0: none; else the alpha of Simard's elastic distortion (pipeline.augment.random_elastic)
    dropout: float
    width: float
    members: int
    final_model: bool  # also train one model on all rows, averaged into the submission
    pseudo_label: bool  # the all-rows model also learns the test images the other models are sure of
    tta: bool  # test-time augmentation, for the estimate as for the submission
    deterministic: bool
    strategy: str

    def check(self) -> None:
        """The numbers and combinations; the CLI's parser checks the names (--model, --precision, --strategy)."""
        if self.epochs < 1:
            raise PipelineError(f"--epochs {self.epochs}: expected at least 1")
        if not 0 < self.learning_rate < 1:
            raise PipelineError(f"--learning-rate {self.learning_rate}: expected a value between 0 and 1, e.g. 0.002")
        if self.batch_size < 1:
            raise PipelineError(f"--batch-size {self.batch_size}: expected at least 1")
        if not 0 <= self.augmentation <= 3:
            raise PipelineError(f"--augmentation {self.augmentation}: expected 0 (none) to 3 (1 is 10 degrees,"
                                " 10 % zoom and shift)")
        if not 0 <= self.elastic <= 60:
            raise PipelineError(f"--elastic {self.elastic}: expected 0 (none) to 60 (Simard et al. used 34), e.g. 20")
        config.check_dropout(self.dropout)
        config.check_width(self.width)
        if self.members < 1:
            raise PipelineError(f"--members {self.members}: expected at least 1")
        if self.pseudo_label and not self.final_model:
            raise PipelineError("--pseudo-label: the pseudo-labelled test images are learnt by the model on all rows;"
                                " add --final-model")
        # The fewest models a run of these settings trains (folds add more: plan_parts checks those).
        config.check_seed(self.seed, models=self.members + int(self.final_model))

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_preset(preset: str, **overrides) -> dict:
    """The preset's values with every option that was given (not None) in their place."""
    return {**config.PRESETS[preset], **{name: value for name, value in overrides.items() if value is not None}}


def training_config(values: dict) -> TrainingConfig:
    """The TrainingConfig of resolved preset values (the split's values are left out)."""
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
    """A model's training state after each completed epoch, in its own folder.

    Files are named after their epoch and state.json, written last, names the current one, so a
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
        return state if (self.folder / state.get("model_file", "")).is_file() else None

    def save(self, model, state: dict) -> dict:
        # Who wrote it, too: with --engine ray, the worker process that trains this model.
        state = dict(state, model_file=f"epoch-{state['completed_epochs']}.keras", host=socket.gethostname(),
                     pid=os.getpid())
        require_free_space(self.folder, 2 * model_file_bytes(model), "a training checkpoint")
        with atomic_path(self.folder / state["model_file"]) as temporary:
            model.save(temporary)
        write_json(self.state_path, state)
        for path in self.folder.iterdir():
            if path.name not in (state["model_file"], "state.json") and not path.name.startswith(".tmp-"):
                path.unlink()
        return state


def fit_one_model(train_images, train_labels, val_images, val_labels, training: TrainingConfig, seed: int,
                  checkpoint_folder: Path, strategy, log=print, epochs_after: int = 0,
                  tensorboard_dir: Path | None = None):
    """Train one model for training.epochs epochs and return (model, state) with its last epoch's weights.

    val_images None: a model on all rows, checked on nothing. The validation accuracy of every
    epoch is kept in the history as a curve; no epoch is chosen by it. A checkpoint_folder holding
    a state resumes from it (a finished model just loads). epochs_after: epochs still to come in
    later models of the run, for the estimate of the time left. tensorboard_dir: where Keras's
    TensorBoard callback writes the curves of the epochs run here (a resumed run adds to them).
    """
    import keras

    from pipeline.training import augment
    from pipeline.training import model as model_library

    steps_per_epoch = math.ceil(len(train_images) / training.batch_size)
    checkpoint = _Checkpoint(checkpoint_folder)
    checkpoint_folder.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load_state()
    with strategy.scope():
        if state is None:
            keras.utils.set_random_seed(seed)
            schedule = model_library.recommended_schedule(steps_per_epoch, training.epochs, training.learning_rate)
            model = model_library.build_model(
                training.architecture, learning_rate=schedule, dtype_policy=training.precision,
                dropout_rate=training.dropout, width=training.width,
            )
            state = {"completed_epochs": 0, "history": {}}
        else:
            if state["completed_epochs"] < training.epochs:
                log(f"resuming from epoch {state['completed_epochs']} of {training.epochs} ({checkpoint_folder})")
            model = model_library.load_model(checkpoint_folder / state["model_file"])
    validation = None
    if val_images is not None:
        validation = augment.make_evaluation_dataset(val_images, val_labels, batch_size=512)
    from pipeline.core.progress import batch_ticker

    # No Keras progress bar: the epoch's one line is logged below, and on a terminal a line every ~10 s
    # (from a thread, so the seconds spent building graphs are not silent either).
    ticker = batch_ticker(log, "epoch", steps_per_epoch)
    callbacks = [ticker]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), write_graph=False))
    epoch_seconds = []
    for epoch in range(state["completed_epochs"], training.epochs):
        started = time.perf_counter()
        reseed_layers(model, seed, epoch)
        dataset = augment.make_training_dataset(
            train_images, train_labels, training.batch_size, seed, epoch,
            augment=training.augmentation > 0 or training.elastic > 0, strength=training.augmentation,
            elastic=training.elastic,
        )
        # verbose=0: the line below is the epoch's one line, with Keras's numbers in it.
        ticker.label = f"epoch {epoch + 1}/{training.epochs}"
        try:
            result = model.fit(dataset, validation_data=validation, epochs=epoch + 1, initial_epoch=epoch,
                               shuffle=False, verbose=0, callbacks=callbacks)
        finally:
            ticker.stop()
        history = state["history"]
        for name, values in result.history.items():
            history.setdefault(name, []).append(float(values[-1]))
        history.setdefault("learning_rate", []).append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        state = checkpoint.save(model, dict(state, completed_epochs=epoch + 1))
        epoch_seconds.append(time.perf_counter() - started)
        # The time left from representative epochs: the first here builds the graph, so it counts without
        # its first batch's extra time until later epochs exist, and not at all once they do.
        representative = epoch_seconds[1:] or [epoch_seconds[0] - ticker.first_batch_extra_s()]
        left = (training.epochs - epoch - 1 + epochs_after) * float(np.median(representative))
        checked = f", val_accuracy {history['val_accuracy'][-1]:.4f}" if "val_accuracy" in history else ""
        log(f"epoch {epoch + 1}/{training.epochs}: loss {history['loss'][-1]:.4f}, accuracy"
            f" {history['accuracy'][-1]:.4f}{checked}, {epoch_seconds[-1]:.0f} s, about {format_duration(left)} left")
    return model, state


def reseed_layers(model, seed: int, epoch: int) -> None:
    """Set the random state of every layer (dropout) from (seed, epoch).

    Keras does not save these states with a model, so without this a resumed run would drop
    other units than the uninterrupted one and end elsewhere.
    """
    generators = [variable for variable in model.variables if "seed_generator_state" in variable.path]
    seeds = np.random.default_rng([seed, epoch, 7]).integers(1, 2**31 - 1, size=len(generators))
    for variable, layer_seed in zip(generators, seeds):
        variable.assign(np.array([layer_seed, 0], dtype=variable.dtype))


def model_file_bytes(model) -> int:
    """About the size of a saved .keras file: float32 weights, Adam's two moments, and a margin."""
    return 3 * 4 * model.count_params() + (1 << 20)


def save_model(model, path: Path) -> None:
    require_free_space(path.parent, model_file_bytes(model), path.name)
    with atomic_path(path) as temporary:
        model.save(temporary)


# ----------------------------------------------------------------------------------------- the parts of a run

@dataclass(frozen=True)
class Part:
    """One model of a run: the rows it trains on and the rows it never sees and predicts (None: all rows)."""

    name: str
    seed: int
    train_rows: np.ndarray
    validation_rows: np.ndarray | None


def plan_parts(split: dict, row_count: int, members: int, seed: int, final_model: bool) -> list[Part]:
    """The models a run trains, in order, each with its own seed (seed, seed + 1, ...).

    split: a holdout split ({"train", "validation"} row indices) or folds ({"fold"}: the fold of
    every row). Every group of rows gets `members` models; final_model adds one on all rows.
    """
    if "fold" in split:
        fold_of_row = np.asarray(split["fold"])
        groups = [(f"fold-{fold}", np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold))
                  for fold in range(int(fold_of_row.max()) + 1)]
        naming = "{group}" if members == 1 else "{group}-member-{member}"
    else:
        groups = [("holdout", np.asarray(split["train"]), np.asarray(split["validation"]))]
        naming = "member-{member}"
    parts = []
    for group, train_rows, validation_rows in groups:
        for member in range(members):
            parts.append(Part(naming.format(group=group, member=member), seed + len(parts), train_rows,
                              validation_rows))
    if final_model:
        parts.append(Part("all-rows", seed + len(parts), np.arange(row_count), None))
    config.check_seed(seed, models=len(parts))
    return parts


def work_units(summaries: list[dict], epochs: int, test_images: int, views: int, pseudo_label: bool) -> dict:
    """The run's work in units (pipeline.config.UNIT_IMAGES images through one training epoch of the default
    CNN): training, plus forward passes at a third of a training pass each (every epoch's validation, the
    out-of-fold and test predictions, the pseudo-labelling pass), each scaled by its network's cost."""

    def units(images, summary):
        return images * summary["multiply_adds"] / config.REFERENCE_MULTIPLY_ADDS / config.UNIT_IMAGES

    training = sum(units(summary["train_images"] * epochs, summary) for summary in summaries)
    measured = [summary for summary in summaries if "validation_images" in summary]
    forward = sum(units(summary["validation_images"] * (epochs + views), summary) for summary in measured)
    forward += sum(units(test_images * views, summary) for summary in summaries)
    if pseudo_label:
        forward += sum(units(test_images * views, summary) for summary in measured)
    return {"units": float(f"{training + forward / 3:.3g}"), "training_units": float(f"{training:.3g}"),
            "prediction_units": float(f"{forward / 3:.3g}")}


def estimate_kind(split: dict) -> str:
    return "cross-validation" if "fold" in split else "holdout"


# A test image joins the all-rows model's training data with the label the other models gave it
# when their averaged probability for it is at least this.
PSEUDO_LABEL_CONFIDENCE = 0.995


def confident_labels(probabilities: np.ndarray, confidence: float = PSEUDO_LABEL_CONFIDENCE):
    """(rows, labels) of the predictions whose top probability is at least confidence."""
    rows = np.flatnonzero(probabilities.max(axis=1) >= confidence)
    return rows, probabilities[rows].argmax(axis=1)


def train_one_part(images, labels, part: Part, training: TrainingConfig, strategy, checkpoints: Path, console,
                   number: int, total: int, epochs_after: int = 0, tensorboard_dir: Path | None = None):
    """Train one part (resuming from checkpoints/<part>/): (model, history, summary, probabilities of the
    rows it never saw or None). The same here and in an engine's worker (pipeline.engine.train_part)."""
    from pipeline.stages.predict import predict_probabilities
    from pipeline.training import model as model_library

    checked_on = (f", checked on {len(part.validation_rows)} it never sees"
                  if part.validation_rows is not None else ", all rows")
    console.say(f"train: model {number} of {total} ({part.name}, seed {part.seed}):"
                f" {len(part.train_rows)} images{checked_on}")
    validation = (None, None)
    if part.validation_rows is not None:
        validation = (images[part.validation_rows], labels[part.validation_rows])
    model, state = fit_one_model(
        images[part.train_rows], labels[part.train_rows], *validation, training, part.seed,
        checkpoints / part.name, strategy, log=console.say, epochs_after=epochs_after,
        tensorboard_dir=tensorboard_dir / part.name if tensorboard_dir else None)
    summary = {"name": part.name, "seed": part.seed, "train_images": int(len(part.train_rows)),
               "multiply_adds": model_library.multiply_adds(model)}
    probabilities = None
    if part.validation_rows is not None:
        probabilities = predict_probabilities([model], validation[0], tta=training.tta, verbose=0)
        curve = state["history"].get("val_accuracy", [])
        summary.update(validation_images=int(len(part.validation_rows)),
                       accuracy=float((probabilities.argmax(axis=1) == validation[1]).mean()),
                       best_epoch=int(np.argmax(curve)) + 1, best_epoch_accuracy=float(max(curve)))
    return model, state["history"], summary, probabilities


def train_parts(images, labels, parts: list[Part], training: TrainingConfig, strategy, checkpoints: Path,
                run_dir: Path, console, numbering: tuple[int, int] | None = None, tensorboard_dir: Path | None = None,
                engine=None):
    """Train every part and save each as run_dir/<part>.keras: one after another here, or as tasks of
    engine (pipeline.engine) when it is "ray".

    Returns (model paths, histories, part summaries, out-of-fold probabilities (N, 10) summed over
    the models that predicted each row, and how many did). Each part resumes from its own
    checkpoint folder, so a killed run redoes only the epochs it had not finished.
    """
    first_number, total = numbering or (1, len(parts))
    out_of_fold = np.zeros((len(labels), config.NUM_CLASSES), dtype=np.float64)
    predicted = np.zeros(len(labels), dtype=np.int64)
    model_paths, histories, summaries = [], [], []
    if engine is not None and engine.name == "ray":
        from pipeline.training.engine import train_parts_on_ray

        results = train_parts_on_ray(images, labels, parts, training, checkpoints, (first_number, total),
                                     tensorboard_dir, engine, console)
    else:
        results = (_train_here(images, labels, part, training, strategy, checkpoints, console, first_number + index,
                               total, tensorboard_dir) for index, part in enumerate(parts))
    for part, result in zip(parts, results):
        path = run_dir / f"{part.name}.keras"
        if isinstance(result["model"], bytes):  # from an engine's worker: the saved file itself
            require_free_space(run_dir, len(result["model"]), path.name)
            with atomic_path(path) as temporary:
                temporary.write_bytes(result["model"])
        else:
            save_model(result["model"], path)
        if result["probabilities"] is not None:
            out_of_fold[part.validation_rows] += result["probabilities"]
            predicted[part.validation_rows] += 1
        model_paths.append(path)
        histories.append(result["history"])
        summaries.append(result["summary"])
    return model_paths, histories, summaries, out_of_fold, predicted


def _train_here(images, labels, part, training, strategy, checkpoints, console, number, total, tensorboard_dir):
    model, history, summary, probabilities = train_one_part(
        images, labels, part, training, strategy, checkpoints, console, number, total,
        epochs_after=(total - number) * training.epochs, tensorboard_dir=tensorboard_dir)
    return {"model": model, "history": history, "summary": summary, "probabilities": probabilities}


def _upstream_summary() -> dict:
    from pipeline.core.cache import load_record

    records = {name: load_record(name) for name in ("download", "prepare", "split")}
    return {
        "source": (records["download"] or {}).get("extra", {}).get("source"),
        "split": (records["split"] or {}).get("key", {}).get("params", {}),
        "durations_s": {name: record["extra"].get("seconds") for name, record in records.items() if record},
    }


def new_run_id(paths, stem: str) -> str:
    """stem, or stem-2, stem-3...: the first whose folder this call creates (parallel trials start in one second)."""
    paths.models.mkdir(parents=True, exist_ok=True)
    for number in range(1, 1000):
        run_id = stem if number == 1 else f"{stem}-{number}"
        try:
            paths.run_dir(run_id).mkdir()
            return run_id
        except FileExistsError:
            continue
    raise PipelineError(f"{paths.models}: too many runs named {stem}-*")


def define(paths, console, training: TrainingConfig, preset: str, tensorboard: bool = False, engine=None):
    """The train stage: the prepared arrays and the split in; data/models/<run>/ out: the models,
    their histories, the out-of-fold predictions and run.json with the estimate.

    tensorboard: also write TensorBoard logs to data/tensorboard/<key>/<model>/. engine: where the
    models train (pipeline.engine.Engine; None: here, one after another). Neither is part of the
    stage's key: they change no result, so they alone never rerun a finished stage."""
    from pipeline.core import estimate, runs
    from pipeline.core.stage import Definition, require

    on_ray = engine is not None and engine.name == "ray"

    requested = training

    require("split", "python -m pipeline split")

    created_run_dirs = []

    def work():
        try:
            if not on_ray:
                return train_run()
            from pipeline.training.engine import ray_session

            console.say("train: starting Ray (its start-up takes 10-30 s)")
            with ray_session(engine):  # one connection (or local instance) for the whole run
                return train_run()
        except BaseException:  # failed or interrupted before its first model was saved: no empty folder left
            for run_dir in created_run_dirs:
                with contextlib.suppress(OSError):
                    run_dir.rmdir()  # only when empty
            raise

    def train_run():
        from pipeline.core.console import import_tensorflow_quietly
        from pipeline.training.device import describe_devices

        started = time.perf_counter()
        if on_ray:
            from pipeline.training.engine import cluster_devices

            precision, devices = cluster_devices(requested.precision, engine.device)
            training = replace(requested, precision=precision)
        else:
            use_device(engine.device if engine else "auto")
            import_tensorflow_quietly()
            # "auto" is resolved only now: finding the devices imports TensorFlow, which an up-to-date
            # run never does. run.json records the precision that really ran.
            training = replace(requested, precision=resolve_precision(requested.precision))
            devices = describe_devices()
        images = np.load(paths.train_images, mmap_mode="r")
        labels = np.load(paths.train_labels)
        split = dict(np.load(paths.split_file))
        parts = plan_parts(split, len(labels), training.members, training.seed, training.final_model)
        run_id = new_run_id(paths, time.strftime("%Y%m%d-%H%M%S") + f"-{training.architecture}")
        run_dir = paths.run_dir(run_id)
        created_run_dirs.append(run_dir)
        checkpoints = paths.checkpoints / definition.key_id  # the same settings resume the same folder
        tensorboard_dir = paths.data / "tensorboard" / definition.key_id if tensorboard else None
        if tensorboard_dir:
            console.say(f"train: TensorBoard logs in {tensorboard_dir}"
                        f" (view them: tensorboard --logdir {tensorboard_dir})")
        strategy = None if on_ray else configure_tensorflow(training)
        replicas = strategy.num_replicas_in_sync if strategy else 1
        console.say(f"train: {len(parts)} x {training.architecture}, {count(training.epochs, 'epoch')}, batch "
                    f"{training.batch_size}, {training.precision}, on {devices}"
                    f"{f' ({replicas} replicas)' if replicas > 1 else ''}")
        # The model on all rows waits for the others only when it learns their pseudo-labels.
        first = [part for part in parts if part.validation_rows is not None] if training.pseudo_label else parts
        model_paths, histories, summaries, out_of_fold, predicted = train_parts(
            images, labels, first, training, strategy, checkpoints, run_dir, console, (1, len(parts)), tensorboard_dir,
            engine)
        for final_part in parts[len(first):]:  # the model on all rows and the test images the others are sure of
            final_images, final_labels, pseudo_labelled = _with_pseudo_labels(images, labels, model_paths)
            final_part = Part(final_part.name, final_part.seed, np.arange(len(final_labels)), None)
            final_paths, final_histories, final_summaries, _, _ = train_parts(
                final_images, final_labels, [final_part], training, strategy, checkpoints, run_dir, console,
                (len(parts), len(parts)), tensorboard_dir, engine)
            final_summaries[0]["pseudo_labelled_images"] = pseudo_labelled
            model_paths, histories, summaries = (model_paths + final_paths, histories + final_histories,
                                                 summaries + final_summaries)
        rows = np.flatnonzero(predicted)
        probabilities = (out_of_fold[rows] / predicted[rows, None]).astype(np.float32)
        folds = int(split["fold"].max()) + 1 if "fold" in split else 1
        # The spread of the measured models' own accuracies: the "mean +- sd over folds" of a CV table.
        model_accuracies = [summary["accuracy"] for summary in summaries if "accuracy" in summary]
        run_estimate = estimate.make_estimate(probabilities, labels[rows], estimate_kind(split), folds=folds,
                                              tta=training.tta, models_per_row=training.members,
                                              model_accuracy_mean=float(np.mean(model_accuracies)),
                                              model_accuracy_sd=float(np.std(model_accuracies, ddof=1))
                                              if len(model_accuracies) > 1 else None)
        history_path = run_dir / "history.json"
        write_json(history_path, histories)
        out_of_fold_path = run_dir / "out_of_fold.npz"
        with atomic_path(out_of_fold_path) as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, rows=rows, probabilities=probabilities)
        upstream = _upstream_summary()
        from pipeline.stages.predict import TTA_SHIFTS

        views = len(TTA_SHIFTS) if training.tta else 1
        work = work_units(summaries, training.epochs, len(np.load(paths.test_images, mmap_mode="r")), views,
                          training.pseudo_label)
        console.say(f"train: the run's work is {work['units']} units ({work['training_units']} of training,"
                    f" {work['prediction_units']} of prediction; a unit is 42,000 images through one epoch of the"
                    " default CNN)")
        run = {
            "id": run_id, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "source": upstream["source"], "preset": preset,
            # The split's own seed apart: params["seed"] is the one the models were trained with.
            "params": training.as_dict(), "split": upstream["split"],
            "estimate": run_estimate, "parts": summaries, "work": work,
            # What it was trained on, so that a report of this run later can tell whether data/prepared still is.
            "data": {path.name: path_digest(path) for path in (paths.train_images, paths.train_labels)},
            "durations_s": {**upstream["durations_s"], "train": round(time.perf_counter() - started, 1)},
            "models": [relative_name(path) for path in model_paths],  # relative: a moved checkout still finds them
            "engine": engine.name if engine else "local", "devices": devices,
        }
        if tensorboard_dir:
            run["tensorboard"] = relative_name(tensorboard_dir)
        runs.write_run(paths, run)
        shutil.rmtree(checkpoints, ignore_errors=True)
        return [*model_paths, history_path, out_of_fold_path], {
            "run_id": run_id, "estimate": run_estimate, "train_size": len(labels), "preset": preset, "run": run}

    def _with_pseudo_labels(images, labels, model_paths):
        """The train rows plus the test images the measured models agree on, labelled as they say."""
        from pipeline.stages.predict import predict_probabilities
        from pipeline.training.model import load_models

        test_images = np.load(paths.test_images)
        probabilities = predict_probabilities(load_models(model_paths), test_images, tta=training.tta, verbose=0,
                                              log=console.say)
        rows, pseudo_labels = confident_labels(probabilities)
        console.say(f"train: {len(rows)} of {len(test_images)} test images pseudo-labelled (the models' averaged"
                    f" probability at least {PSEUDO_LABEL_CONFIDENCE}) for the model on all rows")
        return (np.concatenate([images, test_images[rows]]),
                np.concatenate([labels, pseudo_labels]).astype(labels.dtype), len(rows))

    def describe(record):
        extra = record["extra"]
        return (f"run {extra['run_id']}, estimated accuracy {estimate.describe(extra['estimate'])},"
                f" models in {paths.run_dir(extra['run_id'])}")

    def after_restore(record):
        if not runs.run_path(paths, record["extra"]["run_id"]).is_file():
            runs.write_run(paths, record["extra"]["run"])

    inputs = [paths.train_images, paths.train_labels, paths.split_file]
    if training.pseudo_label:
        inputs.append(paths.test_images)
    # work() names the checkpoint folder after this definition's key, hence the name used before it is set.
    definition = Definition("train", training.as_dict(), inputs, work, describe, after_restore)
    return definition
