"""One model's fit, epoch by epoch, with a checkpoint after each.

Every model keeps its LAST epoch's weights: picking the best epoch on the rows that measure it would
make the estimate optimistic. Every completed epoch is checkpointed (model, optimizer, history), so a
run that was stopped continues from its last completed epoch. The shuffle order and augmentation of an
epoch depend only on (seed, epoch) (pipeline.training.augment), and the layers' random state is reseeded
from (seed, epoch) too, so the resumed run sees exactly the batches the uninterrupted one would have
seen and ends at the same place.
"""

import json
import math
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.core.cache import atomic_path, require_free_space, write_json
from pipeline.core.console import count, format_duration
from pipeline.core.ctrl_c import ctrl_c_stops_after_its_batch
from pipeline.core.errors import PipelineError, TrainingDiverged
from pipeline.core.progress import batch_ticker
from pipeline.training import looks
from pipeline.training.plan import WARMUP_EPOCHS
from pipeline.training.settings import TrainingConfig


RARE_LOOK_ROWS = "rare-look-rows.npy"


class _Checkpoint:
    """A model's training state after each completed epoch, in its own folder.

    Files are named after their epoch and state.json, written last, names the current one, so a
    process killed between two writes leaves the previous consistent state in place.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.state_path = folder / "state.json"

    def load_state(self) -> dict | None:
        """The state, or None (the model starts again) when there is none or it is not one this class wrote."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):  # missing, not JSON, not UTF-8
            return None
        if not (isinstance(state, dict) and isinstance(state.get("completed_epochs"), int)
                and isinstance(state.get("model_file"), str) and isinstance(state.get("history"), dict)
                and isinstance(state.get("average_file") or "", str)):
            return None
        files = [state["model_file"]] + ([state["average_file"]] if state.get("average_file") else [])
        return state if all((self.folder / name).is_file() for name in files) else None

    def rare_look_rows(self, images, labels, extra_at_most: int, fresh: bool) -> np.ndarray:
        """--rare-looks' rows (pipeline.training.looks), found once and kept here: a resumed fit, on another
        worker too, learns the very rows it started with."""
        path = self.folder / RARE_LOOK_ROWS
        if not fresh and path.is_file():
            return np.load(path)
        rows = looks.rare_look_rows(images, labels, extra_at_most)
        with atomic_path(path) as temporary:
            with open(temporary, "wb") as stream:
                np.save(stream, rows)
        return rows

    def save(self, model, state: dict, average=None) -> dict:
        """average: the run's WeightAverage (pipeline.training.averaging), saved beside the model."""
        # Who wrote it, too: with --engine ray, the worker process that trains this model.
        state = dict(state, model_file=f"epoch-{state['completed_epochs']}.keras", host=socket.gethostname(),
                     pid=os.getpid())
        require_free_space(self.folder, 3 * model_file_bytes(model), "a training checkpoint")
        with atomic_path(self.folder / state["model_file"]) as temporary:
            model.save(temporary)
        state.pop("average_file", None)
        if average is not None:
            state["average_file"] = f"average-{state['completed_epochs']}.npz"
            with atomic_path(self.folder / state["average_file"]) as temporary:
                average.save(temporary)
        write_json(self.state_path, state)
        for path in self.folder.iterdir():
            if path.name not in (state["model_file"], state.get("average_file"), "state.json", RARE_LOOK_ROWS) \
                    and not path.name.startswith(".tmp-"):
                path.unlink()
        return state


# --pseudo-tune's schedule: on three style folds a finished model that went on 3 epochs with its own pseudo-labels
# made 104 errors of 25,201 (from 127) at half the peak after half an epoch's warm-up, 113 at the full peak at once.
TUNING_PEAK = 0.5
TUNING_WARMUP_EPOCHS = 0.5


