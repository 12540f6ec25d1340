"""blend: average the test probabilities of finished runs into one submission, a run of its own.

Every run's predict stage keeps its test probabilities (Paths.test_probabilities). A blend takes their
weighted mean, writes submissions/<blend>.csv and a run folder (its run.json and submission.json, as train and
predict would) that `runs`, `submit` and `report` treat like any other. Its estimate is honest or absent: the runs'
out-of-fold predictions are blended the same way only when they cover the same rows (the same split),
so every blended row is still predicted by models that never saw it; otherwise the blend has none.
"""

import math
import shutil
import time
from dataclasses import replace

import numpy as np

from pipeline.competition.submission import check_submission, submission_text
from pipeline.core import cache, config, estimate, runs
from pipeline.core.console import import_tensorflow_quietly
from pipeline.core.errors import PipelineError
from pipeline.core.records import Run, SubmissionRecord
from pipeline.report.leaderboard import prediction_words
from pipeline.report.writer import training_data_matches
from pipeline.stages.predict import unused_submission_path
from pipeline.stages.train import new_run_id
from pipeline.training.prediction import predict_probabilities


def parse_weights(text: str | None, count: int) -> list[float]:
    """'2,1' -> [2/3, 1/3]; None -> equal weights."""
    if text is None:
        return [1.0 / count] * count
    try:
        weights = [float(value) for value in text.split(",")]
    except ValueError:
        raise PipelineError(f"--weights {text}: expected numbers separated by commas, e.g. 2,1") from None
    if len(weights) != count:
        raise PipelineError(f"--weights {text}: {len(weights)} weights for {count} runs (one per run, in order)")
    if not all(0 <= weight < math.inf for weight in weights) or not 0 < sum(weights) < math.inf:
        raise PipelineError(f"--weights {text}: expected numbers above 0 (and not inf), e.g. 2,1")
    if 0 in weights:  # a "blend" of the other runs alone, listed with the left-out run's models
        raise PipelineError(f"--weights {text}: a run of weight 0 adds nothing; leave it out of the blend")
    return [weight / sum(weights) for weight in weights]


def check_same_data(chosen: list[Run]) -> None:
    """Refuse runs trained on different train digits: their recorded hashes (the same data may come from
    Kaggle, a zip or a folder)."""
    undated = next((run for run in chosen if not run.data), None)
    if undated is not None:  # run.json of the first versions: no hashes to compare, not different data
        raise PipelineError(f"run {undated.id}: its run.json, from an early version, does not record the data it was"
                            " trained on, so it cannot be blended safely: leave it out, or train it again")
    first = chosen[0]
    for other in chosen[1:]:
        if other.data != first.data:
            raise PipelineError(f"runs {first.id} ({first.source}) and {other.id} ({other.source})"
                                " were trained on different data: blend runs of one data set")


def test_probabilities(paths: config.Paths, run: Run, console, test_images: str | None) -> np.ndarray:
    """The run's stored test probabilities, when they are of the test images data/prepared holds (test_images: their
    digest). Runs predicted before they were stored, or for other test images (the run restored from the run cache
    for another test.csv writes over them): predict again with the run's models, as predict would (with its TTA)."""
    stored = paths.test_probabilities(run.id)
    made_for = runs.test_images_of_probabilities(paths, run.id)  # None: predicted before that was recorded
    model_paths = [cache.absolute_path(name) for name in run.models]
    have_models = bool(model_paths) and all(path.is_file() for path in model_paths)
    # Unrecorded (predicted by an earlier version, which wrote another test.csv's over the file as well): predicted
    # again where the models are there to do it; taken as they are only where they are not.
    if stored.is_file() and (made_for == test_images or (made_for is None and not have_models)):
        probabilities = runs.read_test_probabilities(stored)
        if not np.isfinite(probabilities).all():  # one diverged run would make the whole blend's labels 0
            raise PipelineError(f"run {run.id}: its test probabilities are NaN (its training diverged): leave it out")
        return probabilities
    why = ("no test probabilities" if not stored.is_file() else
           "its test probabilities do not say which test images they are of (predicted by an earlier version)"
           if made_for is None else "its test probabilities are of other test images than data/prepared holds")
    if not have_models:
        advice = runs.back_from_the_run_cache(paths, run.id, "retrain it")
        raise PipelineError(f"run {run.id}: {why}, and no models to predict them with ({advice}, or leave it out)")
    if not training_data_matches(paths, run):
        raise PipelineError(f"run {run.id}: {why}, and data/prepared no longer holds its data (source {run.source})"
                            " to predict them again")

    console.say(f"blend: run {run.id}: {why}: predicting them again")
    import_tensorflow_quietly()  # before pipeline.training.model imports it, with its start-up chatter
    from pipeline.training.model import load_models  # Keras at its top: only to predict again

    probabilities = predict_probabilities(load_models(model_paths), np.load(paths.test_images),
                                          tta=run.params.get("tta", False), log=console.say)
    runs.save_test_probabilities(paths, run.id, probabilities, test_images)
    return probabilities


