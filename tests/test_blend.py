"""blend: two sample runs on one split averaged into a submission with an out-of-fold estimate."""

import json
import shutil

import numpy as np
import pytest

from conftest import QUICK_RUN, copy_project_root, run_in_process

QUICK = ["--preset", "quick", "--epochs", "1"]


def assert_ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def run_ids(root):
    return sorted(path.parent.name for path in (root / "data" / "models").glob("*/run.json"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, quick_run_master):
    """Two quick runs on the sample's one split: `all` (seed 42; QUICK_RUN, shared) and `train --seed 7` (the split's
    seed stays 42). Read-only: a test that writes works on its own copy (a blend made here was the blend a later
    test found first)."""
    assert list(QUICK_RUN[1:]) == [*QUICK, "--no-report"]
    root = copy_project_root(quick_run_master[0], tmp_path_factory.mktemp("blend") / "project")
    assert_ok(run_in_process(root, "train", *QUICK, "--seed", "7"))
    assert_ok(run_in_process(root, "predict"))
    first, second = run_ids(root)
    return root, first, second


@pytest.mark.slow
def test_blend_of_two_runs_on_one_split_has_an_out_of_fold_estimate(two_runs, tmp_path):
    root = copy_project_root(two_runs[0], tmp_path / "project")  # each test on its own copy: any order passes
    first, second = two_runs[1:]
    before = set(run_ids(root))
    for run_id in (first, second):  # predict keeps each run's test probabilities for blending
        assert np.load(root / "data" / "models" / run_id / "test_probabilities.npy").shape == (600, 10)
    result = assert_ok(run_in_process(root, "blend", first, second, "--weights", "2,1"))
    assert "blend: out-of-fold estimate 0." in result.stdout and "holdout on 240 images" in result.stdout
    [blend_id] = set(run_ids(root)) - before
    run = json.loads((root / "data" / "models" / blend_id / "run.json").read_text())
    assert run["blend"] == {"runs": [first, second], "weights": [pytest.approx(2 / 3), pytest.approx(1 / 3)]}
    # the estimate is the blended out-of-fold probabilities' accuracy, by hand
    labels = np.load(root / "data" / "prepared" / "train_labels.npy")
    held_out = [np.load(root / "data" / "models" / run_id / "out_of_fold.npz") for run_id in (first, second)]
    blended = 2 / 3 * held_out[0]["probabilities"] + 1 / 3 * held_out[1]["probabilities"]
    expected = (blended.argmax(axis=1) == labels[held_out[0]["rows"]]).mean()
    assert run["estimate"]["accuracy"] == pytest.approx(expected)
    # like any run: run.json, and the submission named in submission.json (as predict writes it)
    submission = json.loads((root / "data" / "models" / blend_id / "submission.json").read_text())["submission"]
    assert "submission" not in run and submission == f"submissions/{blend_id}.csv"
    # runs on the sample: `make submit RUN=<blend>`, which it said, refuses the sample's predictions
    assert result.stdout.splitlines()[-1] == "blend: of runs on the bundled sample, a trial that Kaggle cannot score"
    lines = (root / submission).read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 601
    assert (root / "data" / "reports" / blend_id / "index.html").is_file()
    assert blend_id in assert_ok(run_in_process(root, "runs")).stdout


@pytest.mark.slow
def test_runs_diff_of_two_sample_runs_names_the_seed_and_the_estimate(two_runs):
    root, first, second = two_runs
    result = assert_ok(run_in_process(root, "runs", "diff", first, second))
    fields = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert "params.seed" in fields and "estimate" in fields
    assert "params.epochs" not in fields and "source" not in fields  # the same in both


@pytest.mark.slow
def test_blend_says_it_has_no_estimate_when_the_held_out_rows_differ(two_runs, tmp_path):
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    other_split = copy_run(root, second, "20000101-000000-othersplit")
    held_out = dict(np.load(other_split / "out_of_fold.npz"))
    np.savez(other_split / "out_of_fold.npz", rows=held_out["rows"][::-1] + 1, probabilities=held_out["probabilities"])
    result = assert_ok(run_in_process(root, "blend", first, other_split.name))
    assert "blend: no estimate: the runs held out different rows (another split)" in result.stdout  # not "no row"
    [blend_id] = [run_id for run_id in run_ids(root) if run_id.endswith("-blend")]
    assert "No estimate" in (root / "data" / "reports" / blend_id / "index.html").read_text()


@pytest.mark.slow
def test_blend_refuses_runs_on_different_data_in_one_line(two_runs, tmp_path):
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    elsewhere = copy_run(root, second, "20000101-000000-otherdata")
    run = json.loads((elsewhere / "run.json").read_text())
    run.update(source="/data/digit-recognizer.zip", data={name: "0" * 64 for name in run["data"]})
    (elsewhere / "run.json").write_text(json.dumps(run))
    result = run_in_process(root, "blend", first, elsewhere.name)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "trained on different data" in result.stderr


@pytest.mark.parametrize("arguments, expected", [
    (["only-one"], "name at least two runs"),
    (["a", "b", "--weights", "1"], "1 weights for 2 runs"),
    (["a", "b", "--weights", "1,x"], "expected numbers separated by commas"),
    (["../a", "b"], "error: run '../a': not a run id"),  # the runs are arguments: there is no --run
    (["a", "b", "--weights", "inf,1"], "expected numbers above 0 (and not inf)"),
    (["a", "b", "--weights", "1e308,1e308"], "expected numbers above 0 (and not inf)"),  # their sum is inf
    (["a", "b", "--weights", "nan,1"], "expected numbers above 0 (and not inf)"),
    (["a", "b", "--weights", "0,1"], "--weights 0,1: a run of weight 0 adds nothing; leave it out of the blend"),
])
def test_blend_bad_input_is_one_line(tmp_path, arguments, expected):
    result = run_in_process(tmp_path, "blend", *arguments)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and expected in result.stderr


def copy_run(root, run_id, new_id):
    """A copy of a run under another id: a stand-in for a run whose record differs in one respect."""
    target = root / "data" / "models" / new_id
    shutil.copytree(root / "data" / "models" / run_id, target)
    run = json.loads((target / "run.json").read_text())
    run["id"] = new_id
    (target / "run.json").write_text(json.dumps(run))
    return target


@pytest.mark.slow
def test_a_run_json_of_the_first_versions_without_data_hashes_is_refused_for_that_reason(two_runs, tmp_path):
    """Review 57 G: such runs were refused by blend as "trained on different data", and by `report --run` as data
    no longer prepared, whose advice (prepare it again) changed nothing."""
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    early = copy_run(root, second, "20000101-000000-early")
    run = json.loads((early / "run.json").read_text())
    del run["data"]
    (early / "run.json").write_text(json.dumps(run))
    for command in (["blend", first, early.name], ["report", "--run", early.name]):
        result = run_in_process(root, *command)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert "its run.json, from an early version, does not record the data it was trained on" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("damaged, content, expected", [
    ("history.json", '{"loss": [2.3, 1.5', "not the training histories train saves (JSONDecodeError"),
    ("history.json", '{"a": 1}', "not the training histories train saves (ValueError"),
    ("test_probabilities.npy", "text, not an array", "not the test probabilities predict saves"),
    ("out_of_fold.npz", "text, not an archive", "not the out-of-fold predictions train saves"),
])
def test_a_damaged_run_file_is_one_line_naming_it_and_leaves_no_blend(two_runs, tmp_path, damaged, content,
                                                                      expected):
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    path = root / "data" / "models" / first / damaged
    path.unlink()  # kept files are read-only hard links into the run cache: a new file in its place
    path.write_text(content)
    submissions, runs_before = sorted((root / "submissions").iterdir()), run_ids(root)
    result = run_in_process(root, "blend", first, second)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0 and f"{path}: {expected}" in result.stderr
    assert sorted((root / "submissions").iterdir()) == submissions  # no submission that looks finished
    assert run_ids(root) == runs_before


@pytest.mark.slow
def test_a_run_with_nan_probabilities_is_refused(two_runs, tmp_path):
    """A diverged run's NaN made every blended label 0."""
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    path = root / "data" / "models" / first / "test_probabilities.npy"
    path.unlink()
    np.save(path, np.full((600, 10), np.nan, np.float32))
    result = run_in_process(root, "blend", first, second)
    assert result.returncode == 1 and result.stderr == (
        f"error: run {first}: its test probabilities are NaN (its training diverged): leave it out\n")


@pytest.mark.slow
def test_a_run_whose_test_probabilities_are_of_other_test_images_is_predicted_again(two_runs, tmp_path):
    """A run restored from the run cache for another test.csv wrote its probabilities of those images over the file,
    and blend averaged them row by row with another run's of this test.csv: a submission of wrong labels."""
    from pipeline.core.cache import path_digest

    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    folder = root / "data" / "models" / first
    made_for = json.loads((folder / "test_probabilities.json").read_text())["test_images"]
    assert made_for == path_digest(root / "data" / "prepared" / "test_images.npy")  # predict says of which images
    expected = np.load(folder / "test_probabilities.npy")
    for name in ("test_probabilities.npy", "test_probabilities.json"):
        (folder / name).unlink()  # kept files are read-only hard links into the run cache: new files in their place
    np.save(folder / "test_probabilities.npy", expected[::-1])  # as if of the test rows in another order
    (folder / "test_probabilities.json").write_text(json.dumps({"test_images": "0" * 64}))
    result = assert_ok(run_in_process(root, "blend", first, second))
    assert (f"blend: run {first}: its test probabilities are of other test images than data/prepared holds:"
            " predicting them again") in result.stdout
    np.testing.assert_allclose(np.load(folder / "test_probabilities.npy"), expected, atol=1e-5)
    assert json.loads((folder / "test_probabilities.json").read_text())["test_images"] == made_for
    # Review 57 G: predicted by an earlier version (no test_probabilities.json), and written over by another
    # test.csv's then: predicted again too (they were averaged as they were, a 0.53 blend of two 0.89 runs)
    for name in ("test_probabilities.npy", "test_probabilities.json"):
        (folder / name).unlink()
    np.save(folder / "test_probabilities.npy", expected[::-1])
    result = assert_ok(run_in_process(root, "blend", first, second, "--weights", "2,1"))
    assert (f"blend: run {first}: its test probabilities do not say which test images they are of (predicted by an"
            " earlier version): predicting them again") in result.stdout
    np.testing.assert_allclose(np.load(folder / "test_probabilities.npy"), expected, atol=1e-5)


@pytest.mark.slow
def test_the_same_blend_again_is_the_one_made_before_until_a_runs_predictions_change(two_runs, tmp_path):
    """Each `blend A B` made a new run, a new submission and a new report page, byte for byte the first's."""
    import re

    def blend_named(result) -> str:
        return re.search(r"run (\d{8}-\d{6}-blend)", result.stdout.splitlines()[0]).group(1)

    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    made = blend_named(assert_ok(run_in_process(root, "blend", first, second, "--weights", "5,1")))
    before = run_ids(root)
    again = assert_ok(run_in_process(root, "blend", first, second, "--weights", " 10 , 2 "))  # the same weights
    assert again.stdout.startswith(f"blend: up to date, run {made} (the same runs' predictions, the same weights)")
    swapped = assert_ok(run_in_process(root, "blend", second, first, "--weights", "1,5"))  # review 60 H: the order
    assert swapped.stdout.startswith(f"blend: up to date, run {made} ")
    assert run_ids(root) == before
    other = assert_ok(run_in_process(root, "blend", first, second, "--weights", "5,2"))  # a blend of its own
    assert "up to date" not in other.stdout.splitlines()[0] and len(run_ids(root)) == len(before) + 1
    assert_ok(run_in_process(root, "predict", "--tta"))  # the latest run's test probabilities change
    changed = assert_ok(run_in_process(root, "blend", first, second, "--weights", "5,1"))
    assert blend_named(changed) != made and len(run_ids(root)) == len(before) + 2
    # review 57 H: `runs diff` said the two blends differed in nothing, their submissions being different
    diff = assert_ok(run_in_process(root, "runs", "diff", made, blend_named(changed))).stdout
    assert "submission" in [line.split()[0] for line in diff.splitlines()[1:]], diff
    # review 60 H: and which prediction of the run it took (the latest predict's, here with TTA)
    assert f"x {second} (tta)" in diff and f"x {second} (no tta)" in diff, diff


@pytest.mark.slow
def test_a_run_whose_folder_was_deleted_is_said_to_come_back_from_the_run_cache(two_runs, tmp_path):
    """blend said to retrain it, where `report --run` said the run cache brings it back in seconds."""
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    shutil.rmtree(root / "data" / "models" / first)
    result = run_in_process(root, "blend", first, second)
    assert result.returncode == 1 and result.stderr == (
        f"error: run {first}: no test probabilities, and no models to predict them with (the run cache keeps it:"
        " `make all PRESET=quick EPOCHS=1` brings its files back in seconds (on the data it was trained on), or leave"
        " it out)\n")


@pytest.mark.slow
def test_a_blend_cut_short_by_a_full_disk_leaves_no_run(two_runs, tmp_path, monkeypatch):
    """A blend whose submission could not be written left its run folder: `runs` listed a blend whose file did not
    exist, and each try added one more."""
    import errno

    from pipeline.tools import blend as blend_module

    def full_disk(labels):
        raise OSError(errno.ENOSPC, "No space left on device")

    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    monkeypatch.setattr(blend_module, "submission_text", full_disk)  # the last write: the submission
    folders = sorted((root / "data" / "models").iterdir())
    submissions, runs_before = sorted((root / "submissions").iterdir()), run_ids(root)
    result = run_in_process(root, "blend", first, second)
    assert result.returncode == 1 and "cannot write (No space left on device)" in result.stderr, result.stderr
    assert sorted((root / "submissions").iterdir()) == submissions
    assert run_ids(root) == runs_before and sorted((root / "data" / "models").iterdir()) == folders


@pytest.mark.slow
def test_a_blend_of_full_size_runs_says_how_to_send_it(two_runs, tmp_path):
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    for run_id in (first, second):  # as if trained on the competition's files
        run_file = root / "data" / "models" / run_id / "run.json"
        run = json.loads(run_file.read_text())
        run_file.unlink()  # a read-only hard link into the run cache: a new file in its place
        run_file.write_text(json.dumps({**run, "source": "kaggle:digit-recognizer"}))
    before = set(run_ids(root))
    result = assert_ok(run_in_process(root, "blend", first, second))
    (blend_id,) = set(run_ids(root)) - before
    assert result.stdout.splitlines()[-1] == (f"blend: send it with `make submit RUN={blend_id}`"
                                              f" (`python -m pipeline submit --run {blend_id}`)")


@pytest.mark.slow
def test_a_blend_of_a_blend_and_one_of_its_runs_names_each_model_once(two_runs, tmp_path):
    """`runs --wide` counted such a blend's models with one of them twice."""
    root = copy_project_root(two_runs[0], tmp_path / "project")
    first, second = two_runs[1:]
    before = set(run_ids(root))
    assert_ok(run_in_process(root, "blend", first, second))
    (inner,) = set(run_ids(root)) - before
    assert_ok(run_in_process(root, "blend", inner, first))
    (outer,) = set(run_ids(root)) - before - {inner}
    models = json.loads((root / "data" / "models" / outer / "run.json").read_text())["models"]
    firsts = json.loads((root / "data" / "models" / first / "run.json").read_text())["models"]
    assert outer != inner and len(models) == len(set(models)) and set(firsts) <= set(models)
    lines = assert_ok(run_in_process(root, "runs", "--wide", "--all")).stdout.splitlines()
    header, row = lines[0], next(line for line in lines if line.startswith(outer))
    seconds = row[header.index("train_s"):header.index("kept")].strip()
    assert seconds == "-"  # it trained nothing of its own: it said 0
