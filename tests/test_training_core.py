"""The training core in process, on small arrays: augmentation, the cost of a network, the work of a run,
the plan of parts and pseudo-labels, and one model's fit with checkpoint and exact resume."""

import json
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from pipeline.core import config
from pipeline.core.config import NUM_CLASSES
from pipeline.core.errors import PipelineError
from pipeline.core.records import PartSummary
from pipeline.training import augment, fit, looks, model, plan, prediction, settings


def digit_like_images(count=8, seed=0):
    """Random strokes: a few bright blobs on a black 28x28 background."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28, 1), dtype=np.float32)
    for image in images:
        for row, column in rng.integers(6, 22, size=(6, 2)):
            image[row - 2:row + 2, column - 1:column + 1, 0] = 1.0
    return images


def test_elastic_distortion_repeats_with_its_seed_and_moves_pixels_only_locally():
    images = digit_like_images()
    seed = tf.constant([3, 4], tf.int64)
    distorted = augment.random_elastic(images, seed, alpha=20.0).numpy()
    assert np.array_equal(distorted, augment.random_elastic(images, seed, alpha=20.0).numpy())
    assert not np.array_equal(distorted, augment.random_elastic(images, tf.constant([3, 5], tf.int64), 20.0).numpy())
    assert np.array_equal(augment.random_elastic(images, seed, alpha=0.0).numpy(), images)
    assert distorted.shape == images.shape and distorted.min() >= 0 and distorted.max() <= 1 + 1e-6
    assert not np.allclose(distorted, images, atol=0.05)
    # A smooth field bends strokes; it does not scatter them: the ink's centre stays within 2 pixels.
    grid = np.arange(28, dtype=np.float32)

    def centres(batch):
        ink = batch[..., 0].sum(axis=(1, 2))
        return np.stack([(batch[..., 0].sum(axis=2) * grid).sum(axis=1) / ink,
                         (batch[..., 0].sum(axis=1) * grid).sum(axis=1) / ink], axis=1)

    assert np.abs(centres(distorted) - centres(images)).max() < 2.0


def test_cutout_blanks_one_square_per_image_and_repeats_with_its_seed():
    images = np.ones((64, 28, 28, 1), np.float32)
    seed = tf.constant([5, 6], tf.int64)
    cut = augment.random_cutout(images, seed, 8).numpy()
    assert np.array_equal(cut, augment.random_cutout(images, seed, 8).numpy())
    assert not np.array_equal(cut, augment.random_cutout(images, tf.constant([5, 7], tf.int64), 8).numpy())
    blanked = (cut[..., 0] == 0)
    # One square each: at most 8 x 8 pixels, fewer where it meets an edge, and its rows and columns contiguous.
    counts = blanked.sum(axis=(1, 2))
    assert counts.max() == 64 and 16 <= counts.min() and (counts < 64).any()
    for mask in blanked:
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask.sum() == len(rows) * len(columns) and np.all(np.diff(rows) == 1) and np.all(np.diff(columns) == 1)
    assert np.array_equal(cut[~blanked], images[~blanked])
    # In an epoch it comes after the affine map, on its own stream: the maps' draws stay as they were.
    labels = np.arange(64) % 10
    plain = next(iter(augment.make_training_dataset(images, labels, 64, 1, 0)))[0].numpy()
    with_cutout = next(iter(augment.make_training_dataset(images, labels, 64, 1, 0, cutout=8)))[0].numpy()
    kept = with_cutout != 0
    assert np.array_equal(with_cutout[kept], plain[kept]) and (plain[~kept] > 0).any()
    with pytest.raises(ValueError, match="cutout"):
        augment.make_training_dataset(images, labels, 16, 1, 0, cutout=29)


def test_the_affine_map_is_kerass_public_op_on_the_same_transform():
    images = digit_like_images()
    seed = tf.constant([1, 2], tf.int64)
    shifted = augment.random_affine(images, seed, max_rotation_degrees=0.0, max_zoom=0.0, max_shift=0.0).numpy()
    np.testing.assert_allclose(shifted, images, atol=1e-5)  # no movement: the images themselves
    rotated = augment.random_affine(images, seed).numpy()
    assert np.array_equal(rotated, augment.random_affine(images, seed).numpy()) and not np.allclose(rotated, images)


def test_elastic_and_affine_compose_into_one_resampling():
    images = digit_like_images()
    affine_seed, elastic_seed = tf.constant([1, 2], tf.int64), tf.constant([3, 4], tf.int64)
    # With no displacement, the composed map is the affine map itself: the same draws, the same convention.
    no_field = augment.random_affine_elastic(images, affine_seed, elastic_seed, alpha=0.0).numpy()
    np.testing.assert_allclose(no_field, augment.random_affine(images, affine_seed).numpy(), atol=1e-5)
    composed = augment.random_affine_elastic(images, affine_seed, elastic_seed, alpha=20.0).numpy()
    assert not np.allclose(composed, no_field, atol=0.05)
    # One resampling blurs less than two in turn: more of the strokes' pixels stay nearly full.
    in_turn = augment.random_affine(augment.random_elastic(images, elastic_seed, alpha=20.0), affine_seed).numpy()
    assert (composed > 0.9).sum() > 1.2 * (in_turn > 0.9).sum()


def test_an_epoch_of_data_depends_on_seed_and_epoch_and_elastic_leaves_the_affine_draws_alone():
    images, labels = digit_like_images(40), np.arange(40) % NUM_CLASSES

    def epoch(seed, number, elastic=0.0, strength=1.0):
        dataset = augment.make_training_dataset(images, labels, 16, seed, number, strength=strength, elastic=elastic)
        return [batch.numpy() for batch, _ in dataset]

    first = epoch(1, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, epoch(1, 0)))
    assert not np.array_equal(first[0], epoch(1, 1)[0])
    with_elastic = epoch(1, 0, elastic=20.0)
    assert [len(batch) for batch in with_elastic] == [16, 16, 8]
    assert not np.array_equal(first[0], with_elastic[0])
    elastic_only = epoch(1, 0, elastic=20.0, strength=0.0)
    assert not np.array_equal(elastic_only[0], with_elastic[0])
    with pytest.raises(ValueError, match="elastic"):
        augment.make_training_dataset(images, labels, 16, 1, 0, elastic=-1.0)


def test_multiply_adds_count_convolutions_and_dense_layers():
    import keras

    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Conv2D(8, 3)(inputs)  # 26 x 26 outputs, 9 weights each, 8 filters
    hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(10)(hidden)
    assert model.multiply_adds(keras.Model(inputs, outputs)) == 26 * 26 * 9 * 8 + 26 * 26 * 8 * 10
    # The unit of work is defined by the default CNN: the constant must follow the network.
    assert model.multiply_adds(model.build_network("cnn")) == config.REFERENCE_MULTIPLY_ADDS
    assert model.multiply_adds(model.build_network("cnn", width=1.5)) > 2 * config.REFERENCE_MULTIPLY_ADDS


def test_the_default_runs_work_in_units():
    cost = config.REFERENCE_MULTIPLY_ADDS
    holdout = PartSummary("holdout", train_images=37_800, validation_images=4_200, multiply_adds=cost)
    all_rows = PartSummary("all-rows", train_images=42_000, multiply_adds=cost)
    work = plan.work_units([holdout, all_rows], epochs=18, test_images=28_000, views=1, pseudo_label=False)
    assert work["training_units"] == pytest.approx(18 * (37_800 + 42_000) / 42_000, rel=1e-3)  # 34.2
    expected_forward = (4_200 * 19 + 2 * 28_000) / 3 / 42_000
    assert work["prediction_units"] == pytest.approx(expected_forward, rel=1e-2)
    assert work["units"] == pytest.approx(work["training_units"] + work["prediction_units"], rel=1e-2)
    # --pseudo-label: the measured model predicts the test images once more, without TTA's views
    with_tta = plan.work_units([holdout, all_rows], 18, 28_000, views=5, pseudo_label=False)
    pseudo_labelled = plan.work_units([holdout, all_rows], 18, 28_000, views=5, pseudo_label=True)
    assert pseudo_labelled["prediction_units"] - with_tta["prediction_units"] == pytest.approx(  # 3 digits kept
        28_000 / 3 / 42_000, abs=0.005)
    twice_as_costly = [replace(part, multiply_adds=2 * cost) for part in (holdout, all_rows)]
    assert plan.work_units(twice_as_costly, 18, 28_000, 1, False)["training_units"] == pytest.approx(
        2 * work["training_units"], rel=1e-2)
    # --pseudo-tune 3: the measured model goes on for 3 epochs with 27,000 test images; it labels them, and its
    # successor, not it, predicts the test rows
    tuned = PartSummary("holdout-tuned", train_images=37_800 + 27_000, validation_images=4_200, multiply_adds=cost,
                        epochs=3, tuned_from="holdout")
    going_on = plan.work_units([holdout, tuned, all_rows], 18, 28_000, views=1, pseudo_label=True)
    assert going_on["training_units"] - work["training_units"] == pytest.approx(3 * 64_800 / 42_000, abs=0.05)
    assert going_on["prediction_units"] - work["prediction_units"] == pytest.approx(  # its checks; the labelling
        (4_200 * (3 + 1) + 28_000) / 3 / 42_000, abs=0.01)


# Issue 17's budgets at full size (42,000 train rows, 28,000 test rows), in units of work.
WORK_BUDGETS = {"default": 40, "best": 240}


def work_at_full_size(values: dict) -> float:
    """The units of a run of these resolved preset values at full size, at the bounds of what the data decide."""
    training = settings.training_config(values)
    rows = np.arange(42_000)
    kept_aside = round(len(rows) * values["val_fraction"])
    split = ({"fold": rows % values["folds"]} if values["folds"] > 1
             else {"train": rows[kept_aside:], "validation": rows[:kept_aside]})
    parts = plan.plan_parts(split, len(rows), training.members, training.seed, training.final_model,
                            training.alternate_network())
    summaries = []
    for part in parts:  # each network's real cost, from the network the run would build
        architecture, width, deskew = part.network or (training.architecture, training.width, training.deskew)
        network = model.build_network(architecture, width=width, deskew=deskew)
        summary = PartSummary(part.name, train_images=len(part.train_rows), multiply_adds=model.multiply_adds(
            network), validation_images=None if part.validation_rows is None else len(part.validation_rows))
        if training.pseudo_label and part.validation_rows is None:  # up to every test image, no rare looks
            images_an_epoch, epochs = looks.most_images_seen(training.epochs, len(rows), 28_000)
            summary = replace(summary, train_images=images_an_epoch, epochs=epochs)
        elif training.rare_looks:  # the copies depend on the rows' clusters: the most any clusters can give
            images_an_epoch, epochs = looks.most_images_seen(training.epochs, len(part.train_rows),
                                                             len(part.train_rows) * training.rare_looks)
            summary = replace(summary, repeated_images=images_an_epoch - len(part.train_rows), epochs=epochs)
        summaries.append(summary)
        if training.pseudo_tune and part.validation_rows is not None:  # goes on with up to every test image
            summaries.append(replace(summary, name=f"{part.name}-tuned", train_images=len(part.train_rows) + 28_000,
                                     repeated_images=None, epochs=training.pseudo_tune, tuned_from=part.name))
    views = len(prediction.TTA_SHIFTS) if training.tta else 1
    return plan.work_units(summaries, training.epochs, 28_000, views, training.pseudo_label,
                           training.recalibrate)["units"]


@pytest.mark.parametrize("preset", sorted(WORK_BUDGETS))
def test_each_preset_stays_within_its_work_budget_at_full_size(preset):
    units = work_at_full_size(settings.resolve_preset(preset))
    # the lower bound: a count that lost a network's cost or a pass would pass the upper one alone
    assert 0.8 * WORK_BUDGETS[preset] < units <= WORK_BUDGETS[preset]


def test_pseudo_tune_would_take_default_past_its_budget():
    """Why --pseudo-tune is off in `default`: its holdout model going on 3 epochs with up to 28,000 test images."""
    plain = work_at_full_size(settings.resolve_preset("default"))
    tuned = work_at_full_size(settings.resolve_preset("default", pseudo_tune=3))
    assert tuned - plain == pytest.approx(3 * (37_800 + 28_000) / 42_000 + 4_200 * 3 / 3 / 42_000, abs=0.1)
    assert tuned > WORK_BUDGETS["default"]


def test_plan_of_parts_gives_each_model_its_rows_and_seed():
    fold_of_row = np.array([0, 1, 2] * 4)
    parts = plan.plan_parts({"fold": fold_of_row}, 12, members=1, seed=10, final_model=True)
    assert [part.name for part in parts] == ["fold-0", "fold-1", "fold-2", "all-rows"]
    assert [part.seed for part in parts] == [10, 11, 12, 13]
    for fold, part in enumerate(parts[:3]):
        assert set(part.validation_rows) == set(np.flatnonzero(fold_of_row == fold))
        assert not set(part.train_rows) & set(part.validation_rows)
    assert parts[3].validation_rows is None and len(parts[3].train_rows) == 12


def test_alternate_network_trains_every_other_model_of_the_run():
    fold_of_row = np.array([0, 1, 2, 3, 4] * 3)
    parts = plan.plan_parts({"fold": fold_of_row}, 15, members=1, seed=10, final_model=True,
                            alternate=("resnet", 0.9, False))
    resnet = ("resnet", 0.9, False)
    assert [part.network for part in parts] == [None, resnet, None, resnet, None, resnet]
    assert [part.seed for part in parts] == list(range(10, 16))
    holdout = {"train": np.arange(10), "validation": np.arange(10, 15)}
    default = plan.plan_parts(holdout, 15, members=1, seed=0, final_model=True, alternate=("cnn", 1.0, True))
    assert [(part.name, part.network) for part in default] == [("member-0", None), ("all-rows", ("cnn", 1.0, True))]
    # one model: nothing to alternate (test_an_alternate_network_needs_a_second_model)


def test_confident_labels_keep_only_sure_predictions():
    probabilities = np.full((3, NUM_CLASSES), 0.0, dtype=np.float32)
    probabilities[0, 4] = 0.999
    probabilities[1, 2], probabilities[1, 3] = 0.6, 0.4
    probabilities[2, 7] = plan.PSEUDO_LABEL_CONFIDENCE  # at the threshold: kept
    rows, labels = plan.confident_labels(probabilities)
    assert rows.tolist() == [0, 2] and labels.tolist() == [4, 7]
    probabilities[2, 7] = plan.PSEUDO_LABEL_CONFIDENCE - 0.01  # just under it: left out
    assert plan.confident_labels(probabilities)[0].tolist() == [0]
    assert plan.confident_labels(probabilities, confidence=0.9995)[0].tolist() == []  # a stricter one asked for


def _plus_max_min(images):
    """Each pixel's max and min over itself and its four neighbours (0 outside), in numpy."""
    padded = np.pad(images[..., 0], ((0, 0), (1, 1), (1, 1)))
    around = np.stack([images[..., 0], padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                       padded[:, 1:-1, 2:]])
    return around.max(axis=0)[..., None], around.min(axis=0)[..., None]