def same_blend_before(paths: config.Paths, blend_of: dict, weights: list[float], test_images: str | None) -> Run | None:
    """An earlier blend of the same runs' same test probabilities (blend_of: {run id: digest}) with the same weights,
    its submission still there: the same blend again is that one, not a copy."""
    wanted = sorted(zip(blend_of, [round(weight, 6) for weight in weights]))  # `blend B A` is `blend A B`
    for run in runs.list_runs(paths):
        if (run.blend and sorted(zip(run.blend.get("runs", []), run.blend.get("weights", []))) == wanted
                and run.submission and cache.absolute_path(run.submission).is_file()
                and runs.test_images_of_probabilities(paths, run.id) == test_images
                and runs.blended_probabilities(paths, run.id) == blend_of):
            return run
    return None


def _predicted(paths: config.Paths, run_id: str) -> str:
    """' (tta, all-rows x3)': how the run's test probabilities the blend takes were predicted (its latest predict's,
    as its submission.json says), which `predict --tta` or `--final-weight` change; '' where it does not say."""
    words = prediction_words(runs.read_submission_record(paths, run_id), short=True)
    return f" ({words})" if words else ""


def out_of_fold(paths: config.Paths, run: Run) -> dict | None:
    """{"rows", "probabilities"} the run's models predicted without having seen them; None when not kept."""
    path = paths.out_of_fold(run.id)
    if not path.is_file():
        return None
    rows, probabilities = runs.read_out_of_fold(path)
    return {"rows": rows, "probabilities": probabilities}


def blended_estimate(paths: config.Paths, chosen: list[Run], weights: list[float]):
    """(estimate, rows, probabilities) of the blended out-of-fold predictions, or (None, reason, None)."""
    predictions = [out_of_fold(paths, run) for run in chosen]
    if any(prediction is None for prediction in predictions):
        missing = next(run.id for run, prediction in zip(chosen, predictions) if prediction is None)
        return None, f"run {missing} keeps no out-of-fold predictions", None
    rows = predictions[0]["rows"]
    if not all(np.array_equal(prediction["rows"], rows) for prediction in predictions[1:]):
        return None, "the runs held out different rows (another split), and the estimate needs the same ones", None
    probabilities = sum(weight * prediction["probabilities"].astype(np.float64)
                        for weight, prediction in zip(weights, predictions)).astype(np.float32)
    labels = np.load(paths.train_labels)
    first = chosen[0].estimate
    kind = first.kind if first else "holdout"
    folds = first.folds if first and first.folds is not None else 1
    blend_estimate = estimate.make_estimate(probabilities, labels[rows], kind, folds=folds,
                                            blend_of=[run.id for run in chosen])
    return blend_estimate, None, (rows, probabilities)


