"""Stage 3, split: a seeded, stratified holdout split, or K cross-validation folds, of the train images.

One fold (the default's holdout): a share of the rows is kept aside and only measured on.
K folds: every row lands in one fold; fold k's model trains on the others and predicts fold k,
so the run's estimate covers every row (pipeline.stages.train, pipeline.core.estimate).
"""

import numpy as np

from pipeline.core.cache import atomic_path
from pipeline.core.config import check_seed
from pipeline.core.console import count
from pipeline.core.errors import PipelineError
from pipeline.core.stage import Definition, require


def check_options(val_fraction: float, folds: int) -> None:
    """--folds, and --val-fraction for a holdout split, on their own: the CLI checks them before any stage runs."""
    if folds < 1:
        raise PipelineError(f"--folds {folds}: expected 1 (a holdout split) or more (cross-validation)")
    if folds == 1 and not 0.0 < val_fraction < 1.0:
        raise PipelineError(f"--val-fraction {val_fraction:g}: expected a fraction strictly between 0 and 1")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_indices, val_indices); each class keeps its share in both, to within one image."""
    from sklearn.model_selection import train_test_split

    check_options(val_fraction, 1)
    check_seed(seed)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    validation_size = int(np.ceil(val_fraction * len(labels)))
    if present.min() < 2 or validation_size < len(present) or len(labels) - validation_size < len(present):
        raise PipelineError(
            f"cannot make a stratified split of {len(labels)} images with --val-fraction {val_fraction}: "
            f"every class needs at least one image on each side{_rarest(counts) if present.min() < 2 else ''}"
        )
    train_indices, val_indices = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train_indices), np.sort(val_indices)


def _rarest(counts: np.ndarray) -> str:
    """', the rarest is digit 7, with 1 image': which class is short."""
    digit = int(np.argmin(np.where(counts > 0, counts, np.iinfo(counts.dtype).max)))
    return f", the rarest is digit {digit}, with {count(int(counts[digit]), 'image')}"


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every row: each class spread evenly over the folds, seeded.

    Fold k's model trains on the rows of the other folds and predicts fold k, so every row gets
    exactly one prediction from a model that never saw it (the out-of-fold predictions).
    """
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise PipelineError(f"--folds {folds}: expected at least 2 (or 1 for a single holdout split)")
    check_seed(seed)
    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        raise PipelineError(
            f"cannot make {folds} stratified folds of {len(labels)} images: every class needs at least "
            f"{folds} images{_rarest(counts)}"
        )
    assignment = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, fold_indices) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        assignment[fold_indices] = fold
    return assignment


# ----------------------------------------------------------------------------------------- the stage

def define(paths, console, val_fraction: float, seed: int, folds: int = 1):
    """The split stage: the prepared labels in, split.npz out: {train, validation} row indices, or
    {fold}: the fold of every row."""
    require("prepare", "python -m pipeline prepare")
    check_options(val_fraction, folds)

    def work():
        labels = np.load(paths.train_labels)
        if folds == 1:
            train_indices, val_indices = stratified_split(labels, val_fraction, seed)
            arrays = {"train": train_indices, "validation": val_indices}
            extra = {"train_size": len(train_indices), "val_size": len(val_indices), "folds": 1}
        else:
            arrays = {"fold": stratified_folds(labels, folds, seed)}
            extra = {"folds": folds, "fold_sizes": np.bincount(arrays["fold"]).tolist()}
        with atomic_path(paths.split_file) as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, **arrays)
        return [paths.split_file], extra

    def describe(record):
        extra = record["extra"]
        if extra.get("folds", 1) > 1:
            return (f"{extra['folds']} stratified folds of {min(extra['fold_sizes'])}-{max(extra['fold_sizes'])}"
                    f" images, seed {seed}")
        return f"{extra['train_size']} train / {extra['val_size']} validation images, stratified, seed {seed}"

    # The share kept aside means nothing with folds: leave it out so that changing it reruns nothing.
    params = {"folds": folds, "seed": seed, **({"val_fraction": val_fraction} if folds == 1 else {})}
    return Definition("split", params, [paths.train_labels], work, describe)