def test_thickness_blends_each_digit_towards_its_dilation_or_erosion_and_repeats_with_its_seed():
    images = digit_like_images(64, seed=3)
    seed = tf.constant([5, 6], tf.int64)
    changed = augment.random_thickness(images, seed, 0.5).numpy()
    assert np.array_equal(changed, augment.random_thickness(images, seed, 0.5).numpy())
    assert not np.array_equal(changed, augment.random_thickness(images, tf.constant([5, 7], tf.int64), 0.5).numpy())
    thick, thin = _plus_max_min(images)
    # Every image lies a fraction of at most 0.5 of the way to one of the two, the same fraction at every pixel.
    towards_thick = np.where(thick > images, (changed - images) / np.maximum(thick - images, 1e-9), np.nan)
    towards_thin = np.where(thin < images, (images - changed) / np.maximum(images - thin, 1e-9), np.nan)
    thickened = 0
    for image in range(len(images)):
        up = towards_thick[image][~np.isnan(towards_thick[image])]
        down = towards_thin[image][~np.isnan(towards_thin[image])]
        if (up > 1e-6).any():
            thickened += 1
            assert np.allclose(up, up[0], atol=1e-4) and 0 < up[0] <= 0.5 and np.allclose(down, 0, atol=1e-6)
        else:
            assert np.allclose(down, down[0], atol=1e-4) and 0 <= down[0] <= 0.5
    assert 10 < thickened < 54  # both ways, about half each
    ink, changed_ink = images.sum(axis=(1, 2, 3)), changed.sum(axis=(1, 2, 3))
    assert (changed_ink > ink * 1.05).any() and (changed_ink < ink * 0.95).any()
    blank = np.zeros((4, 28, 28, 1), np.float32)
    assert not augment.random_thickness(blank, seed, 1.0).numpy().any()
    # In an epoch it comes after the affine map, on its own stream: each image between the plain epoch's
    # image's erosion and dilation.
    labels = np.arange(64) % 10
    plain = next(iter(augment.make_training_dataset(images, labels, 64, 1, 0)))[0].numpy()
    with_thickness = next(iter(augment.make_training_dataset(images, labels, 64, 1, 0, thickness=0.5)))[0].numpy()
    thick, thin = _plus_max_min(plain)
    assert not np.array_equal(with_thickness, plain)
    assert (with_thickness <= thick + 1e-6).all() and (with_thickness >= thin - 1e-6).all()
    with pytest.raises(ValueError, match="thickness"):
        augment.make_training_dataset(images, labels, 16, 1, 0, thickness=1.5)


