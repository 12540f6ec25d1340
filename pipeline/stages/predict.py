"""Stage 5, predict: label every test image and write the submission (format: pipeline.competition.submission).

An ensemble's members and the test-time-augmented views are averaged as probabilities.
"""

import time
from pathlib import Path

import numpy as np

from pipeline.competition.submission import check_submission, submission_text
from pipeline.core import config, runs
from pipeline.core.cache import absolute_path, atomic_path, path_digest, relative_name
from pipeline.core.console import import_tensorflow_quietly
from pipeline.core.errors import PipelineError
from pipeline.core.records import SubmissionRecord
from pipeline.core.stage import Definition, require
from pipeline.training.plan import ALL_ROWS
from pipeline.training.prediction import predict_probabilities

def unused_submission_path(folder: Path, name: str, text: str | None = None) -> Path:
    """submissions/<name>.csv, or <name>-2.csv, ... so an earlier submission is never overwritten; with text, the
    first that holds that text already, if one does (a predict cut short after it wrote its file: its next run
    finds the same labels there, and adds no copy)."""
    candidate = folder / f"{name}.csv"
    number = 2
    while candidate.exists():
        if text is not None and _holds(candidate, text):
            return candidate
        candidate = folder / f"{name}-{number}.csv"
        number += 1
    return candidate


def _holds(path: Path, text: str) -> bool:
    try:  # read as written: Windows's line ends ("\r\n", a byte more a line) read back as "\n"
        size, least = path.stat().st_size, len(text.encode())
        return least <= size <= least + text.count("\n") and path.read_text(encoding="utf-8", errors="replace") == text
    except OSError:  # a folder of that name, unreadable: not the same
        return False


def submission_weight(train_record: dict, has_all_rows_model: bool, given: float | None) -> float:
    """The model on all rows' weight in the submission's average (each other model's is 1): the one given, else
    the trained run's preset's. A prediction option, not a training one: changing it predicts again, never trains."""
    if given is None:
        preset = config.PRESETS.get(train_record["extra"].get("preset"), config.DEFAULT)
        return preset["final_weight"] if has_all_rows_model else 1.0
    config.check_final_weight(given, has_all_rows_model)
    return given


# ----------------------------------------------------------------------------------------- the stage

def define(paths, console, tta: bool | None = None, final_weight: float | None = None):
    """The predict stage for the latest trained run; tta None: as the preset it was trained with says;
    final_weight (the model on all rows' weight in the average) None: as that preset says."""
    train_record = require("train", "python -m pipeline train", needs=("run_id",))
    run_id = train_record["extra"]["run_id"]
    if tta is None:  # as the models were trained and estimated
        tta = train_record["key"]["params"].get("tta", False)
    model_paths = runs.model_paths(train_record)
    all_rows = [path.stem == ALL_ROWS for path in model_paths]
    final_weight = submission_weight(train_record, any(all_rows), final_weight)
    weights = [final_weight if is_all_rows else 1.0 for is_all_rows in all_rows]
    # Not sample_submission.csv: prepare checked its ids against test.csv before any training, and it changes no
    # prediction (a mended or re-saved template predicted again, into a second identical file).
    inputs = [*model_paths, paths.test_images]

    def work():
        import_tensorflow_quietly()
        from pipeline.training.model import load_models  # Keras at its top: only when predicting

        started = time.perf_counter()
        images = np.load(paths.test_images)
        with_tta = " and test-time augmentation" if tta else ""
        weighted = f", the model on all rows counted {final_weight:g} times" if final_weight != 1 else ""
        console.say(f"predict: {len(images)} test images with run {run_id}{with_tta}{weighted}")
        probabilities = predict_probabilities(load_models(model_paths), images, tta=tta, verbose=0,
                                              log=console.say, weights=weights)
        if not np.isfinite(probabilities).all():  # argmax of NaN is 0: a submission of zeros that looks finished
            raise PipelineError(f"run {run_id}: its models predict NaN, so its training diverged (`loss nan` in its"
                                " epochs): train again with a lower --learning-rate; no submission written")
        labels = probabilities.argmax(axis=1)
        check_submission(np.arange(1, len(labels) + 1), labels, len(images))
        # Every test image's averaged probabilities, kept beside the run's models for `blend`; before the
        # submission, which a failure after it would leave behind, finished-looking and unrecorded.
        kept_for_blend = runs.save_test_probabilities(paths, run_id, probabilities, path_digest(paths.test_images))
        text = submission_text(labels)
        path = unused_submission_path(paths.submissions, run_id, text)
        if not path.exists():
            with atomic_path(path) as temporary:
                temporary.write_text(text)
        # predict's own record in the run folder (run.json is train's alone).
        runs.write_submission_record(paths, run_id, SubmissionRecord(
            relative_name(path), rows=len(labels), tta=tta, final_weight=final_weight,
            seconds=round(time.perf_counter() - started, 1)))
        return [path, *kept_for_blend], {"submission": relative_name(path), "rows": len(labels),
                        "label_counts": np.bincount(labels, minlength=config.NUM_CLASSES).tolist()}

    def put_back(record):
        """The submission came back from the run cache (or its record in the run folder is gone): the run folder
        says so again."""
        written = runs.read_submission_record(paths, run_id)
        if written is None or written.submission != record["extra"]["submission"]:
            runs.write_submission_record(paths, run_id, SubmissionRecord(
                record["extra"]["submission"], rows=record["extra"].get("rows"), tta=tta, final_weight=final_weight))

    return Definition("predict", {"tta": tta, "final_weight": final_weight, "run_id": run_id}, inputs, work,
                      lambda record: (f"{record['extra']['rows']} predictions in"
                                      f" {absolute_path(record['extra']['submission'])}"),
                      put_back)