def fit_one_model(train_images, train_labels, val_images, val_labels, training: TrainingConfig, seed: int,
                  checkpoint_folder: Path, strategy, log=print, images_after: int = 0,
                  tensorboard_dir: Path | None = None, start_from: Path | None = None):
    """Train one model for training.epochs epochs and return (model, state) with its last epoch's weights.

    val_images None: a model on all rows, checked on nothing. The validation accuracy of every
    epoch is kept in the history as a curve; no epoch is chosen by it. A checkpoint_folder holding
    a state resumes from it (a finished model just loads). images_after: the images the run's later models
    still train on (epochs x images an epoch), for the estimate of the time left.
    tensorboard_dir: where Keras's TensorBoard callback writes the curves of the epochs run here (a resumed
    run adds to them).
    start_from: a saved model to go on training (--pseudo-tune) instead of a new one: its weights, with Adam and
    the schedule afresh (TUNING_PEAK of the peak learning rate, after TUNING_WARMUP_EPOCHS of warm-up).
    """
    # Keras, and the modules that import it at their top, load only when a model is fitted.
    import keras

    from pipeline.training import augment
    from pipeline.training import model as model_library

    checkpoint = _Checkpoint(checkpoint_folder)
    checkpoint_folder.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load_state()
    own_images = train_images  # what --recalibrate measures: each row once
    if training.rare_looks:
        rows = checkpoint.rare_look_rows(train_images, train_labels, training.rare_looks, fresh=state is None)
        epochs = looks.epochs_for_same_images(training.epochs, len(train_labels), len(rows))
        if state is None:
            log(f"rare looks: {len(rows) - len(train_labels)} more images an epoch (rows of small look-alike"
                f" clusters repeated up to {training.rare_looks} times), {count(epochs, 'epoch')}"
                f"{f' instead of {training.epochs}' if epochs != training.epochs else ''}")
        train_images, train_labels, training = train_images[rows], train_labels[rows], replace(training, epochs=epochs)
    steps_per_epoch = math.ceil(len(train_images) / training.batch_size)
    if state is not None:
        try:
            with strategy.scope():
                model = model_library.load_model(checkpoint_folder / state["model_file"])
        except PipelineError as error:  # a damaged checkpoint: no way on from it, and it blocked every rerun
            log(f"{error}: training this model again from its first epoch")
            state = None
    with strategy.scope():
        if state is None:
            keras.utils.set_random_seed(seed)
            peak, warmup_epochs = ((training.learning_rate * TUNING_PEAK, TUNING_WARMUP_EPOCHS) if start_from
                                   else (training.learning_rate, WARMUP_EPOCHS))
            schedule = model_library.recommended_schedule(steps_per_epoch, training.epochs, peak,
                                                            warmup_epochs=warmup_epochs,
                                                            floor=training.learning_rate_floor)
            if start_from is not None:
                model = model_library.compile_model(
                    model_library.load_model(start_from), learning_rate=schedule,
                    label_smoothing=training.label_smoothing, weight_decay=training.weight_decay)
            else:
                model = model_library.build_model(
                    training.architecture, learning_rate=schedule, dtype_policy=training.precision,
                    dropout_rate=training.dropout, width=training.width, label_smoothing=training.label_smoothing,
                    weight_decay=training.weight_decay, deskew=training.deskew,
                )
            state = {"completed_epochs": 0, "history": {}}
        elif state["completed_epochs"] < training.epochs:
            log(f"resuming from epoch {state['completed_epochs']} of {training.epochs} ({checkpoint_folder})")
    state = dict(state, images_an_epoch=len(train_images), epochs=training.epochs)  # --rare-looks changes both
    average = None  # the weights' moving average (--ema), continued from the checkpoint when resuming
    if training.ema > 0 and state["completed_epochs"] < training.epochs:
        from pipeline.training.averaging import WeightAverage

        average = WeightAverage(model, training.ema)
        if state.get("average_file"):
            average.load(checkpoint_folder / state["average_file"])
    validation = None
    if val_images is not None:
        validation = augment.make_evaluation_dataset(val_images, val_labels, batch_size=512)
    # No Keras progress bar: the epoch's one line is logged below, and on a terminal a line every ~10 s
    # (from a thread, so the seconds spent building graphs are not silent either).
    ticker = batch_ticker(log, "epoch", steps_per_epoch)

    def stop_at_a_loss_that_is_not_finite(batch, logs=None):  # Keras's TerminateOnNaN, without its print
        if not math.isfinite(float((logs or {}).get("loss", 0.0))):
            model.stop_training = True  # NaN or infinity never comes back: the epoch stops at this batch

    callbacks = [ticker, keras.callbacks.LambdaCallback(on_train_batch_end=stop_at_a_loss_that_is_not_finite)]
    callbacks += [average] if average else []
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), write_graph=False))
    epoch_seconds = []
    recalibrated = None  # --recalibrate's line, once it has run
    for epoch in range(state["completed_epochs"], training.epochs):
        started = time.perf_counter()
        reseed_layers(model, seed, epoch)
        dataset = augment.make_training_dataset(
            train_images, train_labels, training.batch_size, seed, epoch,
            strength=training.augmentation, elastic=training.elastic, cutout=training.cutout,
            thickness=training.thickness, mixup=training.mixup, shear=training.shear,
        )
        # verbose=0: the line below is the epoch's one line, with Keras's numbers in it.
        ticker.label = f"epoch {epoch + 1}/{training.epochs}"
        try:
            # A Ctrl-C raises KeyboardInterrupt after fit's running batch: before the checkpoint below.
            with ctrl_c_stops_after_its_batch(model, "stop_training"):
                result = model.fit(dataset, validation_data=validation, epochs=epoch + 1, initial_epoch=epoch,
                                   shuffle=False, verbose=0, callbacks=callbacks)
        finally:
            ticker.stop()
        loss = float(result.history["loss"][-1])
        if not math.isfinite(loss):  # before the checkpoint: the epochs before it stay, this one is not kept
            raise TrainingDiverged(
                f"model {checkpoint_folder.name}: the loss became {loss} in epoch {epoch + 1} of {training.epochs},"
                f" and training stopped there: the peak learning rate {training.learning_rate:g} is likely too"
                " high for these settings; try a lower --learning-rate")
        history = state["history"]
        for name, values in result.history.items():
            history.setdefault(name, []).append(float(values[-1]))
        history.setdefault("learning_rate", []).append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        if average is not None and epoch + 1 == training.epochs:
            average.swap_in()  # the last checkpoint holds the averaged weights: the model this fit returns
            average = None
        if training.recalibrate and epoch + 1 == training.epochs:  # after the average, so that it is the one measured
            started_recalibration = time.perf_counter()
            layer_count = model_library.recalibrate_batch_norm(model, own_images)  # before the last checkpoint
            if layer_count:  # said after the epoch's line, whose validation accuracy is from before
                recalibrated = (f"recalibrated {layer_count} batch-norm layers' statistics on"
                                f" {min(len(own_images), config.RECALIBRATION_IMAGES)} training images,"
                                f" {time.perf_counter() - started_recalibration:.0f} s")
        state = checkpoint.save(model, dict(state, completed_epochs=epoch + 1), average)
        epoch_seconds.append(time.perf_counter() - started)
        # The time left from representative epochs: the first here builds the graph, so it counts without
        # its first batch's extra time until later epochs exist, and not at all once they do.
        representative = epoch_seconds[1:] or [epoch_seconds[0] - ticker.first_batch_extra_s()]
        # Later models are counted at this one's time an image (another network's may differ).
        epochs_to_come = training.epochs - epoch - 1 + images_after / len(train_images)
        left = epochs_to_come * float(np.median(representative))
        checked = f", val_accuracy {history['val_accuracy'][-1]:.4f}" if "val_accuracy" in history else ""
        log(f"epoch {epoch + 1}/{training.epochs}: loss {history['loss'][-1]:.4f}, accuracy"
            f" {history['accuracy'][-1]:.4f}{checked}, {epoch_seconds[-1]:.0f} s, about {format_duration(left)} left")
        if recalibrated:
            log(recalibrated)
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