def test_mixup_blends_each_image_and_its_label_with_the_one_before_by_one_weight_of_at_least_half():
    images = digit_like_images(64, seed=4)
    labels = np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(64) % NUM_CLASSES]
    seed = tf.constant([8, 9], tf.int64)
    mixed, mixed_labels = (t.numpy() for t in augment.random_mixup(images, labels, seed, 0.2))
    again = augment.random_mixup(images, labels, seed, 0.2)[0].numpy()
    assert np.array_equal(mixed, again)
    assert not np.array_equal(mixed, augment.random_mixup(images, labels, tf.constant([8, 10], tf.int64), 0.2)[0])
    # Each label's own digit carries the weight w, the digit before it 1 - w; the image is blended alike.
    weight = mixed_labels[np.arange(64), np.arange(64) % NUM_CLASSES]
    assert (weight >= 0.5).all() and (weight <= 1).all() and (weight < 0.99).any()
    assert np.allclose(mixed_labels.sum(axis=1), 1, atol=1e-6)
    assert (mixed_labels.argmax(axis=1) == np.arange(64) % NUM_CLASSES)[weight > 0.5 + 1e-6].all()
    before = np.roll(images, 1, axis=0)
    assert np.allclose(mixed, weight[:, None, None, None] * images + (1 - weight[:, None, None, None]) * before,
                       atol=1e-5)
    # In an epoch it comes last, on its own stream: the plain epoch's images, blended in pairs.
    digits = np.arange(64) % NUM_CLASSES
    plain_images, plain_labels = (t.numpy() for t in
                                  next(iter(augment.make_training_dataset(images, digits, 64, 1, 0))))
    with_mixup, with_labels = (t.numpy() for t in
                               next(iter(augment.make_training_dataset(images, digits, 64, 1, 0, mixup=0.2))))
    own = (with_labels * plain_labels).sum(axis=1)
    assert (own >= 0.5).all() and (own < 0.99).any()
    # (where the two digits are the same the label cannot tell the weight)
    two_digits = plain_labels.argmax(axis=1) != np.roll(plain_labels, 1, axis=0).argmax(axis=1)
    expected = own[:, None, None, None] * plain_images + (1 - own[:, None, None, None]) * np.roll(plain_images, 1, 0)
    assert two_digits.sum() > 40 and np.allclose(with_mixup[two_digits], expected[two_digits], atol=1e-5)
    with pytest.raises(ValueError, match="mixup"):
        augment.make_training_dataset(images, digits, 16, 1, 0, mixup=1.5)


