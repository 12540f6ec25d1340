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
