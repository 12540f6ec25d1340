"""predict and submit: building, checking and refusing submissions, without a model."""

import numpy as np
import pytest

from pipeline.competition.submission import check_submission, submission_text
from pipeline.competition.submit import newest_submission, validate_submission_file
from pipeline.core.errors import PipelineError
from pipeline.stages.predict import unused_submission_path
from pipeline.training.prediction import predict_probabilities, shift_images


class FixedModel:
    """Stands in for a Keras model: probabilities from a fixed function of the image."""

    def predict(self, images, batch_size=None, verbose=0, callbacks=()):  # Keras's signature, callbacks unused
        if not isinstance(images, np.ndarray):  # a tf.data dataset of batches, as predict_probabilities passes
            images = np.concatenate([np.asarray(batch) for batch in images])
        scores = np.zeros((len(images), 10), dtype=np.float32)
        scores[np.arange(len(images)), (images.sum(axis=(1, 2, 3)) > 0).astype(int)] = 1.0
        return scores


def test_shift_moves_pixels_and_fills_with_zeros():
    images = np.zeros((1, 28, 28, 1), dtype=np.float32)
    images[0, 0, 5, 0] = 1.0
    assert shift_images(images, 1, 0)[0, 1, 5, 0] == 1.0
    assert shift_images(images, 0, -1)[0, 0, 4, 0] == 1.0
    assert shift_images(images, -1, 0).sum() == 0.0  # moved off the top edge


def test_probabilities_average_over_tta_views():
    images = np.zeros((2, 28, 28, 1), dtype=np.float32)
    images[1, 0, 0, 0] = 1.0  # a corner pixel: two of the four shifts push it out of the image
    plain = predict_probabilities([FixedModel()], images, verbose=0)
    augmented = predict_probabilities([FixedModel()], images, tta=True, verbose=0)
    assert plain[1, 1] == 1.0
    assert augmented[1, 1] == pytest.approx(3 / 5)
    assert np.allclose(augmented.sum(axis=1), 1.0)


def test_probabilities_are_the_models_weighted_mean_when_weights_are_given():
    images = np.zeros((2, 28, 28, 1), dtype=np.float32)
    images[1, 14, 14, 0] = 1.0  # FixedModel says 0 for the blank image, 1 for the other; ZeroModel 0 for both

    class ZeroModel(FixedModel):
        def predict(self, images, **kwargs):
            scores = super().predict(images, **kwargs)
            return np.eye(10, dtype=np.float32)[np.zeros(len(scores), dtype=int)]

    weighted = predict_probabilities([FixedModel(), ZeroModel()], images, tta=True, weights=[3.0, 1.0])
    assert weighted[0, 0] == pytest.approx(1.0)
    assert weighted[1, 1] == pytest.approx(3 / 4) and weighted[1, 0] == pytest.approx(1 / 4)
    assert predict_probabilities([FixedModel(), ZeroModel()], images)[1, 1] == pytest.approx(1 / 2)  # equal: None


def test_submission_text_has_header_and_ids_from_one():
    assert submission_text(np.array([3, 0, 9])) == "ImageId,Label\n1,3\n2,0\n3,9\n"


def test_check_submission_refusals():
    labels = np.array([1, 2, 3])
    check_submission(np.array([1, 2, 3]), labels, 3)
    with pytest.raises(PipelineError, match="3 rows, expected 28000"):
        check_submission(np.array([1, 2, 3]), labels, 28000)
    with pytest.raises(PipelineError, match="line 3, column ImageId: 3, expected 2"):
        check_submission(np.array([1, 3, 2]), labels, 3)
    with pytest.raises(PipelineError, match="line 2, column Label: 11"):
        check_submission(np.array([1, 2, 3]), np.array([11, 2, 3]), 3)


def test_unused_path_never_overwrites(tmp_path):
    first = unused_submission_path(tmp_path, "run")
    first.write_text("x")
    second = unused_submission_path(tmp_path, "run")
    assert (first.name, second.name) == ("run.csv", "run-2.csv")


def write_submission(path, rows, header="ImageId,Label"):
    path.write_text(header + "\n" + "".join(f"{image_id},{label}\n" for image_id, label in rows))
    return path


def test_valid_competition_submission(tmp_path):
    path = write_submission(tmp_path / "s.csv", [(index, index % 10) for index in range(1, 28001)])
    assert validate_submission_file(path, "digit-recognizer") == 28000


@pytest.mark.parametrize("rows, header, expected", [
    ([(index, 1) for index in range(1, 601)], "ImageId,Label", "600 rows, expected 28000"),
    ([(1, 1)], "Id,Label", "header is 'Id,Label'"),
    ([(1, "seven")], "ImageId,Label", "column Label: 'seven', expected one digit 0-9"),
    # train.csv sent by mistake: its 785 names were quoted whole, and a crafted header of 800 KB too
    ([(1, 1)], ",".join(["label", *(f"pixel{index}" for index in range(784))]),
     r"header is 'label,pixel0,pixel1,.{40}'\.\.\. \(6,951 characters\), expected 'ImageId,Label'$"),
])
def test_invalid_submission_is_refused(tmp_path, rows, header, expected):
    path = write_submission(tmp_path / "s.csv", rows, header)
    with pytest.raises(PipelineError, match=expected) as refused:
        validate_submission_file(path, "digit-recognizer")
    assert len(str(refused.value)) < 300