def blend(paths: config.Paths, console, run_ids: list[str], weights_text: str | None = None) -> Run:
    """Blend the runs into a new run with its submission; the new run's record."""
    if len(run_ids) < 2:
        raise PipelineError(f"blend: name at least two runs (see {runs.RUNS})")
    if len(set(run_ids)) != len(run_ids):
        raise PipelineError(f"blend: a run named twice ({' '.join(run_ids)}); give it a larger --weights instead")
    weights = parse_weights(weights_text, len(run_ids))
    for run_id in run_ids:
        runs.run_path(paths, run_id)  # each a run id
    if not paths.models.is_dir():  # said before the lock makes data/ to hold its file
        raise PipelineError(f"blend: no runs in {paths.models} yet (see {runs.RUNS})")
    with cache.exclusive_lock():
        chosen = [runs.read_run(paths, run_id) for run_id in run_ids]
        check_same_data(chosen)
        if not training_data_matches(paths, chosen[0]):
            raise PipelineError(f"blend: data/prepared no longer holds the data of runs {', '.join(run_ids)} (source"
                                f" {chosen[0].source}); prepare it again ({config.PREPARE_AGAIN})")
        test_images = cache.path_digest(paths.test_images)
        all_probabilities = [test_probabilities(paths, run, console, test_images) for run in chosen]
        shapes = {probabilities.shape for probabilities in all_probabilities}
        if len(shapes) != 1:
            raise PipelineError(f"blend: the runs predicted different test sets ({', '.join(map(str, shapes))})")
        blend_of = {run.id: cache.file_digest(paths.test_probabilities(run.id)) for run in chosen}
        earlier = same_blend_before(paths, blend_of, weights, test_images)
        if earlier is not None:
            console.say(f"blend: up to date, run {earlier.id} (the same runs' predictions, the same weights),"
                        f" {cache.absolute_path(earlier.submission)}")
            return earlier
        blended = sum(weight * probabilities.astype(np.float64)
                      for weight, probabilities in zip(weights, all_probabilities)).astype(np.float32)
        labels = blended.argmax(axis=1)
        check_submission(np.arange(1, len(labels) + 1), labels, len(np.load(paths.test_images, mmap_mode="r")))
        blend_estimate, no_estimate_reason, held_out = blended_estimate(paths, chosen, weights)
        histories = []
        for run in chosen:
            history_path = paths.history_json(run.id)
            histories += runs.read_histories(history_path) if history_path.is_file() else []

        # Everything read: the run folder first, the submission last, so that a blend cut short leaves no
        # submission that looks finished; and no run folder either (a full disk, Ctrl-C): no run without its file.
        run_id = new_run_id(paths, time.strftime("%Y%m%d-%H%M%S") + "-blend")
        submission = unused_submission_path(paths.submissions, run_id)
        try:
            runs.save_test_probabilities(paths, run_id, blended, test_images, blend_of)
            if held_out is not None:  # so that `report --run` and a later blend find them as for any run
                with cache.atomic_path(paths.out_of_fold(run_id)) as temporary:
                    with open(temporary, "wb") as stream:
                        np.savez(stream, rows=held_out[0], probabilities=held_out[1])
            cache.write_json(paths.history_json(run_id), histories)
            run = Run(
                id=run_id, date=time.strftime("%Y-%m-%d %H:%M:%S"), source=chosen[0].source,
                preset="blend", blend={"runs": run_ids, "weights": [round(weight, 6) for weight in weights]},
                params={"blend_of": " + ".join(f"{weight:.3g} x {blended_id}{_predicted(paths, blended_id)}"
                                               for weight, blended_id in zip(weights, run_ids))},
                split=chosen[0].split if all(run.split == chosen[0].split for run in chosen) else {},
                estimate=blend_estimate, no_estimate=no_estimate_reason,
                parts=tuple(replace(part, name=f"{run.id}/{part.name}") for run in chosen for part in run.parts),
                # Each model once: a blend of a blend and one of its runs names that run's models twice.
                data=chosen[0].data, models=tuple(dict.fromkeys(name for run in chosen for name in run.models)))
            runs.write_run(paths, run)  # the blend's run.json, and its submission.json as predict would write it
            runs.write_submission_record(paths, run_id, SubmissionRecord(cache.relative_name(submission),
                                                                         rows=len(labels)))
            with cache.atomic_path(submission) as temporary:
                temporary.write_text(submission_text(labels))
        except BaseException:
            shutil.rmtree(paths.run_dir(run_id), ignore_errors=True)
            raise
        run = replace(run, submission=cache.relative_name(submission))
    console.say(f"blend: {' + '.join(f'{weight:.2f} x {run_id}' for weight, run_id in zip(weights, run_ids))}"
                f" -> run {run_id}, {len(labels)} predictions in {submission}")
    if blend_estimate:
        alone = ", ".join(f"{other.accuracy:.4f}" for other in chosen)
        console.say(f"blend: out-of-fold estimate {estimate.describe(blend_estimate)}; the runs alone: {alone}")
    else:
        console.say(f"blend: no estimate: {no_estimate_reason}")
    return run
