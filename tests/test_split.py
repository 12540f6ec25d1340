"""split: stratified to within one image per class, seeded, and refusing what cannot be split."""

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.split import stratified_split


def unbalanced_labels():
    return np.repeat(np.arange(10), [40, 55, 61, 33, 47, 50, 52, 49, 38, 75])


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.33])
def test_class_shares_equal_to_within_one_image(fraction):
    labels = unbalanced_labels()
    train_indices, val_indices = stratified_split(labels, fraction, seed=3)
    assert len(np.intersect1d(train_indices, val_indices)) == 0
    assert len(train_indices) + len(val_indices) == len(labels)
    val_counts = np.bincount(labels[val_indices], minlength=10)
    ideal = np.bincount(labels) * len(val_indices) / len(labels)
    assert np.all(np.abs(val_counts - ideal) <= 1)


def test_same_seed_same_split_other_seed_other_split():
    labels = unbalanced_labels()
    first = stratified_split(labels, 0.1, seed=1)
    again = stratified_split(labels, 0.1, seed=1)
    other = stratified_split(labels, 0.1, seed=2)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(PipelineError, match="strictly between 0 and 1"):
        stratified_split(unbalanced_labels(), fraction, seed=0)


def test_too_few_images_per_class_is_refused():
    with pytest.raises(PipelineError, match="at least one image on each side"):
        stratified_split(np.arange(10), 0.5, seed=0)


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_folds_cover_every_row_once_with_even_classes(folds):
    from pipeline.split import stratified_folds

    labels = unbalanced_labels()
    assignment = stratified_folds(labels, folds, seed=4)
    assert assignment.shape == labels.shape and set(assignment.tolist()) == set(range(folds))
    for digit in range(10):
        per_fold = np.bincount(assignment[labels == digit], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(assignment, stratified_folds(labels, folds, seed=4))
    assert not np.array_equal(assignment, stratified_folds(labels, folds, seed=5))


def test_folds_refuse_too_few_images_of_a_class():
    from pipeline.split import stratified_folds

    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(PipelineError, match="every class needs at least 3 images, the rarest has 2"):
        stratified_folds(labels, 3, seed=0)
    with pytest.raises(PipelineError, match="--folds 1"):
        stratified_folds(labels, 1, seed=0)
