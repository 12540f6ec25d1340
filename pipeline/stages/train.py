"""Stage 4, train: the models of a run, and the accuracy estimate nothing was chosen on.

A run is a list of parts (`plan_parts`), one model each: the members of a holdout split, or one
model per cross-validation fold, plus optionally a model on all rows. Every model keeps its LAST
epoch's weights: picking the best epoch on the rows that measure it would make the estimate
optimistic. Each part's predictions of the rows it never saw are the run's out-of-fold
predictions, from which `pipeline.core.estimate` makes the reported accuracy and its 95 % interval.

Every completed epoch is checkpointed (model, optimizer, history), part by part, so a run that
was stopped continues from its last completed epoch and redoes no finished part. The shuffle order and augmentation of
an epoch depend only on (seed, epoch) (pipeline.training.augment), so the resumed run sees exactly the
batches the uninterrupted one would have seen and ends at the same place.
"""

import contextlib
import shutil
import time
from dataclasses import replace

import numpy as np

from pipeline.core import estimate, runs
from pipeline.core.config import network_name
from pipeline.core.cache import atomic_path, load_record, path_digest, relative_name, write_json
from pipeline.core.console import count, import_tensorflow_quietly
from pipeline.core.errors import PipelineError
from pipeline.core.records import Run
from pipeline.core.stage import Definition, require
from pipeline.training.device import describe_devices, precision_warning, resolve_precision, use_device
from pipeline.training.engine import cluster_devices, ray_running, ray_session
from pipeline.training.looks import epochs_for_same_images
from pipeline.training.parts import train_parts
from pipeline.training.plan import (
    PSEUDO_LABEL_CONFIDENCE,
    WARMUP_EPOCHS,
    Part,
    confident_labels,
    estimate_kind,
    images_after_measured,
    plan_parts,
    replaced_by_tuning,
    work_units,
)
from pipeline.training.prediction import TTA_SHIFTS, predict_probabilities
from pipeline.training.settings import TrainingConfig, configure_tensorflow


def _upstream_summary() -> dict:
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
            (paths.run_dir(run_id) / paths.UNFINISHED_RUN).touch()  # until its run.json (runs.write_run)
            return run_id
        except FileExistsError:
            continue
    raise PipelineError(f"{paths.models}: too many runs named {stem}-*")


def _networks(parts: list[Part], training: TrainingConfig) -> str:
    """What the run trains: "2 x cnn", or with --alternate "3 x cnn at 1.5x width and 3 x resnet at 0.9x width"."""
    alternates = sum(part.network is not None for part in parts)
    own = f"{len(parts) - alternates} x {network_name(training.architecture, training.width, training.deskew)}"
    return own + (f" and {alternates} x {network_name(*training.alternate_network())}" if alternates else "")