def test_newest_submission(tmp_path):
    with pytest.raises(PipelineError, match="no submission yet"):
        newest_submission(tmp_path)
    older, newer = tmp_path / "a.csv", tmp_path / "b.csv"
    older.write_text("x")
    newer.write_text("y")
    import os
    os.utime(older, (1, 1))
    assert newest_submission(tmp_path) == newer


@pytest.mark.parametrize("run_id", ["../evil", "..", "/etc", "a/../../evil", ".hidden", ""])
def test_run_id_with_a_path_in_it_is_refused(pipeline_root, run_id):
    """Issue 9: `submit --run ../evil` read data/evil/run.json and sent the file it named."""
    from pipeline.core import config, runs

    evil = pipeline_root / "data" / "evil"
    evil.mkdir(parents=True)
    (evil / "run.json").write_text('{"id": "evil", "submission": "/etc/hostname"}')
    with pytest.raises(PipelineError, match="not a run id"):
        runs.read_run(config.paths(), run_id)


def test_model_with_the_wrong_outputs_is_refused(tmp_path):
    """Issue 9: a model giving 5 values per image crashed predict with a traceback."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from pipeline.training.model import load_models

    inputs = keras.Input(shape=(28, 28, 1))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))
    path = tmp_path / "five.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(PipelineError, match=r"five.keras: the model takes \(None, 28, 28, 1\) and gives \(None, 5\)"):
        load_models([path])


@pytest.mark.parametrize("row, column, expected", [
    ((1, "²"), "Label", "'²', expected one digit 0-9"),
    ((1, "٣"), "Label", "'٣', expected one digit 0-9"),
    ((1, "--5"), "Label", "'--5', expected one digit 0-9"),
    ((1, "-1"), "Label", "'-1', expected one digit 0-9"),
    ((1, "99999999999999999999999"), "Label", "'99999999999999999999999', expected one digit 0-9"),
    (("99999999999999999999999", 1), "ImageId", "'99999999999999999999999', expected 1 (ids 1..N in order)"),
    (("٣", 1), "ImageId", "'٣', expected 1 (ids 1..N in order)"),
    (("--5", 1), "ImageId", "'--5', expected 1 (ids 1..N in order)"),
])
def test_labels_and_ids_are_ascii_digits_in_range(tmp_path, row, column, expected):
    """Issue 21: `²` and huge numbers ended in tracebacks, and an Arabic-Indic `٣` passed (str.isdigit)."""
    path = write_submission(tmp_path / "s.csv", [row])
    with pytest.raises(PipelineError) as caught:
        validate_submission_file(path, "digit-recognizer")
    assert str(caught.value) == f"{path} line 2, column {column}: {expected}"


def test_a_submission_file_is_read_only_up_to_a_size_limit(tmp_path):
    """Issue 21: a 55 MB file was read whole (397 MB resident) before its rows were counted."""
    from pipeline.competition.submission import MAX_SUBMISSION_BYTES

    path = tmp_path / "huge.csv"
    with open(path, "w") as stream:
        stream.write("ImageId,Label\n")
        stream.truncate(MAX_SUBMISSION_BYTES + 1)
    with pytest.raises(PipelineError, match=rf"huge.csv: {(MAX_SUBMISSION_BYTES + 1) / 1e6:.1f} MB, more than"):
        validate_submission_file(path, "digit-recognizer")


def test_rows_beyond_the_expected_count_stop_the_reading(tmp_path):
    path = write_submission(tmp_path / "s.csv", [(index, 1) for index in range(1, 28001)] + [(28001, 1), ("x", 1)])
    with pytest.raises(PipelineError, match="s.csv line 28002: more than 28000 rows"):
        validate_submission_file(path, "digit-recognizer")


def test_submit_sends_what_the_predict_stage_last_made_not_the_newest_file(pipeline_root):
    """Issue 21: a restored submission keeps its old modification time, and "newest" sorted by it."""
    import os

    from pipeline.competition.submit import current_submission
    from pipeline.core import cache, config

    submissions = pipeline_root / "submissions"
    submissions.mkdir()
    restored = write_submission(submissions / "seed-7.csv", [(1, 7)])
    other = write_submission(submissions / "seed-42.csv", [(1, 4)])
    os.utime(restored, (1, 1))  # older than the other run's file, as a restored output is
    record = {"stage": "predict", "key": {"params": {}}, "extra": {"submission": "submissions/seed-7.csv"},
              "outputs": {"submissions/seed-7.csv": cache.file_digest(restored)}}
    cache.write_json(cache.record_path("predict"), record)
    assert newest_submission(submissions) == other
    assert current_submission(config.paths()) == restored
    restored.unlink()
    with pytest.raises(PipelineError, match="seed-7.csv, which the last predict wrote, is gone"):
        current_submission(config.paths())
    cache.record_path("predict").unlink()
    assert current_submission(config.paths()) == other  # no predict record: the newest file, as before


@pytest.mark.slow
def test_a_run_whose_models_predict_nan_writes_no_submission(quick_run_root, monkeypatch):
    """A diverged training (loss nan) gave a submission of zeros (argmax of NaN) that looked finished."""
    from conftest import run_in_process

    from pipeline.stages import predict

    before = sorted((quick_run_root / "submissions").iterdir())
    monkeypatch.setattr(predict, "predict_probabilities",
                        lambda models, images, **options: np.full((len(images), 10), np.nan, np.float32))
    result = run_in_process(quick_run_root, "predict", "--tta")  # another setting: predict runs again
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "its models predict NaN, so its training diverged" in result.stderr and "--learning-rate" in result.stderr
    assert sorted((quick_run_root / "submissions").iterdir()) == before