def test_shear_slants_each_image_by_its_own_factor_and_leaves_the_other_draws_alone():
    bars = np.zeros((64, 28, 28, 1), np.float32)
    bars[:, 4:24, 13:15] = 1.0  # an upright stroke, two pixels wide
    seed = tf.constant([3, 4], tf.int64)
    slanted = augment.random_affine(bars, seed, 0.0, 0.0, 0.0, max_shear=0.3).numpy()[..., 0]
    assert np.array_equal(slanted, augment.random_affine(bars, seed, 0.0, 0.0, 0.0, max_shear=0.3).numpy()[..., 0])
    # Each row's ink centre moves in proportion to the row's height: one slope an image, within +-0.3.
    rows = np.arange(6, 22)
    columns = np.arange(28)
    slopes = []
    for image in slanted:
        centres = (image[rows] * columns).sum(axis=1) / image[rows].sum(axis=1)
        slope, intercept = np.polyfit(rows, centres, 1)
        assert np.abs(centres - (slope * rows + intercept)).max() < 0.05
        assert abs(intercept + slope * 13.5 - 13.5) < 0.05  # about the centre
        slopes.append(slope)
    slopes = np.array(slopes)
    assert (np.abs(slopes) <= 0.3 + 1e-3).all() and (slopes < -0.1).any() and (slopes > 0.1).any()
    # Its own stream: with rotation, zoom and shift as well, an image without ink above and below the
    # centre row is as without shear, which a shared draw would not leave.
    flat = np.zeros((64, 28, 28, 1), np.float32)
    flat[:, 13:15, 6:22] = 1.0
    with_shear = augment.random_affine(flat, seed, max_shear=0.3).numpy()
    without = augment.random_affine(flat, seed).numpy()
    assert np.abs(with_shear - without).max() < 0.35 and not np.allclose(with_shear, without)
    images, labels = digit_like_images(16, seed=2), np.arange(16) % NUM_CLASSES
    plain = next(iter(augment.make_training_dataset(images, labels, 16, 1, 0)))[0].numpy()
    assert not np.allclose(plain, next(iter(augment.make_training_dataset(images, labels, 16, 1, 0, shear=0.2)))[0])
    with pytest.raises(ValueError, match="shear"):
        augment.make_training_dataset(images, labels, 16, 1, 0, shear=1.5)


def test_a_shear_above_one_is_refused_in_one_sentence():
    with pytest.raises(PipelineError, match="--shear 1.5: expected 0 .none. to 1 "):
        settings.training_config(settings.resolve_preset("quick", shear=1.5))


def test_a_cutout_larger_than_the_image_is_refused_in_one_sentence():
    with pytest.raises(PipelineError, match="--cutout 29: expected 0 .none. to 28 pixels"):
        settings.training_config(settings.resolve_preset("quick", cutout=29))


def test_a_thickness_above_one_is_refused_in_one_sentence():
    with pytest.raises(PipelineError, match="--thickness 1.5: expected 0 .none. to 1 "):
        settings.training_config(settings.resolve_preset("quick", thickness=1.5))


def test_a_mixup_above_one_is_refused_in_one_sentence():
    with pytest.raises(PipelineError, match="--mixup 2: expected 0 .none. to 1 "):
        settings.training_config(settings.resolve_preset("quick", mixup=2.0))


def test_alternate_deskew_without_an_alternate_network_is_refused_in_one_sentence():
    with pytest.raises(PipelineError, match="--alternate-deskew: deskews the --alternate network's images; name"):
        settings.training_config(settings.resolve_preset("quick", alternate_deskew=True))


