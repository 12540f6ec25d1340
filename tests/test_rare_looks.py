"""--rare-looks: the look-alike clusters, which rows come again and how often, the epochs cut to the same images
seen, the fit that learns them (and resumes on the very rows it started with), and the work counted for them."""

import numpy as np
import pytest

from pipeline.core import config
from pipeline.core.console import Console
from pipeline.core.errors import PipelineError
from pipeline.core.records import PartSummary
from pipeline.report import page
from pipeline.training import fit, looks, parts, plan, settings

# Two digits, each in three looks: two common ones of 20 rows and a rare one of 8.
LOOK_SIZES = (20, 20, 8)


def images_in_looks(seed=0):
    """(images, labels, look of each row): each look a bright square of its own place, with a little noise."""
    rng = np.random.default_rng(seed)
    images, labels, looks_of_rows = [], [], []
    for digit in range(2):
        for look, size in enumerate(LOOK_SIZES):
            prototype = np.zeros((28, 28, 1), dtype=np.float32)
            row, column = 4 + 8 * look, 4 + 12 * digit
            prototype[row:row + 6, column:column + 6] = 1.0
            images += [prototype + rng.normal(0, 0.05, prototype.shape).astype(np.float32) for _ in range(size)]
            labels += [digit] * size
            looks_of_rows += [digit * 3 + look] * size
    return np.stack(images), np.array(labels), np.array(looks_of_rows)


@pytest.mark.parametrize("extra_at_most, rare_times", [(0, 1), (1, 2), (2, 3), (5, 3)])
def test_rows_of_a_rare_look_come_again_up_to_the_limit(extra_at_most, rare_times):
    images, labels, looks_of_rows = images_in_looks()
    rows = looks.rare_look_rows(images, labels, extra_at_most, clusters_per_digit=3)
    np.testing.assert_array_equal(rows[:len(labels)], np.arange(len(labels)))  # every row once, first, in order
    times = np.bincount(rows, minlength=len(labels))
    rare = np.isin(looks_of_rows, [2, 5])
    # median cluster 20 rows, the rare look's 8: round(20 / 8 - 1) = 2 more times, fewer when the limit is lower
    assert set(times[rare]) == {rare_times} and set(times[~rare]) == {1}


def test_the_clusters_find_the_looks_and_repeat_for_the_same_rows():
    images, labels, looks_of_rows = images_in_looks()
    _, clusters = looks.look_clusters(images, labels, clusters_per_digit=3)
    assert len(set(zip(clusters, looks_of_rows))) == 6 == len(set(clusters))  # one cluster a look
    assert all(cluster // 3 == digit for cluster, digit in zip(clusters, labels))
    np.testing.assert_array_equal(looks.look_clusters(images, labels, clusters_per_digit=3)[1], clusters)


def test_few_rows_give_every_row_its_own_cluster_and_no_copies():
    images, labels, _ = images_in_looks()
    rows = looks.rare_look_rows(images[:12], labels[:12], 2)  # 100 clusters a digit, 12 rows: sizes all 1
    np.testing.assert_array_equal(rows, np.arange(12))


def test_the_epochs_are_cut_so_that_the_images_seen_stay_about_the_same():
    # fold 0 of the style folds at full size: 33,601 rows and 4,932 copies ran 16 epochs instead of 18
    assert looks.epochs_for_same_images(18, 33_601, 38_533) == 16
    assert looks.epochs_for_same_images(18, 100, 100) == 18 and looks.epochs_for_same_images(1, 100, 300) == 1
    images_an_epoch, epochs = looks.most_images_seen(18, 37_800, 2 * 37_800)
    bound = images_an_epoch * epochs
    assert epochs == looks.epochs_for_same_images(18, 37_800, images_an_epoch)
    seen = [(37_800 + copies) * looks.epochs_for_same_images(18, 37_800, 37_800 + copies)
            for copies in range(0, 2 * 37_800 + 1, 97)]
    # within half an epoch of the at least 6 that 18 become: 1/12
    assert max(seen) <= bound <= 13 / 12 * 18 * 37_800 and min(seen) >= 11 / 12 * 18 * 37_800


def test_a_rare_looks_limit_out_of_range_is_refused_in_one_sentence():
    values = settings.resolve_preset("quick", rare_looks=6)
    with pytest.raises(PipelineError, match=r"^--rare-looks 6: expected 0 \(none\) to 5"):
        settings.training_config(values)


def test_a_part_learns_its_rare_looks_in_fewer_epochs_and_resumes_on_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(looks, "CLUSTERS_PER_DIGIT", 3)
    images, labels, _ = images_in_looks(seed=1)  # 96 rows, 32 copies: 4 epochs of 96 become 3 of 128
    training = settings.training_config(settings.resolve_preset("quick", epochs=4, rare_looks=2))
    strategy = settings.configure_tensorflow(training)
    part = plan.Part("holdout", 5, np.arange(96), None)
    lines = []

    class Lines(Console):
        def say(self, message):
            lines.append(message)

    straight = parts.train_one_part(images, labels, part, training, strategy, tmp_path / "straight", Lines(), 1, 1)
    assert any(line.startswith("rare looks: 32 more images an epoch") and "3 epochs instead of 4" in line
               for line in lines)
    assert straight.summary.repeated_images == 32 and straight.summary.epochs == 3
    assert straight.summary.images_an_epoch == 128 and len(straight.history["loss"]) == 3
    assert PartSummary.from_json(straight.summary.to_json()) == straight.summary  # run.json keeps both
    assert page.parts_rows((straight.summary,))[0][3] == "96 (+32 rare looks again an epoch, 3 epochs)"  # its report

    class Stopped(Exception):
        pass

    def stop_after_the_first_epoch(line):
        if line.startswith("epoch 1/3"):
            raise Stopped

    with pytest.raises(Stopped):
        fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "resumed", strategy,
                          log=stop_after_the_first_epoch)
    assert (tmp_path / "resumed" / fit.RARE_LOOK_ROWS).is_file()  # kept beside the epoch's checkpoint

    def not_again(*arguments, **keywords):
        raise AssertionError("a resumed fit reads its rows, it does not cluster again")

    monkeypatch.setattr(looks, "rare_look_rows", not_again)
    resumed, state = fit.fit_one_model(images, labels, None, None, training, 5, tmp_path / "resumed", strategy,
                                       log=lambda line: None)
    assert state["completed_epochs"] == 3 and state["images_an_epoch"] == 128
    for expected, actual in zip(straight.model.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_the_work_counts_a_parts_own_epochs_and_its_repeated_images():
    cost = config.REFERENCE_MULTIPLY_ADDS
    plain = PartSummary("holdout", train_images=37_800, validation_images=4_200, multiply_adds=cost)
    rare = PartSummary("holdout", train_images=37_800, validation_images=4_200, multiply_adds=cost,
                       repeated_images=5_000, epochs=16)
    plain_work = plan.work_units([plain], epochs=18, test_images=28_000, views=1, pseudo_label=False)
    rare_work = plan.work_units([rare], epochs=18, test_images=28_000, views=1, pseudo_label=False)
    assert rare_work["training_units"] == pytest.approx(16 * 42_800 / 42_000, rel=1e-3)
    assert plain_work["training_units"] == pytest.approx(18 * 37_800 / 42_000, rel=1e-3)
    # two epochs fewer are two validation passes fewer
    assert plain_work["prediction_units"] - rare_work["prediction_units"] == pytest.approx(
        2 * 4_200 / 3 / 42_000, abs=0.01)
