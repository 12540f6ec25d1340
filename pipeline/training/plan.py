"""The plan of a run: its parts (one model each: the members of a holdout split, or one model per
cross-validation fold, plus optionally a model on all rows), the test images pseudo-labelled for the
model on all rows, and the run's work counted in units.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.core import config
from pipeline.core.errors import PipelineError
from pipeline.core.records import PartSummary
from pipeline.training.looks import epochs_for_same_images


ALL_ROWS = "all-rows"  # the name of the model on all rows (--final-model), and of its file
WARMUP_EPOCHS = 2  # of the learning rate's schedule: a linear rise to its peak, then a cosine down


@dataclass(frozen=True)
class Part:
    """One model of a run: the rows it trains on and the rows it never sees and predicts (None: all rows)."""

    name: str
    seed: int
    train_rows: np.ndarray
    validation_rows: np.ndarray | None
    network: tuple[str, float, bool] | None = None  # (architecture, width, deskew) when not the run's own: --alternate
    start_from: Path | None = None  # --pseudo-tune: the saved model this one goes on training


def plan_parts(split: dict, row_count: int, members: int, seed: int, final_model: bool,
               alternate: tuple[str, float, bool] | None = None) -> list[Part]:
    """The models a run trains, in order, each with its own seed (seed, seed + 1, ...).

    split: a holdout split ({"train", "validation"} row indices) or folds ({"fold"}: the fold of
    every row). Every group of rows gets `members` models; final_model adds one on all rows.
    alternate: (architecture, width, deskew) of every other model in this order (the 2nd, 4th, ...; the model on
    all rows too), for an ensemble of two networks, whose errors differ more than two copies of one.
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
        parts.append(Part(ALL_ROWS, seed + len(parts), np.arange(row_count), None))
    check_models(len(parts), seed, alternate)
    return [replace(part, network=alternate) if alternate and index % 2 == 1 else part
            for index, part in enumerate(parts)]


def model_count(folds: int, members: int, final_model: bool) -> int:
    """The models plan_parts plans: members for each fold (a holdout split: folds 1), and the one on all rows."""
    return max(folds, 1) * members + int(final_model)


def check_models(models: int, seed: int, alternate: tuple[str, float, bool] | None) -> None:
    """Refuse a seed too high for the run's models (seed, seed + 1, ...), and --alternate where no second model
    would be that network (a run of one model, e.g. `quick`): the same model as without it, trained as a new run."""
    config.check_seed(seed, models=models)
    if alternate and models == 1:
        raise PipelineError(f"--alternate {alternate[0]}: a run of one model has no second model to be that network;"
                            " add --final-model or --members 2 (or --alternate none)")


def work_units(summaries: list[PartSummary], epochs: int, test_images: int, views: int, pseudo_label: bool,
               recalibrate: bool = False) -> dict:
    """The run's work in units (pipeline.core.config.UNIT_IMAGES images through one training epoch of the default
    CNN): training (each part's own epochs and images an epoch, when --rare-looks changed them), plus forward
    passes at a third of a training pass each (every epoch's validation, the out-of-fold and test predictions, the
    pseudo-labelling pass, --recalibrate's passes, counted at their bound), each scaled by its network's cost. A
    model that --pseudo-tune went on training predicts no test images: its tuned successor does."""

    def units(images, summary):
        return images * summary.multiply_adds / config.REFERENCE_MULTIPLY_ADDS / config.UNIT_IMAGES

    training = sum(units(summary.images_an_epoch * (summary.epochs or epochs), summary) for summary in summaries)
    measured = [summary for summary in summaries if summary.validation_images is not None]
    forward = sum(units(summary.validation_images * ((summary.epochs or epochs) + views), summary)
                  for summary in measured)
    replaced = replaced_by_tuning(summaries)
    forward += sum(units(test_images * views, summary) for summary in summaries if summary.name not in replaced)
    if pseudo_label:  # without test-time augmentation (pipeline.stages.train), by the measured models before tuning
        forward += sum(units(test_images, summary) for summary in measured if not summary.tuned_from)
    if recalibrate:
        probes = config.BATCH_NORM_LAYERS_AT_MOST
        forward += sum(units(min(summary.train_images, config.RECALIBRATION_IMAGES) * probes, summary)
                       for summary in summaries if summary.architecture not in config.WITHOUT_BATCH_NORM)
    return {"units": float(f"{training + forward / 3:.3g}"), "training_units": float(f"{training:.3g}"),
            "prediction_units": float(f"{forward / 3:.3g}")}


def replaced_by_tuning(summaries: list[PartSummary]) -> set[str]:
    """The names of the models that --pseudo-tune went on from: their tuned successors predict and are measured."""
    return {summary.tuned_from for summary in summaries if summary.tuned_from}


def images_after_measured(measured: list[Part], epochs: int, pseudo_tune: int, train_rows: int,
                          learnt_test_images: int, learners: int) -> tuple[int, int]:
    """For the time left: the images the models after the measured ones train on, when those learn their test
    images (--pseudo-label), as (after the measured models, after their tuned successors). A tuned model goes on
    pseudo_tune epochs with its rows and the test images; a model on all rows sees as many images as without them.
    Before the labelling, every test image counts: the most there can be."""
    extended = train_rows + learnt_test_images
    learner_images = learners * epochs_for_same_images(epochs, train_rows, extended) * extended
    tuned_images = sum(pseudo_tune * (len(part.train_rows) + learnt_test_images) for part in measured)
    return tuned_images + learner_images, learner_images


def estimate_kind(split: dict) -> str:
    return "cross-validation" if "fold" in split else "holdout"


# --pseudo-label: a test image joins the all-rows model's training data, with the label the other models gave it,
# when their averaged probability for it is at least this. 0.9 labels about 99 % of the test images, one or two in a
# thousand wrongly; on five folds of new hands its learner made 182 errors of 42,000 where 0.995's made 196. Here,
# in a module of the train stage's code, so that a change of it reruns the stage instead of restoring a cached result.
PSEUDO_LABEL_CONFIDENCE = 0.9


def confident_labels(probabilities: np.ndarray, confidence: float = PSEUDO_LABEL_CONFIDENCE):
    """(rows, labels) of the predictions whose top probability is at least confidence."""
    rows = np.flatnonzero(probabilities.max(axis=1) >= confidence)
    return rows, probabilities[rows].argmax(axis=1)