def test_a_weight_decay_of_one_or_more_is_refused_in_one_sentence():
    with pytest.raises(PipelineError, match="--weight-decay 1: expected 0 .none. to below 1"):
        settings.training_config(settings.resolve_preset("quick", weight_decay=1.0))


def test_one_fit_stopped_after_an_epoch_resumes_to_the_same_weights(tmp_path):
    images, labels = digit_like_images(64, seed=1), np.arange(64) % NUM_CLASSES
    values = settings.resolve_preset("quick", epochs=2, elastic=10.0, cutout=4, thickness=0.5, mixup=0.2,
                                     shear=0.2, weight_decay=0.05)
    training = settings.training_config(values)
    strategy = settings.configure_tensorflow(training)
    lines = []
    straight, state = fit.fit_one_model(images, labels, images[:16], labels[:16], training, 5,
                                          tmp_path / "straight", strategy, log=lines.append)
    assert state["completed_epochs"] == 2 and len(lines) == 2 and "epoch 2/2" in lines[-1]

    class Stopped(Exception):
        pass

    def stop_after_the_first_epoch(line):  # called once the epoch's checkpoint is written, as a kill would find it
        lines.append(line)
        if line.startswith("epoch 1/2"):
            raise Stopped

    with pytest.raises(Stopped):
        fit.fit_one_model(images, labels, images[:16], labels[:16], training, 5, tmp_path / "resumed", strategy,
                            log=stop_after_the_first_epoch)
    resumed, _ = fit.fit_one_model(images, labels, images[:16], labels[:16], training, 5, tmp_path / "resumed",
                                     strategy, log=lines.append)
    assert any(line.startswith("resuming from epoch 1 of 2") for line in lines)
    for expected, actual in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_a_fit_whose_loss_becomes_nan_stops_at_that_batch_in_one_line_and_keeps_the_epochs_before(tmp_path):
    """It trained every epoch on, with NaN weights, and the run's estimate came out at chance."""
    images, labels = digit_like_images(64, seed=1), np.arange(64) % NUM_CLASSES
    images[5] = 3e38  # a huge loss in epoch 1, weights and loss NaN in epoch 2 (ReLU would turn a NaN pixel into 0)
    training = settings.training_config(settings.resolve_preset("quick", epochs=3, batch_size=16))  # 4 batches
    strategy = settings.configure_tensorflow(training)
    batches, lines, real_ticker = [], [], fit.batch_ticker

    def counting_ticker(*arguments):
        ticker = real_ticker(*arguments)
        count_too = ticker.on_train_batch_end
        ticker.on_train_batch_end = lambda batch, logs=None: (batches.append(batch), count_too(batch, logs))
        return ticker

    fit.batch_ticker = counting_ticker
    try:
        with pytest.raises(PipelineError, match=r"^model diverging: the loss became nan in epoch 2 of 3, and training"
                                                r" stopped there: the peak learning rate 0.002 is likely too high"):
            fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "diverging", strategy,
                              log=lines.append)
    finally:
        fit.batch_ticker = real_ticker
    assert len(lines) == 1 and lines[0].startswith("epoch 1/3: loss ")
    assert batches[:4] == [0, 1, 2, 3] and 5 <= len(batches) < 8  # epoch 2 stopped at its NaN batch
    assert fit._Checkpoint(tmp_path / "diverging").load_state()["completed_epochs"] == 1  # epoch 1 stays


@pytest.mark.parametrize("damage", ["[1]", '{"model_file": "epoch-1.keras"}', b"\xff\xfe\x00", "truncated model"])
def test_a_damaged_checkpoint_trains_its_model_again_from_the_start(tmp_path, damage):
    """A state.json of another shape gave a traceback (AttributeError, KeyError, UnicodeDecodeError), and a truncated
    checkpoint model an error at every rerun, with nothing to say what to remove."""
    images, labels = digit_like_images(32, seed=1), np.arange(32) % NUM_CLASSES
    training = settings.training_config(settings.resolve_preset("quick", epochs=2, batch_size=16))
    strategy = settings.configure_tensorflow(training)
    folder, lines = tmp_path / "model", []
    fit.fit_one_model(images, labels, None, None, replace(training, epochs=1), 5, folder, strategy, log=lines.append)
    state_path = folder / "state.json"
    if damage == "truncated model":
        model_file = folder / json.loads(state_path.read_text())["model_file"]
        model_file.write_bytes(model_file.read_bytes()[:3000])
    elif isinstance(damage, bytes):
        state_path.write_bytes(damage)
    else:
        state_path.write_text(damage)
    lines.clear()
    _, state = fit.fit_one_model(images, labels, None, None, training, 5, folder, strategy, log=lines.append)
    assert state["completed_epochs"] == 2 and len(state["history"]["loss"]) == 2  # both epochs trained here
    assert not any(line.startswith("resuming") for line in lines)
    if damage == "truncated model":
        assert "cannot load this model safely" in lines[0] and lines[0].endswith(
            ": training this model again from its first epoch")


def saved_quick_model(path):
    """(images, labels, training, strategy, model): a quick model of one epoch on 64 digits, saved at path."""
    images, labels = digit_like_images(64, seed=1), np.arange(64) % NUM_CLASSES
    training = settings.training_config(settings.resolve_preset("quick", epochs=1))
    strategy = settings.configure_tensorflow(training)
    first, _ = fit.fit_one_model(images, labels, None, None, training, 5, path.parent / "first", strategy,
                                 log=lambda line: None)
    fit.save_model(first, path)
    return images, labels, training, strategy, first


def first_kernel(network):
    return next(weight for weight in network.get_weights() if weight.ndim == 4)


