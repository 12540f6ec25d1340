"""predict and submit: building, checking and refusing submissions, without a model."""

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.predict import (check_submission, predict_probabilities, shift_images, submission_text,
                              unused_submission_path)
from pipeline.submit import newest_submission, validate_submission_file


class FixedModel:
    """Stands in for a Keras model: probabilities from a fixed function of the image."""

    def predict(self, images, batch_size, verbose):
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
    ([(1, "seven")], "ImageId,Label", "column Label: 'seven' is not an integer"),
])
def test_invalid_submission_is_refused(tmp_path, rows, header, expected):
    path = write_submission(tmp_path / "s.csv", rows, header)
    with pytest.raises(PipelineError, match=expected):
        validate_submission_file(path, "digit-recognizer")


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
    from pipeline import config, runs

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

    from pipeline.model import load_models

    inputs = keras.Input(shape=(28, 28, 1))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))
    path = tmp_path / "five.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(PipelineError, match=r"five.keras: the model takes \(None, 28, 28, 1\) and gives \(None, 5\)"):
        load_models([path])