def define(paths, console, training: TrainingConfig, preset: str, tensorboard: bool = False, engine=None):
    """The train stage: the prepared arrays and the split in; data/models/<run>/ out: the models,
    their histories, the out-of-fold predictions and run.json with the estimate.

    tensorboard: also write TensorBoard logs to data/tensorboard/<key>/<model>/. engine: where the
    models train (pipeline.training.engine.Engine; None: here, one after another). Neither is part of the
    stage's key: they change no result, so they alone never rerun a finished stage."""
    on_ray = engine is not None and engine.name == "ray"

    requested = training

    require("split", "python -m pipeline split")

    created_run_dirs = []

    def work():
        try:
            if not on_ray:
                return train_run()
            if not ray_running():  # under tune, its own session: said once, by tune
                console.say("train: starting Ray (its start-up takes 10-30 s)")
            with ray_session(engine):  # one connection (or local instance) for the whole run
                return train_run()
        except BaseException:  # failed or interrupted before its first model was saved: no empty folder left
            for run_dir in created_run_dirs:  # a folder with models keeps its mark: the next command removes it
                with contextlib.suppress(OSError):
                    if {path.name for path in run_dir.iterdir()} <= {paths.UNFINISHED_RUN}:
                        shutil.rmtree(run_dir)
            raise

    def train_run():
        started = time.perf_counter()
        images = np.load(paths.train_images, mmap_mode="r")
        labels = np.load(paths.train_labels)
        split = dict(np.load(paths.split_file))
        parts = plan_parts(split, len(labels), requested.members, requested.seed, requested.final_model,
                           requested.alternate_network())  # refused before TensorFlow's seconds of start-up
        if on_ray:
            precision, devices, slow = cluster_devices(requested.precision, engine.device)
            training = replace(requested, precision=precision)
        else:
            use_device(engine.device if engine else "auto")
            import_tensorflow_quietly()
            # "auto" is resolved only now: finding the devices imports TensorFlow, which an up-to-date
            # run never does. run.json records the precision that really ran.
            training = replace(requested, precision=resolve_precision(requested.precision))
            devices = describe_devices()
            slow = precision_warning(training.precision)
        if slow:
            console.warn(slow)
        run_id = new_run_id(paths, time.strftime("%Y%m%d-%H%M%S") + f"-{training.architecture}")
        run_dir = paths.run_dir(run_id)
        created_run_dirs.append(run_dir)
        checkpoints = paths.run_checkpoints(definition.key_id)  # the same settings resume the same folder
        tensorboard_dir = paths.tensorboard(definition.key_id) if tensorboard else None
        if tensorboard_dir:
            console.say(f"train: TensorBoard logs in {tensorboard_dir}"
                        f" (view them: tensorboard --logdir {tensorboard_dir})")
        strategy = None if on_ray else configure_tensorflow(training)
        replicas = strategy.num_replicas_in_sync if strategy else 1
        console.say(f"train: {_networks(parts, training)}, {count(training.epochs, 'epoch')}, batch "
                    f"{training.batch_size}, {training.precision}, on {devices}"
                    f"{f' ({replicas} replicas)' if replicas > 1 else ''}")
        if training.strategy == "mirrored" and strategy is not None and replicas == 1:
            console.warn(f"--strategy mirrored: one device here, {devices}, so it trains as --strategy default")
        if training.epochs <= WARMUP_EPOCHS:
            console.warn(f"--epochs {training.epochs}: all of it is the schedule's {WARMUP_EPOCHS}-epoch warm-up, so"
                         " the learning rate rises to its peak and never comes down; the models keep the last"
                         f" weights, taken at the peak ({WARMUP_EPOCHS + 1} or more epochs end on a decay)")
        # The model on all rows waits for the others only when it learns their pseudo-labels.
        first = [part for part in parts if part.validation_rows is not None] if training.pseudo_label else parts
        total = len(parts) + (len(first) if training.pseudo_tune else 0)  # --pseudo-tune: each measured one goes on
        learners = len(parts) - len(first)
        test_rows = len(np.load(paths.test_images, mmap_mode="r"))  # for the time left and the run's work
        images_after, _ = images_after_measured(first, training.epochs, training.pseudo_tune, len(labels),
                                                test_rows if training.pseudo_label else 0, learners)
        model_paths, histories, summaries, out_of_fold, predicted = train_parts(
            images, labels, first, training, strategy, checkpoints, run_dir, console, (1, total), tensorboard_dir,
            engine, images_after)
        if training.pseudo_label:  # the test images the measured models are sure of, for the models that go on
            extended_images, extended_labels, pseudo_labelled = _with_pseudo_labels(images, labels, model_paths)
            learnt_test_rows = np.arange(len(labels), len(extended_labels))
        if training.pseudo_tune:
            # Each measured model goes on from its last epoch with its own rows and the test images: it is then
            # measured on the same rows it never saw, and it, not the model it went on from, predicts the test rows.
            tuned_parts = [replace(part, name=f"{part.name}-tuned", start_from=path,
                                   train_rows=np.concatenate([part.train_rows, learnt_test_rows]))
                           for part, path in zip(first, model_paths)]
            tuned_training = replace(training, rare_looks=0, epochs=training.pseudo_tune)
            untuned_paths = model_paths
            _, images_after = images_after_measured(first, training.epochs, training.pseudo_tune, len(labels),
                                                    pseudo_labelled, learners)
            model_paths, tuned_histories, tuned_summaries, out_of_fold, predicted = train_parts(
                extended_images, extended_labels, tuned_parts, tuned_training, strategy, checkpoints, run_dir,
                console, (len(first) + 1, total), tensorboard_dir, engine, images_after)
            histories += tuned_histories
            summaries += [replace(summary, pseudo_labelled_images=pseudo_labelled, epochs=training.pseudo_tune)
                          for summary in tuned_summaries]
            for path in untuned_paths:  # the run's models are the ones that predict; their predecessors stay in
                path.unlink()           # the checkpoints until the run ends
        for final_part in parts[len(first):]:  # the model on all rows and the test images the others are sure of
            final_part = replace(final_part, train_rows=np.arange(len(extended_labels)))
            # The test images come instead of epochs, not on top of them: the model sees as many images as it
            # would without them, so --pseudo-label costs no more training than the model it replaces. And
            # instead of rare looks: beside pseudo-labels they gained nothing on the folds of new hands
            # (docs/experiments.md, 2026-12-06: 203 errors of 42,000 with them, 196 without).
            final_training = replace(training, rare_looks=0, epochs=epochs_for_same_images(
                training.epochs, len(labels), len(extended_labels)))
            final_paths, final_histories, final_summaries, _, _ = train_parts(
                extended_images, extended_labels, [final_part], final_training, strategy, checkpoints, run_dir,
                console, (total, total), tensorboard_dir, engine)
            own_epochs = final_training.epochs if final_training.epochs != training.epochs else None
            final_summaries[0] = replace(final_summaries[0], pseudo_labelled_images=pseudo_labelled,
                                         epochs=final_summaries[0].epochs or own_epochs)
            model_paths, histories, summaries = (model_paths + final_paths, histories + final_histories,
                                                 summaries + final_summaries)
        rows = np.flatnonzero(predicted)
        probabilities = (out_of_fold[rows] / predicted[rows, None]).astype(np.float32)
        folds = int(split["fold"].max()) + 1 if "fold" in split else 1
        # The spread of the measured models' own accuracies: the "mean +- sd over folds" of a CV table.
        replaced = replaced_by_tuning(summaries)
        model_accuracies = [summary.accuracy for summary in summaries
                            if summary.accuracy is not None and summary.name not in replaced]
        run_estimate = estimate.make_estimate(probabilities, labels[rows], estimate_kind(split), folds=folds,
                                              tta=training.tta, models_per_row=training.members,
                                              model_accuracy_mean=float(np.mean(model_accuracies)),
                                              model_accuracy_sd=float(np.std(model_accuracies, ddof=1))
                                              if len(model_accuracies) > 1 else None)
        history_path = paths.history_json(run_id)
        write_json(history_path, histories)
        out_of_fold_path = paths.out_of_fold(run_id)
        with atomic_path(out_of_fold_path) as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, rows=rows, probabilities=probabilities)
        upstream = _upstream_summary()
        views = len(TTA_SHIFTS) if training.tta else 1
        work = work_units(summaries, training.epochs, test_rows, views,
                          training.pseudo_label, training.recalibrate)
        console.say(f"train: the run's work is {work['units']} units ({work['training_units']} of training,"
                    f" {work['prediction_units']} of prediction; a unit is 42,000 images through one epoch of the"
                    " default CNN)")
        run = Run(
            id=run_id, date=time.strftime("%Y-%m-%d %H:%M:%S"), source=upstream["source"], preset=preset,
            # The split's own seed apart: params["seed"] is the one the models were trained with.
            params=training.as_dict(), split=upstream["split"],
            estimate=run_estimate, parts=tuple(summaries), work=work,
            # What it was trained on, so that a report of this run later can tell whether data/prepared still is.
            data={path.name: path_digest(path) for path in (paths.train_images, paths.train_labels)},
            durations_s={**upstream["durations_s"], "train": round(time.perf_counter() - started, 1)},
            models=tuple(relative_name(path) for path in model_paths),  # relative: a moved checkout still finds them
            engine=engine.name if engine else "local", devices=devices,
            tensorboard=relative_name(tensorboard_dir) if tensorboard_dir else None)
        runs.write_run(paths, run)  # run.json: this stage alone writes it
        return [*model_paths, history_path, out_of_fold_path], {
            "run_id": run_id, "estimate": run_estimate.to_json(), "train_size": len(labels), "preset": preset,
            "run": run.run_json()}

    def _with_pseudo_labels(images, labels, model_paths):
        """The train rows plus the test images the measured models agree on, labelled as they say."""
        from pipeline.training.model import load_models  # Keras at its top: loaded only to train

        test_images = np.load(paths.test_images)
        # Without test-time augmentation, a fifth of the passes: at the threshold its labels barely differ (four
        # models on five folds of 42,000 rows kept 41,471 with 51 wrong, 41,458 with 48 with it; experiments.md).
        probabilities = predict_probabilities(load_models(model_paths), test_images, tta=False, verbose=0,
                                              log=console.say)
        rows, pseudo_labels = confident_labels(probabilities, PSEUDO_LABEL_CONFIDENCE)
        tuning = (f", and {count(requested.pseudo_tune, 'more epoch')} of the measured models"
                  if requested.pseudo_tune else "")
        console.say(f"train: {len(rows)} of {len(test_images)} test images pseudo-labelled (the models' averaged"
                    f" probability at least {PSEUDO_LABEL_CONFIDENCE}) for the model on all rows{tuning}")
        if not len(rows):
            console.warn("--pseudo-label: the measured models are sure of none of the test images, so the models"
                         " that go on learn the train rows alone (models this unsure are undertrained: more"
                         " --epochs, or more rows)")
        return (np.concatenate([images, test_images[rows]]),
                np.concatenate([labels, pseudo_labels]).astype(labels.dtype), len(rows))

    def describe(record):
        extra = record["extra"]
        return (f"run {extra['run_id']}, estimated accuracy {estimate.describe(extra['estimate'])},"
                f" models in {paths.run_dir(extra['run_id'])}")

    def after_restore(record):
        """The run's models came back from the run cache: its run.json too, when it is gone."""
        run = Run.from_json(record["extra"]["run"])
        if run is not None and not runs.run_path(paths, run.id).is_file():
            runs.write_run(paths, run)

    inputs = [paths.train_images, paths.train_labels, paths.split_file]
    if training.pseudo_label:
        inputs.append(paths.test_images)
    # work() names the checkpoint folder after this definition's key, hence the name used before it is set.
    definition = Definition("train", training.as_dict(), inputs, work, describe, after_restore,
                            # The checkpoints go once the record says the run is done: a record that could not be
                            # written (a full disk) finds the finished models there, and trains nothing again.
                            after_record=lambda record: shutil.rmtree(paths.run_checkpoints(definition.key_id),
                                                                      ignore_errors=True))
    return definition