def test_a_fit_that_starts_from_a_saved_model_goes_on_from_its_weights_with_a_fresh_schedule(tmp_path):
    images, labels, training, strategy, first = saved_quick_model(tmp_path / "first.keras")
    # A peak learning rate too small to move a weight: the model that goes on keeps the saved one's weights
    still = replace(training, learning_rate=1e-12, batch_size=16)  # 4 steps an epoch
    went_on, state = fit.fit_one_model(images, labels, None, None, still, 6, tmp_path / "went-on", strategy,
                                       log=lambda line: None, start_from=tmp_path / "first.keras")
    fresh, _ = fit.fit_one_model(images, labels, None, None, still, 6, tmp_path / "fresh", strategy,
                                 log=lambda line: None)
    np.testing.assert_allclose(first_kernel(went_on), first_kernel(first), atol=1e-6)
    assert not np.allclose(first_kernel(fresh), first_kernel(first), atol=1e-3)
    # Adam afresh, and a schedule of its own: half an epoch (2 steps) up to half the peak, then down to 0
    assert int(went_on.optimizer.iterations) == 4 and state["history"]["learning_rate"] == [0.0]
    schedule = tf.keras.optimizers.schedules.deserialize(went_on.optimizer.get_config()["learning_rate"])
    assert [float(schedule(step)) for step in range(5)] == pytest.approx([5e-14, 2.75e-13, 5e-13, 2.5e-13, 0],
                                                                         abs=1e-15)


def test_a_ray_task_goes_on_from_the_model_bytes_the_driver_sent_not_from_its_path(tmp_path, monkeypatch):
    """--pseudo-tune on Ray: a worker on another node cannot read the driver's run folder. Ray itself is stood in
    for by a loop in this process that pickles each job as Ray would and deletes the file first."""
    import contextlib
    import pickle

    from pipeline.core.console import Console
    from pipeline.training import engine, parts

    images, labels, training, _, first = saved_quick_model(tmp_path / "fold-0.keras")

    def tasks_here(function, jobs, engine, console, shared):
        (tmp_path / "fold-0.keras").unlink()  # gone from the path: only the bytes can give the model
        return [function(pickle.loads(pickle.dumps(job)), **shared) for job in jobs]

    monkeypatch.setattr(parts, "run_tasks", tasks_here)
    monkeypatch.setattr(parts, "ray_session", lambda *args: contextlib.nullcontext())
    monkeypatch.setattr(parts, "_worker_threads", lambda: 1)
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads", lambda threads: None)
    tuned = plan.Part("fold-0-tuned", 6, np.arange(48), np.arange(48, 64), start_from=tmp_path / "fold-0.keras")
    still = replace(training, learning_rate=1e-12)  # too small to move a weight
    [result] = parts.train_parts_on_ray(images, labels, [tuned], still, tmp_path / "checkpoints", (1, 1), None,
                                        engine.Engine("ray", workers=1), Console(quiet=True))
    assert result.summary.tuned_from == "fold-0" and isinstance(result.model, bytes)
    (tmp_path / "went-on.keras").write_bytes(result.model)
    np.testing.assert_allclose(first_kernel(model.load_model(tmp_path / "went-on.keras")), first_kernel(first),
                               atol=1e-6)


def ticker_that_presses_ctrl_c(module, phase: str, label_and_batch: tuple, presses: int, events: list):
    """A stand-in for module.batch_ticker that notes each batch ('LABEL batch B') and the run's end ('PHASE
    ended') in events, and sends this process `presses` SIGINTs after the batch label_and_batch names."""
    import os
    import signal

    real_ticker = module.batch_ticker

    def make(*args, **kwargs):
        ticker = real_ticker(*args, **kwargs)
        batch_end, run_end = getattr(ticker, f"on_{phase}_batch_end"), getattr(ticker, f"on_{phase}_end")

        def on_batch_end(batch, logs=None):
            batch_end(batch, logs)
            events.append(f"{ticker.label.split('/')[0]} batch {batch}")
            if (ticker.label, batch) == label_and_batch:
                for _ in range(presses):
                    os.kill(os.getpid(), signal.SIGINT)

        setattr(ticker, f"on_{phase}_batch_end", on_batch_end)
        setattr(ticker, f"on_{phase}_end", lambda logs=None: (events.append(f"{phase} ended"), run_end(logs)))
        return ticker
    return make


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_a_fit_stops_it_after_the_batch_and_keeps_only_completed_epochs(tmp_path, monkeypatch, presses):
    """One Ctrl-C lets Keras end fit after the running batch (on_train_end runs), then KeyboardInterrupt;
    a second one raises at once. Either way the half epoch is not checkpointed and Python's handler is back."""
    import signal

    images, labels = digit_like_images(64, seed=1), np.arange(64) % NUM_CLASSES
    training = replace(settings.training_config(settings.resolve_preset("quick", epochs=3)), batch_size=16)
    strategy = settings.configure_tensorflow(training)
    events = []
    monkeypatch.setattr(fit, "batch_ticker", ticker_that_presses_ctrl_c(fit, "train", ("epoch 2/3", 1), presses,
                                                                         events))
    with pytest.raises(KeyboardInterrupt):
        fit.fit_one_model(images, labels, None, None, training, 5, tmp_path, strategy, log=lambda line: None)
    second_fit = events[events.index("train ended") + 1:]  # fit runs an epoch at a time
    assert second_fit == ["epoch 2 batch 0", "epoch 2 batch 1"] + (["train ended"] if presses == 1 else [])
    assert json.loads((tmp_path / "state.json").read_text())["completed_epochs"] == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_a_prediction_stops_it_after_the_batch_and_uses_no_partial_output(monkeypatch, presses):
    """One Ctrl-C lets Keras end predict after the running batch (on_predict_end runs), then KeyboardInterrupt
    before its partial output is added up or the next view starts; a second one raises at once."""
    import signal

    events = []
    first_pass = "predict: pass 1 of 5"
    monkeypatch.setattr(prediction, "batch_ticker", ticker_that_presses_ctrl_c(prediction, "predict", (first_pass, 1),
                                                                                presses, events))
    with pytest.raises(KeyboardInterrupt):
        prediction.predict_probabilities([model.build_network("cnn")], digit_like_images(64, seed=3), batch_size=8,
                                         tta=True, log=lambda line: None)
    # 2 of the pass's 8 batches, and no second view
    assert events == [f"{first_pass} batch 0", f"{first_pass} batch 1"] + (["predict ended"] if presses == 1 else [])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_weight_average_ends_the_fit_and_resumes_exactly_from_its_checkpoint(tmp_path):
    images, labels = digit_like_images(64, seed=2), np.arange(64) % NUM_CLASSES
    training = settings.training_config(settings.resolve_preset("quick", epochs=2, ema=0.9))
    plain_training = settings.training_config(settings.resolve_preset("quick", epochs=2))
    strategy = settings.configure_tensorflow(training)
    plain, _ = fit.fit_one_model(images, labels, None, None, plain_training, 5, tmp_path / "plain", strategy,
                                 log=lambda line: None)
    straight, state = fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "straight", strategy,
                                        log=lambda line: None)
    # Same seed and batches: only the swap of the averaged weights at the end tells the two apart.
    assert max(np.abs(a - b).max() for a, b in zip(plain.get_weights(), straight.get_weights())) > 1e-4
    assert "average_file" not in state  # the last checkpoint's model holds the average itself

    class Stopped(Exception):
        pass

    def stop_after_the_first_epoch(line):
        if line.startswith("epoch 1/2"):
            assert sorted(path.name for path in (tmp_path / "resumed").iterdir()) == [
                "average-1.npz", "epoch-1.keras", "state.json"]
            raise Stopped

    with pytest.raises(Stopped):
        fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "resumed", strategy,
                          log=stop_after_the_first_epoch)
    resumed, _ = fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "resumed", strategy,
                                   log=lambda line: None)
    for expected, actual in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    # A finished fit loads as it ended: the averaged weights.
    again, _ = fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "resumed", strategy,
                                 log=lambda line: None)
    for expected, actual in zip(straight.get_weights(), again.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def batch_norm_layers(network):
    return [layer for layer in network.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]


def test_no_network_has_more_batch_norm_layers_than_the_work_counts():
    for architecture in config.ARCHITECTURES:
        assert len(batch_norm_layers(model.build_network(architecture))) <= config.BATCH_NORM_LAYERS_AT_MOST
    assert len(batch_norm_layers(model.build_network("cnn"))) == config.BATCH_NORM_LAYERS_AT_MOST  # the bound is tight


def test_the_networks_listed_without_dropout_or_batch_norm_are_the_ones_built_without():
    """settings refuses --dropout and --recalibrate for them by these lists, before Keras is imported."""
    for architecture in config.ARCHITECTURES:
        network = model.build_network(architecture)
        has_dropout = any(isinstance(layer, tf.keras.layers.Dropout) for layer in network.layers)
        assert has_dropout == (architecture not in config.WITHOUT_DROPOUT), architecture
        assert bool(batch_norm_layers(network)) == (architecture not in config.WITHOUT_BATCH_NORM), architecture


def test_recalibrated_batch_norm_layers_normalise_their_inputs_exactly():
    import keras

    images = digit_like_images(48, seed=3)
    network = model.build_network("cnn", dtype_policy="float32")
    assert model.recalibrate_batch_norm(network, images, batch_size=20) == 7  # batches of 20, 20 and 8
    assert model.recalibrate_batch_norm(model.build_network("small"), images) == 0  # no batch norm: nothing to do
    # Fresh layers scale by 1 and shift by 0, so with the exact statistics every channel of every batch-norm
    # layer's output over these images has mean 0 and variance var / (var + epsilon): nearly 1.
    for layer in batch_norm_layers(network):
        outputs = keras.ops.convert_to_numpy(keras.Model(network.inputs, layer.output)([images], training=False))
        outputs = outputs.astype(np.float64).reshape(-1, outputs.shape[-1])
        variance = layer.moving_variance.numpy()
        assert np.abs(outputs.mean(axis=0)).max() < 1e-3, layer.name
        np.testing.assert_allclose(outputs.var(axis=0), variance / (variance + layer.epsilon), rtol=1e-3)
    # Beyond most_images (RECALIBRATION_IMAGES unless given) it reads that many images, evenly spaced.
    subsampled, spaced, whole = (model.build_network("cnn", dtype_policy="float32") for _ in range(3))
    spaced.set_weights(subsampled.get_weights())
    whole.set_weights(subsampled.get_weights())  # the same weights: only the images read tell the three apart
    model.recalibrate_batch_norm(subsampled, images, most_images=12)
    model.recalibrate_batch_norm(spaced, images[np.linspace(0, 47, 12).astype(int)])
    model.recalibrate_batch_norm(whole, images)
    for expected, actual in zip(spaced.get_weights(), subsampled.get_weights()):
        np.testing.assert_array_equal(actual, expected)
    assert not np.allclose(batch_norm_layers(subsampled)[0].moving_mean.numpy(),
                           batch_norm_layers(whole)[0].moving_mean.numpy())


def test_recalibrate_ends_the_fit_with_new_batch_norm_statistics_only_and_keeps_them_in_its_checkpoint(tmp_path):
    images, labels = digit_like_images(64, seed=4), np.arange(64) % NUM_CLASSES
    values = settings.resolve_preset("quick", architecture="cnn", epochs=1)
    plain_training = settings.training_config(values)
    training = settings.training_config({**values, "recalibrate": True})
    strategy = settings.configure_tensorflow(training)
    plain, _ = fit.fit_one_model(images, labels, None, None, plain_training, 5, tmp_path / "plain", strategy,
                                 log=lambda line: None)
    lines = []
    recalibrated, _ = fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "recalibrated", strategy,
                                        log=lines.append)
    assert lines[1].startswith("recalibrated 7 batch-norm layers' statistics on 64 training images") and len(lines) == 2
    statistics = {id(variable) for layer in batch_norm_layers(recalibrated)
                  for variable in (layer.moving_mean, layer.moving_variance)}
    for variable, plain_variable in zip(recalibrated.weights, plain.weights):
        differs = not np.allclose(variable.numpy(), plain_variable.numpy(), atol=1e-6)
        assert differs == (id(variable) in statistics), variable.path  # same seed, same batches: only those move
    # A finished fit loads as it ended: with the recalibrated statistics.
    again, _ = fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "recalibrated", strategy,
                                 log=lambda line: None)
    for expected, actual in zip(recalibrated.get_weights(), again.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_recalibration_counts_a_forward_pass_per_batch_norm_layer_of_at_most_8192_images():
    cost = config.REFERENCE_MULTIPLY_ADDS
    parts = [PartSummary("holdout", train_images=37_800, validation_images=4_200, multiply_adds=cost),
             PartSummary("all-rows", train_images=5_000, multiply_adds=2 * cost)]
    plain = plan.work_units(parts, epochs=18, test_images=28_000, views=1, pseudo_label=False)
    recalibrated = plan.work_units(parts, epochs=18, test_images=28_000, views=1, pseudo_label=False, recalibrate=True)
    extra = config.BATCH_NORM_LAYERS_AT_MOST * (8_192 + 2 * 5_000) / 3 / 42_000  # about 1 unit
    assert recalibrated["prediction_units"] - plain["prediction_units"] == pytest.approx(extra, abs=0.01)
    assert recalibrated["training_units"] == plain["training_units"]


def test_recalibration_is_counted_only_for_networks_with_batch_norm():
    """Review 58 N: a recalibration that never ran (the mlp's) was counted as work."""
    cost = config.REFERENCE_MULTIPLY_ADDS
    parts = [PartSummary("holdout", train_images=37_800, validation_images=4_200, multiply_adds=cost,
                         architecture="small"),
             PartSummary("all-rows", train_images=42_000, multiply_adds=cost, architecture="cnn")]
    plain = plan.work_units(parts, epochs=18, test_images=28_000, views=1, pseudo_label=False)
    recalibrated = plan.work_units(parts, epochs=18, test_images=28_000, views=1, pseudo_label=False, recalibrate=True)
    extra = config.BATCH_NORM_LAYERS_AT_MOST * 8_192 / 3 / 42_000  # the cnn's alone
    assert recalibrated["prediction_units"] - plain["prediction_units"] == pytest.approx(extra, abs=0.01)


@pytest.mark.parametrize("preset, options, expected, with_one_that_does", [
    ("quick", {"alternate_width": 0.5}, "--alternate-width 0.5: the width of the --alternate network; name that",
     {"alternate": "small"}),
    ("baseline", {"dropout": 0.2}, "--dropout 0.2: the mlp network has no dropout layer; it goes with the other",
     {"architecture": "small"}),
    # review 58 N: it trained the same model as a new run, and counted a recalibration that never ran
    ("baseline", {"recalibrate": True}, "--recalibrate: the mlp network has no batch-norm layer to recalibrate; it"
     " goes with the other networks", {"alternate": "cnn"}),
    ("quick", {"recalibrate": True, "alternate": "mlp"}, "--recalibrate: the mlp and small networks have no"
     " batch-norm layer", {"architecture": "resnet"}),
])
def test_an_option_no_network_of_the_run_uses_is_refused_not_trained_again(preset, options, expected,
                                                                             with_one_that_does):
    """They trained the same models again under a new key, without a word."""
    with pytest.raises(PipelineError, match=f"^{expected}"):
        settings.resolve_preset(preset, **options)
    settings.resolve_preset(preset, **options, **with_one_that_does)  # with a network that uses it: taken


def test_the_presets_own_recalibration_is_off_for_networks_without_batch_norm():
    assert settings.resolve_preset("best")["recalibrate"]
    assert not settings.resolve_preset("best", architecture="small", alternate="mlp")["recalibrate"]
    assert settings.resolve_preset("best", architecture="small")["recalibrate"]  # its resnet has batch norm


@pytest.mark.parametrize("options, expected", [
    ({"epochs": 1001}, "--epochs 1001: expected 1 to 1,000, e.g. 18"),
    ({"epochs": 0}, "--epochs 0: expected 1 to 1,000"),
    ({"members": 101}, "--members 101: expected 1 to 100 models a holdout split or fold, e.g. 2"),
    ({"learning_rate": -1.0}, "--learning-rate -1: expected"),  # review 58 N: -1.0 here, -1 elsewhere
])
def test_counts_have_an_upper_bound_and_numbers_print_as_typed(options, expected):
    """Review 58 N: --members 10**9 gave minutes of silence and a 3.7 GB plan; --epochs 2**31 - 1 was taken."""
    with pytest.raises(PipelineError, match=f"^{expected}"):
        settings.training_config(settings.resolve_preset("quick", **options))


def test_an_alternate_network_needs_a_second_model():
    """Review 58 N: `--alternate resnet` on a run of one model trained the plain model again, as a new run."""
    holdout = {"train": np.arange(8), "validation": np.arange(8, 10)}
    with pytest.raises(PipelineError, match="^--alternate resnet: a run of one model has no second model to be that"
                                            " network; add --final-model or --members 2"):
        plan.plan_parts(holdout, 10, 1, 0, False, ("resnet", 1.0, False))
    parts = plan.plan_parts(holdout, 10, 1, 0, True, ("resnet", 1.0, False))
    assert [part.network for part in parts] == [None, ("resnet", 1.0, False)]
    assert plan.model_count(1, 1, True) == len(parts) and plan.model_count(5, 2, True) == 11


@pytest.mark.parametrize("precision, gpus, flags, slow", [
    ("mixed_float16", [], set(), "--precision mixed_float16: a CPU has no float16 arithmetic"),
    ("mixed_bfloat16", [], {"avx2"}, "--precision mixed_bfloat16: this CPU has no AVX-512 BF16 or AMX"),
    ("mixed_bfloat16", [], {"avx2", "amx_bf16"}, None),
    ("mixed_float16", [(7, 5)], set(), None),
    ("float32", [], set(), None),
])
def test_a_precision_the_device_emulates_is_warned_of(precision, gpus, flags, slow):
    """Review 58 N: --precision mixed_float16 on a CPU trained 8x slower than float32, without a word."""
    from pipeline.training.device import slow_precision

    warning = slow_precision(precision, gpus, flags)
    assert (warning or "").startswith(slow or "") and (warning is None) == (slow is None)
