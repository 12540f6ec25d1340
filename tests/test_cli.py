"""The whole pipeline through its CLI on the bundled sample: real files, real TensorFlow training."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import (QUICK_RUN, PROJECT_ROOT, pipeline_environment, run_in_process, run_pipeline,
                      start_pipeline)

from pipeline.core.records import PartSummary
from pipeline.report import page
from pipeline.stages import train as train_stage
from pipeline.training import parts as parts_module

QUICK = ["--preset", "quick", "--epochs", "2"]
STAGES = ("download", "prepare", "split", "train", "predict", "report")


def stage_lines(output: str) -> dict:
    return {line.split(":")[0]: line for line in output.splitlines() if line.split(":")[0] in STAGES}


def assert_ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def kill_once_checkpointed(root: Path, args: list[str], part: str, completed_epochs: int) -> None:
    """Run the pipeline and SIGKILL it once the named model's checkpoint has that many epochs."""
    process = start_pipeline(root, *args, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        states = list((root / "data" / "models" / ".checkpoints").glob(f"*/{part}/state.json"))
        if states and json.loads(states[0].read_text())["completed_epochs"] >= completed_epochs:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def finished_root(tmp_path_factory):
    """One full quick run on the sample, shared by the tests that only read its results."""
    root = tmp_path_factory.mktemp("finished")
    first = assert_ok(run_in_process(root, "all", *QUICK))
    return root, first


@pytest.mark.slow
def test_all_on_sample_writes_a_valid_submission(finished_root):
    root, first = finished_root
    assert "no Kaggle credentials found, using the bundled sample" in first.stdout
    submissions = list((root / "submissions").glob("*.csv"))
    assert len(submissions) == 1
    lines = submissions[0].read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 601
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 601))
    last_line = first.stdout.splitlines()[-1]
    assert str(submissions[0]) in last_line
    # a trial on the sample: the last line says so and how to get the real data, not "make submit"
    assert "bundled sample (600 test rows" in last_line and "Kaggle credentials" in last_line
    assert "make submit" not in last_line
    # one line per epoch, the pipeline's own; no Keras progress lines from training or prediction
    epoch_lines = [line for line in first.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("loss" in line and "accuracy" in line for line in epoch_lines)
    assert "/step" not in first.stdout and " - 0s" not in first.stdout and "1/1" not in first.stdout
    # the sample's test rows have known answers: even 2 quick epochs are far better than chance
    answers = (PROJECT_ROOT / "data" / "sample" / "test_answers.csv").read_text().splitlines()[1:]
    correct = sum(a.split(",")[1] == b.split(",")[1] for a, b in zip(answers, lines[1:]))
    assert correct / 600 > 0.5


@pytest.mark.slow
def test_second_run_redoes_nothing_quickly(finished_root):
    root, _ = finished_root
    started = time.perf_counter()
    again = assert_ok(run_pipeline(root, "all", *QUICK))
    elapsed = time.perf_counter() - started
    lines = stage_lines(again.stdout)
    assert all("up to date" in lines[stage] for stage in STAGES), again.stdout
    assert elapsed < 5, f"an up-to-date run took {elapsed:.1f} s"
    profiled = assert_ok(run_pipeline(root, "all", *QUICK, env={"PYTHONPROFILEIMPORTTIME": "1"}))
    imported = {line.split("|")[-1].strip().split(".")[0] for line in profiled.stderr.splitlines()
                if "import time:" in line}
    # nothing heavy to find that nothing changed
    assert "numpy" in imported and not {"tensorflow", "keras", "ray"} & imported
    assert len(list((root / "submissions").glob("*.csv"))) == 1


@pytest.mark.slow
def test_runs_lists_the_run_with_its_submission(finished_root):
    root, _ = finished_root
    table = assert_ok(run_in_process(root, "runs", "--wide")).stdout  # the submission is a column of the wide table
    run_id = json.loads(next((root / "data" / "models").glob("*/run.json")).read_text())["id"]
    assert run_id in table and f"{run_id}.csv" in table


@pytest.mark.slow
def test_changed_parameter_reruns_that_stage_and_later_ones_only(quick_run_root):
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run
    changed = assert_ok(run_in_process(tmp_path, *QUICK_RUN, "--seed", "7"))
    lines = stage_lines(changed.stdout)
    for stage in ("download", "prepare"):
        assert "up to date" in lines[stage]
    for stage in ("split", "train", "predict"):
        assert "up to date" not in lines[stage], changed.stdout
    # the earlier submission is still there, untouched, beside the new one
    assert len(list((tmp_path / "submissions").glob("*.csv"))) == 2
    # a report of the latest run compares it with the earlier one; the earlier run gets its own report too
    first_id, second_id = sorted(path.name for path in (tmp_path / "data" / "models").glob("*-small"))
    latest = assert_ok(run_in_process(tmp_path, "report"))
    page = (tmp_path / "data" / "reports" / second_id / "index.html").read_text()
    assert "best earlier run" in page and first_id in page and 'class="banner"' in page
    earlier = assert_ok(run_in_process(tmp_path, "report", "--run", first_id))
    assert (tmp_path / "data" / "reports" / first_id / "index.html").is_file(), earlier.stdout
    assert latest.stdout != earlier.stdout
    unknown = run_in_process(tmp_path, "report", "--run", "20990101-000000-cnn")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "no such run" in unknown.stderr
    forced = assert_ok(run_in_process(tmp_path, "prepare", "--force"))
    assert "up to date" not in forced.stdout


@pytest.mark.slow
def test_changed_input_reruns_from_prepare(quick_run_root):
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run
    raw_train = tmp_path / "data" / "raw" / "train.csv"
    lines = raw_train.read_text().splitlines()
    raw_train.write_text("\n".join(lines[:-1]) + "\n")  # one image fewer
    prepared = assert_ok(run_in_process(tmp_path, "prepare"))
    assert "2399 train" in prepared.stdout
    # the model was trained on the old data: predict on its own refuses and names the command that fixes it
    stale = run_in_process(tmp_path, "predict")
    assert stale.returncode == 1 and stale.stderr.count("\n") == 1, stale.stderr
    assert "out of date" in stale.stderr and "`python -m pipeline split`" in stale.stderr
    # the split's seed and the training seed are two things, and run.json keeps both
    assert_ok(run_in_process(tmp_path, "split", "--seed", "7"))
    assert_ok(run_in_process(tmp_path, "train", *QUICK_RUN[1:5]))
    run_file = max((tmp_path / "data" / "models").glob("*/run.json"), key=lambda path: path.stat().st_mtime)
    run, trained = json.loads(run_file.read_text()), run_file.read_bytes()
    assert run["split"]["seed"] == 7 and run["params"]["seed"] == 42
    assert [part["seed"] for part in run["parts"]] == [42]
    assert_ok(run_in_process(tmp_path, "predict"))
    assert_ok(run_in_process(tmp_path, "report"))
    # run.json is train's alone: predict and report write their own records beside it
    assert run_file.read_bytes() == trained
    predicted = json.loads((run_file.parent / "submission.json").read_text())
    assert (tmp_path / predicted["submission"]).is_file() and predicted["submission"].endswith(f"{run['id']}.csv")
    reported = json.loads((run_file.parent / "report.json").read_text())
    assert (tmp_path / reported["index"]).is_file()


def test_broken_csv_gives_one_line_error_and_no_outputs(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        train = archive.read("train.csv").decode().splitlines()
        (folder / "test.csv").write_bytes(archive.read("test.csv"))
    cells = train[5].split(",")
    cells[300] = "abc"
    train[5] = ",".join(cells)
    (folder / "train.csv").write_text("\n".join(train) + "\n")
    result = run_in_process(tmp_path, "all", "--source", str(folder), *QUICK)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path}/data/raw/train.csv line 6, column pixel299:"
                                    " 'abc' is not an integer, expected 0-255")
    assert not (tmp_path / "data" / "prepared").exists()


def test_unknown_option_value_is_a_clear_error(tmp_path):
    result = run_in_process(tmp_path, "train", "--preset", "fastest")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    result = run_in_process(tmp_path, "predict")
    assert result.returncode == 1 and "run `python -m pipeline train` first" in result.stderr


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(split_sample_root):
    tmp_path = split_sample_root  # download, prepare and split done; logical CPUs are set before TensorFlow starts
    result = assert_ok(run_pipeline(tmp_path, "train", "--preset", "quick", "--epochs", "1", "--strategy", "mirrored",
                                    env={"PIPELINE_LOGICAL_CPUS": "2"}))
    assert "(2 replicas)" in result.stdout


@pytest.mark.slow
def test_mirrored_on_one_device_and_a_run_of_warm_up_alone_are_said(split_sample_root):
    """Review 58 N: `--strategy mirrored` without a GPU trained as the default strategy, and 1-2 epochs ended at the
    warm-up's peak learning rate, both without a word."""
    result = assert_ok(run_pipeline(split_sample_root, "train", "--preset", "quick", "--epochs", "2", "--strategy",
                                    "mirrored"))
    assert result.stderr.splitlines() == [
        "warning: --strategy mirrored: one device here, CPU (no GPU found), so it trains as --strategy default",
        "warning: --epochs 2: all of it is the schedule's 2-epoch warm-up, so the learning rate rises to its peak and"
        " never comes down; the models keep the last weights, taken at the peak (3 or more epochs end on a decay)"]


@pytest.mark.slow
def test_tensorboard_logs_each_model_and_changes_no_result(split_sample_root):
    tmp_path = split_sample_root  # download, prepare and split done
    result = assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "1", "--tensorboard"))
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    logs = tmp_path / run["tensorboard"]  # relative to the project root, as run.json's other paths
    assert logs.is_relative_to(tmp_path / "data" / "tensorboard") and str(logs) in result.stdout
    assert list((logs / "member-0" / "train").glob("events.out.tfevents.*"))
    assert list((logs / "member-0" / "validation").glob("events.out.tfevents.*"))
    # Logging is not part of the stage's key: the same run without it is up to date.
    assert "up to date" in assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "1")).stdout
    again = assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "1", "--tensorboard"))
    assert "up to date" in again.stdout and again.stderr == ""  # it has its logs
    # A run trained without them, asked for them: it says there are none (it said nothing, and wrote none)
    assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "2"))
    without = assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "2", "--tensorboard"))
    run_id = json.loads((tmp_path / "data" / ".cache" / "train.json").read_text())["extra"]["run_id"]
    assert "up to date" in without.stdout and without.stderr == (
        f"warning: --tensorboard: run {run_id} was trained before without TensorBoard logs, and logging alone never"
        " trains it again: add FORCE=1 to train it with them\n")


@pytest.mark.slow
def test_train_on_a_split_that_is_not_the_presets_says_so(split_sample_root):
    """`make split` then `make train PRESET=best` trained best's networks on the default holdout, not its 5 folds,
    without a word."""
    tmp_path = split_sample_root
    assert_ok(run_in_process(tmp_path, "split", "--folds", "2"))
    result = assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "3"))
    assert result.stderr == ("warning: the split is 2 folds; the quick preset trains on a holdout: training on the"
                             " split as it is (for the preset's own, `make split FOLDS=1` first)\n")
    assert_ok(run_in_process(tmp_path, "split"))  # the preset's own: nothing said
    assert assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "3")).stderr == ""


@pytest.mark.slow
def test_default_cnn_learns_on_the_sample(tmp_path):
    """Guards the default recipe against what small data breaks (Keras's BatchNorm momentum once did)."""
    assert_ok(run_in_process(tmp_path, "all", "--epochs", "4", "--no-final-model", "--no-report"))
    record = json.loads((tmp_path / "data" / ".cache" / "train.json").read_text())
    assert record["key"]["params"]["architecture"] == "cnn"
    assert record["extra"]["estimate"]["accuracy"] > 0.85


@pytest.mark.slow
def test_bench_prints_one_table_and_saves_it(tmp_path):
    result = assert_ok(run_in_process(tmp_path, "bench", "--source", "sample", "--presets", "baseline,quick",
                                    "--epochs", "1"))
    # commands a user can run (review 58 K: `download --source kaggle`, a fragment of one)
    assert ("bench: on the bundled sample; for the full-size data run `make download SOURCE=kaggle` first (its zip"
            " is cached in data/raw/) or give SOURCE=path/to/digit-recognizer.zip") in result.stdout
    header = [line for line in result.stdout.splitlines() if "train img/s" in line]
    assert len(header) == 1 and "predict img/s" in header[0] and "peak MB" in header[0] and "units" in header[0]
    saved = json.loads(next((tmp_path / "data" / "reports").glob("bench-*.json")).read_text())
    assert [row["preset"] for row in saved["rows"]] == ["baseline", "quick"]
    for row in saved["rows"]:  # relative to the project, as every record's (they were absolute)
        assert row["test_images"].startswith("data/bench/") and all(path.startswith("data/bench/")
                                                                    for path in row["models"])
    for row in saved["rows"]:
        assert 0 < row["estimate_accuracy"] <= 1 and row["estimate_kind"] == "holdout"
        assert row["peak_rss_mb"] > 50 and row["predict_images_per_s"] > 0
    # One epoch on the sample's 2,160 training rows: the MLP is far cheaper than the small CNN, both tiny.
    baseline, quick = saved["rows"]
    assert 0 < baseline["work_units"] < quick["work_units"] < 0.01


@pytest.mark.slow
def test_quiet_prints_nothing_but_errors(finished_root):
    root, _ = finished_root
    quiet = assert_ok(run_pipeline(root, "--quiet", "all", *QUICK))
    assert quiet.stdout == "" and quiet.stderr == ""
    quiet_after = assert_ok(run_pipeline(root, "all", *QUICK, "--quiet"))  # issue 18: anywhere on the line
    assert quiet_after.stdout == "" and quiet_after.stderr == ""
    failing = run_pipeline(root, "--quiet", "split", "--val-fraction", "2")
    assert failing.returncode == 1 and failing.stderr.startswith("error: --val-fraction 2: expected a fraction")


@pytest.mark.parametrize("presets, problem", [
    ("baseline,bset", "unknown preset 'bset'"),  # refused before baseline runs, not after
    ("", "no preset"),
    ("quick,quick", "a preset named twice"),
])
def test_bench_refuses_its_presets_before_running_any(tmp_path, presets, problem):
    result = run_in_process(tmp_path, "bench", "--source", "sample", "--presets", presets)
    assert result.returncode == 1 and result.stderr.startswith(f"error: --presets {presets!r}: {problem} (expected")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "data" / "bench").exists()


@pytest.mark.parametrize("options, problem", [
    (["--presets", "quick", "--epochs", "0"], "error: --epochs 0: expected 1 to 1,000, e.g. 18\n"),
    (["--presets", "quick,default", "--dropout", "1.5"], "error: --dropout 1.5: expected"),
    (["--presets", "quick", "--source", "kaggle"], "error: --source kaggle: bench runs on data at hand, sample or a"
     " PATH to a competition zip or folder; after `make download SOURCE=kaggle` its cached zip is the default\n"),
    (["--presets", "quick", "--source", "/nowhere"], "error: --source /nowhere: no such file or folder"),  # review 57 H
    # review 58 N: the default list's baseline refused it, unnamed
    (["--dropout", "0.3"], "error: preset baseline: --dropout 0.3: the mlp network has no dropout layer; it goes with"
     " the other networks (--model); or leave baseline out of PRESETS=\n"),
    # review 59 D: refused only once quick's chain had started (after default's 20 minutes, in this order)
    (["--presets", "default,quick", "--alternate", "cnn"], "error: preset quick: --alternate cnn: a run of one model"
     " has no second model to be that network; add --final-model or --members 2 (or --alternate none); or leave"
     " quick out of PRESETS=\n"),
])
def test_bench_refuses_its_options_before_running_any_preset(tmp_path, options, problem):
    """They were refused inside each preset's child run (`preset quick failed: error: --epochs 0 ...`), after the
    presets before it had run, and `--source kaggle` downloaded in each preset's root."""
    result = run_in_process(tmp_path, "bench", *options)
    assert result.returncode == 1 and result.stderr.startswith(problem), result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "data" / "bench").exists()


def test_submit_of_a_folder_says_so(tmp_path):
    (tmp_path / "submissions").mkdir()
    result = run_in_process(tmp_path, "submit", "--file", str(tmp_path / "submissions"))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'submissions'}: a folder, expected a submission CSV\n"


@pytest.mark.parametrize("arguments, folds", [
    (["split", "--folds", "5", "--val-fraction", "0.2"], 5),
    (["all", "--preset", "best", "--val-fraction", "0.2"], 5),  # the preset's folds
    (["all", "--folds", "3", "--val-fraction", "0.2"], 3),
])
def test_a_val_fraction_that_folds_would_ignore_is_refused(tmp_path, arguments, folds):
    result = run_in_process(tmp_path, *arguments)
    assert result.returncode == 1 and result.stderr == (
        f"error: --val-fraction 0.2: the share of a holdout split (--folds 1); with --folds {folds} each fold holds"
        f" out 1/{folds} of the rows\n")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("arguments, expected", [
    (["--folds", "0"], "--folds 0: expected 1 (a holdout split) or more (cross-validation)"),
    (["--preset", "best", "--folds", "-3"], "--folds -3: expected 1 (a holdout split) or more (cross-validation)"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5: expected a fraction strictly between 0 and 1"),
    (["--folds", "1", "--val-fraction", "0"], "--val-fraction 0: expected a fraction strictly between 0 and 1"),
])
def test_a_split_option_out_of_range_is_refused_before_any_stage_runs(tmp_path, arguments, expected):
    """`all --folds 0` was refused only after download and prepare (with the competition, a download)."""
    result = run_in_process(tmp_path, "all", *arguments)
    assert result.returncode == 1 and result.stderr == f"error: {expected}\n"
    assert result.stdout == "" and not (tmp_path / "data").exists()


@pytest.mark.parametrize("arguments, expected", [
    (["--search-seed", "-1"], "--search-seed -1: expected an integer 0 or more"),  # a traceback, after the data
    (["--trials", "0"], "--trials 0: expected 1 to 1000"),  # after the data stages
    (["--trials", "20000"], "--trials 20000: expected 1 to 1000"),  # drew settings for minutes first
    (["--epochs", "0"], "--epochs 0: expected 1 to 1,000, e.g. 18"),  # after the data stages
])
def test_tune_refuses_its_options_before_any_stage_runs(tmp_path, arguments, expected):
    result = run_in_process(tmp_path, "tune", "--preset", "quick", *arguments)
    assert result.returncode == 1 and result.stderr == f"error: {expected}\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("arguments", [[], ["--folds", "1"]])
def test_an_alternate_network_on_a_run_of_one_model_is_refused_before_any_stage_runs(tmp_path, arguments):
    """Review 58 N: `--alternate resnet` on `quick` (one model) trained the plain model again as a new run."""
    result = run_in_process(tmp_path, "all", "--preset", "quick", "--alternate", "resnet", *arguments)
    assert result.returncode == 1 and result.stderr == (
        "error: --alternate resnet: a run of one model has no second model to be that network; add --final-model or"
        " --members 2 (or --alternate none)\n")
    assert not (tmp_path / "data").exists()
    tune = run_in_process(tmp_path, "tune", "--preset", "best", "--folds", "1")  # review 59 D: all's advice
    assert tune.returncode == 1 and tune.stderr == (
        "error: --alternate resnet: tune's trials each train one model on a holdout split (no model on all rows), so"
        " none would be a resnet; add --folds 2 or more or --members 2, or --alternate none\n")


@pytest.mark.parametrize("command", [["train"], ["all"], ["split", "--folds"], ["tune", "--trials"]])
def test_an_integer_beyond_any_an_option_takes_is_a_usage_error(tmp_path, command):
    """--batch-size 99999999999999999999 reached TensorFlow: a traceback once training started."""
    if command[0] in ("train", "all"):
        command = [*command, "--batch-size"]
    for value in ("99999999999999999999", "-2147483648"):
        result = run_in_process(tmp_path, *command, value)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: Invalid value for '{command[-1]}': {value} is beyond what any"
                                        " option takes (-2147483647 to 2147483647)") and result.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_ensemble_members_of_two_networks_and_tta(tmp_path):
    result = assert_ok(run_in_process(tmp_path, "all", "--preset", "quick", "--epochs", "1", "--members", "2",
                                      "--alternate", "mlp", "--alternate-width", "0.5", "--tta", "--no-report"))
    assert "model 2 of 2 (member-1, seed 43, mlp at 0.5x width)" in result.stdout
    assert "test-time augmentation" in result.stdout
    assert "train: 1 x small and 1 x mlp at 0.5x width" in result.stdout
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    assert len(run["models"]) == 2 and [part["name"] for part in run["parts"]] == ["member-0", "member-1"]
    assert [(part["architecture"], part["width"]) for part in run["parts"]] == [("small", 1.0), ("mlp", 0.5)]
    # the MLP at half width: 784 x 64 + 64 x 32 + 32 x 10 multiply-adds, counted in the run's work as such
    assert run["parts"][1]["multiply_adds"] == 784 * 64 + 64 * 32 + 32 * 10 < run["parts"][0]["multiply_adds"]
    assert all((tmp_path / path).is_file() for path in run["models"])
    # both members predict the same 240 held-out rows; the estimate is of their average, with TTA
    assert run["estimate"]["images"] == 240 and run["estimate"]["models_per_row"] == 2 and run["estimate"]["tta"]


@pytest.mark.slow
def test_final_weight_counts_the_model_on_all_rows_that_many_times_and_predicts_again_without_training(tmp_path):
    import numpy as np

    from pipeline.training.model import load_model
    from pipeline.training.prediction import predict_probabilities

    assert_ok(run_in_process(tmp_path, *QUICK_RUN, "--final-model"))  # quick's weight: 1
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    holdout, all_rows = (load_model(tmp_path / path) for path in run["models"])
    test_images = np.load(tmp_path / "data" / "prepared" / "test_images.npy")
    each = [predict_probabilities([model], test_images) for model in (holdout, all_rows)]
    saved_path = tmp_path / Path(run["models"][0]).parent / "test_probabilities.npy"
    assert np.allclose(np.load(saved_path), (each[0] + each[1]) / 2, atol=1e-5)
    # The weight is predict's: the same run predicts again, nothing is trained again.
    weighted = assert_ok(run_in_process(tmp_path, *QUICK_RUN, "--final-model", "--final-weight", "3"))
    assert "train: up to date" in weighted.stdout and "predict: up to date" not in weighted.stdout
    assert "the model on all rows counted 3 times" in weighted.stdout
    assert np.allclose(np.load(saved_path), (each[0] + 3 * each[1]) / 4, atol=1e-5)
    assert not np.allclose(each[0], each[1], atol=1e-3)  # the two models differ: the weight shows
    submission = json.loads((saved_path.parent / "submission.json").read_text())
    assert submission["final_weight"] == 3 and submission["submission"].endswith("-2.csv")
    # Stop 59's note: how the submission was predicted was on neither the page nor `runs --wide`
    assert_ok(run_in_process(tmp_path, "predict", "--final-weight", "3", "--tta"))
    page = assert_ok(run_in_process(tmp_path, "report")).stdout.split("open ")[1].split(" in a browser")[0]
    assert ".csv (with test-time augmentation; the model on all rows counted 3 times)</td>" in Path(page).read_text()
    wide = assert_ok(run_in_process(tmp_path, "runs", "--wide")).stdout
    assert "tta, all-rows x3" in wide and " all-rows " in wide  # review 60 H: the recipe column too
    assert_ok(run_in_process(tmp_path, "predict", "--final-weight", "1"))  # the first prediction, from the run cache
    assert np.allclose(np.load(saved_path), (each[0] + each[1]) / 2, atol=1e-5)
    refused = run_in_process(tmp_path, "predict", "--final-weight", "0")
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: --final-weight 0: expected a weight above 0, at most 100, e.g. 2")
    refused = run_in_process(tmp_path, "all", "--preset", "quick", "--final-weight", "2")  # quick: no final model
    assert refused.returncode == 1 and "--final-weight 2: weighs the model on all rows, which this run does not" \
        " train; add FINAL_MODEL=1" in refused.stderr and "train:" not in refused.stdout  # make's words (review 58 R)
    # Review 58 N: predict's advice named --final-model, which predict does not take
    assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "1", "--no-final-model"))
    refused = run_in_process(tmp_path, "predict", "--final-weight", "2")
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        "which this run does not train; train it again with one (`make all ... FINAL_MODEL=1`, with the run's options)")


@pytest.mark.slow
def test_folds_estimate_every_row_and_a_final_model_joins_the_submission(tmp_path):
    result = assert_ok(run_in_process(tmp_path, "all", "--preset", "quick", "--epochs", "1", "--folds", "3",
                                      "--final-model", "--alternate", "mlp", "--alternate-deskew"))
    assert "3 stratified folds of 800-800 images" in result.stdout
    assert "train: 2 x small and 2 x mlp, deskewed" in result.stdout
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    assert [part["name"] for part in run["parts"]] == ["fold-0", "fold-1", "fold-2", "all-rows"]
    # every other model is the alternate network, the model on all rows too
    assert [part["architecture"] for part in run["parts"]] == ["small", "mlp", "small", "mlp"]
    assert [part.get("deskew") for part in run["parts"]] == [None, True, None, True]
    assert [part["train_images"] for part in run["parts"]] == [1600, 1600, 1600, 2400]
    assert "validation_images" not in run["parts"][-1] and len(run["models"]) == 4
    estimate = run["estimate"]
    assert estimate["kind"] == "cross-validation" and estimate["folds"] == 3 and estimate["images"] == 2400
    assert estimate["low"] < estimate["accuracy"] < estimate["high"]
    # the estimate is the accuracy of the saved out-of-fold predictions, every row predicted once
    import numpy as np

    out_of_fold = np.load(tmp_path / Path(run["models"][0]).parent / "out_of_fold.npz")
    labels = np.load(tmp_path / "data" / "prepared" / "train_labels.npy")
    np.testing.assert_array_equal(out_of_fold["rows"], np.arange(2400))
    accuracy = float((out_of_fold["probabilities"].argmax(axis=1) == labels).mean())
    assert accuracy == pytest.approx(estimate["accuracy"])
    # the fold models' scores are part of the estimate: their mean is the estimate (equal folds)
    fold_accuracies = [part["accuracy"] for part in run["parts"][:3]]
    assert np.mean(fold_accuracies) == pytest.approx(estimate["accuracy"])
    assert estimate["model_accuracy_mean"] == pytest.approx(np.mean(fold_accuracies))
    assert estimate["model_accuracy_sd"] == pytest.approx(np.std(fold_accuracies, ddof=1))
    report_dir = next((tmp_path / "data" / "reports").glob("*/index.html")).parent
    page = (report_dir / "index.html").read_text()
    assert f"Estimated accuracy <strong>{estimate['accuracy']:.2%}</strong>" in page and "cross-validation" in page
    assert "<td>fold-1</td><td>mlp, deskewed</td>" in page and "<td>fold-2</td><td>small</td>" in page
    # the curves of every model of the ensemble, not only the first
    history_models = {line.split(",")[0] for line in (report_dir / "history.csv").read_text().splitlines()[1:]}
    assert history_models == {"fold-0", "fold-1", "fold-2", "all-rows"}
    table = assert_ok(run_in_process(tmp_path, "runs", "--wide")).stdout  # the kind is among every column
    assert f"{estimate['accuracy']:.4f}" in table and "3-fold CV" in table


@pytest.mark.slow
def test_a_killed_fold_run_redoes_only_the_unfinished_fold(tmp_path):
    options = ["--preset", "quick", "--epochs", "2", "--folds", "2", "--no-report"]
    kill_once_checkpointed(tmp_path, ["all", *options], "fold-1", completed_epochs=1)
    resumed = assert_ok(run_in_process(tmp_path, "all", *options))
    epoch_lines = [line for line in resumed.stdout.splitlines() if line.startswith("epoch ")]
    # fold-0 finished before the kill: loaded, not retrained; fold-1 goes on from its epoch 1
    assert "resuming from epoch 1 of 2" in resumed.stdout and len(epoch_lines) == 1, resumed.stdout
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    assert run["estimate"]["images"] == 2400 and len(run["models"]) == 2


@pytest.mark.slow
def test_pseudo_labels_join_only_the_model_on_all_rows_in_fewer_epochs(tmp_path, monkeypatch):
    refused = run_in_process(tmp_path, "train", "--preset", "quick", "--pseudo-label")
    assert refused.returncode == 1 and "add --final-model" in refused.stderr and "Traceback" not in refused.stderr
    # Every test image pseudo-labelled, so that the counts below are known: a few epochs of the quick models are
    # sure of only some of them at the pipeline's threshold.
    monkeypatch.setattr(train_stage, "PSEUDO_LABEL_CONFIDENCE", 0.0)
    result = assert_ok(run_in_process(tmp_path, "all", "--preset", "quick", "--epochs", "3", "--folds", "2",
                                      "--final-model", "--pseudo-label", "--alternate", "mlp", "--rare-looks", "2",
                                      "--tta", "--no-report"))
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    final = run["parts"][-1]
    assert final["name"] == "all-rows" and final["pseudo_labelled_images"] == 600 and final["train_images"] == 3000
    assert "600 of 600 test images pseudo-labelled" in result.stdout
    labelling = result.stdout.split("fold-1, seed 43")[1].split("pseudo-labelled")[0]
    assert "pass 2 of 2 done (model 2 of 2, view 1 of 1)" in labelling  # no TTA for the labels, a fifth of the work
    # 3 epochs of the 2,400 rows are 7,200 images; with the 600 test images, 2 epochs (6,000) come nearest.
    assert final["epochs"] == 2 and "epochs" not in run["parts"][0]
    assert page.parts_rows((PartSummary.from_json(final),))[0][3] == (  # the report's row
        "3000 (600 of them pseudo-labelled test images, 2 epochs)")
    assert [part["architecture"] for part in run["parts"]] == ["small", "mlp", "small"]  # the third: --model's
    assert [part["train_images"] for part in run["parts"][:2]] == [1200, 1200]  # the measured models never see them
    # Rare looks for the measured models, not for the one that learns pseudo-labels (they did not add up)
    measured, _, pseudo_labelled = result.stdout.partition("model 3 of 3 (all-rows")
    assert measured.count("rare looks: ") == 2 and "rare looks" not in pseudo_labelled
    assert "), 3 epochs\n" in measured  # no copies in these small folds: the epochs stay, said once


@pytest.mark.slow
def test_a_run_that_pseudo_labels_no_test_image_says_so(split_sample_root, monkeypatch):
    """Stop 59's note: a run with --pseudo-label whose models were sure of no test image said "0 of 600 test images
    pseudo-labelled" among its progress lines, and trained the model on all rows without them, as if nothing were
    amiss."""
    monkeypatch.setattr(train_stage, "PSEUDO_LABEL_CONFIDENCE", 1.01)  # more than any probability: none is kept
    result = assert_ok(run_in_process(split_sample_root, "train", "--preset", "quick", "--final-model",
                                      "--pseudo-label", "--quiet"))
    assert result.stderr.startswith("warning: --pseudo-label: the measured models are sure of none of the test"
                                    " images, so the models that go on learn the train rows alone"), result.stderr
    run = json.loads(next((split_sample_root / "data" / "models").glob("*/run.json")).read_text())
    assert run["parts"][-1]["pseudo_labelled_images"] == 0 and run["parts"][-1]["train_images"] == 2400


@pytest.mark.slow
def test_pseudo_tune_goes_on_from_each_measured_model_and_only_its_successor_predicts(tmp_path, monkeypatch):
    refused = run_in_process(tmp_path, "train", "--preset", "quick", "--pseudo-tune", "2")
    assert refused.returncode == 1 and "add --pseudo-label" in refused.stderr and "Traceback" not in refused.stderr
    monkeypatch.setattr(train_stage, "PSEUDO_LABEL_CONFIDENCE", 0.0)  # all 600 test images, a known count
    told_images_after = []  # what each model is told the later ones will train on, for its time left

    def fit_and_note(*args, images_after: int, **kwargs):
        told_images_after.append(images_after)
        return real_fit(*args, images_after=images_after, **kwargs)

    real_fit = parts_module.fit_one_model
    monkeypatch.setattr(parts_module, "fit_one_model", fit_and_note)
    result = assert_ok(run_in_process(tmp_path, "all", "--preset", "quick", "--epochs", "2", "--folds", "2",
                                      "--final-model", "--pseudo-label", "--pseudo-tune", "1", "--rare-looks", "2",
                                      "--no-report"))
    run = json.loads(next((tmp_path / "data" / "models").glob("*/run.json")).read_text())
    names = [part["name"] for part in run["parts"]]
    assert names == ["fold-0", "fold-1", "fold-0-tuned", "fold-1-tuned", "all-rows"]
    assert "model 3 of 5 (fold-0-tuned" in result.stdout and "and 1 more epoch of the measured models" in result.stdout
    measured, tuned = run["parts"][:2], run["parts"][2:4]
    for before, after in zip(measured, tuned):
        assert after["tuned_from"] == before["name"] and after["epochs"] == 1 and after["pseudo_labelled_images"] == 600
        assert after["train_images"] == before["train_images"] + 600 and "repeated_images" not in after  # no rare looks
        assert after["validation_images"] == before["validation_images"] == 1200  # measured on the same rows
    # The time left counts each later model at the images it really trained on: the tuned ones at 1 epoch, not 2
    trained = [(part.get("epochs") or 2) * (part["train_images"] + part.get("repeated_images", 0))
               for part in run["parts"]]
    assert told_images_after == [sum(trained[index + 1:]) for index in range(5)]
    # The run's models are the ones that predict: the tuned two and the model on all rows
    models = sorted(Path(name).name for name in run["models"])
    assert models == ["all-rows.keras", "fold-0-tuned.keras", "fold-1-tuned.keras"]
    assert sorted(path.name for path in (tmp_path / "data" / "models" / run["id"]).glob("*.keras")) == models
    # The estimate is the tuned models': their accuracies are the spread's, and their predictions the estimate's
    history = json.loads(next((tmp_path / "data" / "models").glob("*/history.json")).read_text())
    assert len(history) == 5 and len(history[2]["loss"]) == 1
    tuned_mean = sum(part["accuracy"] for part in tuned) / 2  # two folds of 1,200 rows, one model a row
    assert run["estimate"]["images"] == 2400 and run["estimate"]["accuracy"] == pytest.approx(tuned_mean)
    assert run["estimate"]["model_accuracy_mean"] == pytest.approx(tuned_mean)


def test_sample_submission_that_disagrees_with_test_csv_is_refused_before_training(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        archive.extractall(folder)
    sample = folder / "sample_submission.csv"
    sample.write_text("\n".join(sample.read_text().splitlines()[:-1]) + "\n")  # one row fewer than test.csv
    assert_ok(run_in_process(tmp_path, "download", "--source", str(folder)))
    result = run_in_process(tmp_path, "prepare")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path}/data/raw/sample_submission.csv: 599 rows, expected 600")
    assert not (tmp_path / "data" / "prepared").exists()


@pytest.mark.slow
def test_only_the_templates_ids_count_and_a_mended_template_predicts_nothing_again(tmp_path):
    """Review 57 D: a sample_submission.csv with the right ids but another header or empty labels passed prepare and
    failed predict, after the training; and a template mended or saved again predicted again, into an identical
    second file."""
    folder = tmp_path / "mine"
    folder.mkdir()
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        archive.extractall(folder)
    template = folder / "sample_submission.csv"
    template.write_text("ImageId,label\n" + "".join(f"{index}\n" for index in range(1, 601)))  # ids only
    first = assert_ok(run_in_process(tmp_path, "all", "--source", str(folder), *QUICK, "--no-report"))
    # Not "send it with `make submit`", which refuses a file of 600 rows
    assert "(600 test rows, a trial run that Kaggle cannot score: the competition has 28,000)" in first.stdout
    template.write_text("ImageId,Label\n" + "".join(f"{index},0\n" for index in range(1, 601)))  # Kaggle's own
    again = assert_ok(run_in_process(tmp_path, "all", "--source", str(folder), *QUICK, "--no-report"))
    lines = stage_lines(again.stdout)
    assert "up to date" in lines["train"] and "up to date" in lines["predict"], again.stdout
    assert len(list((tmp_path / "submissions").glob("*.csv"))) == 1, first.stdout + again.stdout


@pytest.mark.slow
def test_a_changed_source_file_is_said_with_the_source_to_download_it_from_again(tmp_path):
    """Review 57 D: prepare run alone said `up to date` after the user's own file changed (or repeated the error
    they had mended there), and the advice of the stages after it, `download` or `make all` without the source,
    downloaded the sample instead."""
    folder = tmp_path / "my data"
    folder.mkdir()
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        archive.extractall(folder)
    assert_ok(run_in_process(tmp_path, "all", "--source", str(folder), *QUICK, "--no-report"))
    test_csv = folder / "test.csv"
    test_csv.write_text(test_csv.read_text().replace("\n0,", "\n1,", 1))  # one pixel of the first test image
    quoted = f"'{folder}'"  # the path has a space: quoted, as a shell takes it
    for stage in ("prepare", "predict"):
        refused = run_in_process(tmp_path, stage)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
        assert "(my data/test.csv changed since download last ran)" in refused.stderr  # named as the record has it
        assert f"`python -m pipeline download --source {quoted}`" in refused.stderr, refused.stderr
        if stage == "predict":  # train's run needed: `make all` with its own options too
            assert f"`make all SOURCE={quoted} PRESET=quick EPOCHS=2`" in refused.stderr
        else:  # above train, `make all` would train the default preset's: not offered
            assert "make all" not in refused.stderr
    # Review 60 F: submit sent the last predict's file, of the data before, after a chain that had stopped on it (with
    # 28,000 test rows; these 600 it refused, but for their count)
    refused = run_in_process(tmp_path, "submit")
    run_id = next((tmp_path / "data" / "models").glob("*/run.json")).parent.name
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"error: {tmp_path / 'submissions' / run_id}.csv was predicted before my"
                                     " data/test.csv changed, and download has not run since: run"
                                     f" `make all SOURCE={quoted} PRESET=quick EPOCHS=2` to predict from the data as it"
                                     f" is now, or send this file as it is with `make submit RUN={run_id}`")


@pytest.mark.slow
def test_the_page_names_the_train_csv_lines_of_the_file_as_it_is_now(tmp_path):
    """Review 60 F: a blank line added to train.csv leaves the same arrays, so every stage was up to date, the report
    too: its page named the line each wrong digit had before, one above the digit now."""
    folder = tmp_path / "mine"
    folder.mkdir()
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        archive.extractall(folder)

    def wrong_lines() -> list[int]:
        most_wrong = next((tmp_path / "data" / "reports").glob("*/most_wrong.csv")).read_text().splitlines()
        return [int(line.split(",")[1]) for line in most_wrong[1:]]

    assert_ok(run_in_process(tmp_path, "all", "--source", str(folder), *QUICK))
    before = wrong_lines()
    train_csv = folder / "train.csv"
    lines = train_csv.read_text().splitlines(keepends=True)
    train_csv.write_text("".join([*lines[:2], "\n", *lines[2:]]))  # a blank line after the first digit (line 2)
    again = assert_ok(run_in_process(tmp_path, "all", "--source", str(folder), *QUICK))
    lines = stage_lines(again.stdout)
    assert "up to date" in lines["train"] and "up to date" not in lines["report"], again.stdout
    assert before and wrong_lines() == [line + (line > 2) for line in before]


def test_own_files_put_in_data_raw_by_hand_are_never_replaced_by_a_download(tmp_path):
    """Review 57 D: train.csv and test.csv copied into data/raw/ by hand were prepared, then replaced by the bundled
    sample at the next `make all`, without a word and with no copy kept anywhere."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        for name in ("train.csv", "test.csv"):
            rows = archive.read(name).decode().splitlines(keepends=True)
            (raw / name).write_text("".join(rows[:1201]))  # the user's own: the first 1,200 rows (test.csv has 600)
    before = {name: (raw / name).read_bytes() for name in ("train.csv", "test.csv")}
    assert "1200 train and 600 test images" in assert_ok(run_in_process(tmp_path, "prepare")).stdout
    refused = run_in_process(tmp_path, "all", *QUICK)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"error: {raw / 'train.csv'}: not written by download (no record of it)")
    assert "`make all SOURCE=that-folder`" in refused.stderr
    assert {name: (raw / name).read_bytes() for name in ("train.csv", "test.csv")} == before


CTRL_C_IN_DOWNLOAD = """
import os, runpy, sys
from pipeline.core import cache
from pipeline.stages import download
real_replace, moves, real_write_json, when = os.replace, [], cache.write_json, sys.argv[1]
def replace(*args):  # the second of its moves into data/raw
    moves.append(args)
    if len(moves) == 2 and when == "move":
        raise KeyboardInterrupt
    return real_replace(*args)
def write_json(path, value):  # every file moved in, before its record
    if path.name == "download.json" and when == "record":
        raise KeyboardInterrupt
    return real_write_json(path, value)
download.os.replace, cache.write_json = replace, write_json
sys.argv = ["digit-recognizer", "download"]
runpy.run_module("pipeline", run_name="__main__")
"""


@pytest.mark.parametrize("when", ["move", "record"])
def test_a_first_download_cut_short_while_moving_its_files_in_is_done_again(tmp_path, when):
    """Review 58 L: Ctrl-C or a kill between download's renames into data/raw/ (no record yet) left files that every
    later run refused as the user's own ("not written by download"); review 58 R: also between the last rename and the
    stage's record."""
    cut = subprocess.run([sys.executable, "-c", CTRL_C_IN_DOWNLOAD, when], cwd=PROJECT_ROOT,
                         env=pipeline_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert cut.returncode == 130 and list((tmp_path / "data" / "raw").glob("*.csv")), cut.stderr
    assert not (tmp_path / "data" / ".cache" / "download.json").exists()
    again = assert_ok(run_in_process(tmp_path, "download"))
    assert "sample_submission.csv, test.csv, train.csv in" in again.stdout
    assert sorted(path.name for path in (tmp_path / "data" / "raw").iterdir()) == [
        "sample_submission.csv", "test.csv", "train.csv"]  # the mark too is gone once the record is written


@pytest.mark.parametrize("command", [["runs"], ["report"], ["predict"], ["train", "--preset", "quick"],
                                     ["runs", "diff", "a", "b"]])
def test_a_file_as_pipeline_root_is_one_line(tmp_path, command):
    """Review 57 E: PIPELINE_ROOT set to a file (a zip, a CSV) ended these in a NotADirectoryError traceback."""
    file = tmp_path / "digit-recognizer.zip"
    file.write_text("x")
    result = run_in_process(file, *command)
    assert result.returncode == 1 and result.stderr == (
        f"error: PIPELINE_ROOT {file}: a file, expected a folder (where the pipeline keeps data/ and submissions/)\n")


def test_a_quoted_tilde_in_pipeline_root_is_the_home_folder_and_a_path_the_output_cannot_encode_is_escaped(tmp_path):
    """Review 57 E: PIPELINE_ROOT='~/x' made a folder named ~ in the current one; with an ASCII output, a root named
    with an accent ended the command in a UnicodeEncodeError traceback, its work done."""
    result = run_pipeline(tmp_path, "download", env={"PIPELINE_ROOT": "~/été", "HOME": str(tmp_path),
                                                     "PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "été" / "data" / "raw" / "train.csv").is_file() and not (PROJECT_ROOT / "~").exists()
    assert f"{tmp_path}/\\xe9t\\xe9/data/raw" in result.stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_an_output_on_a_full_disk_is_named_as_the_output(tmp_path):
    """Review 57 E: `make all > log` on a full disk said a file under the pipeline's folders could not be written,
    and to free space there, where there was plenty."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "pipeline", "download"], cwd=PROJECT_ROOT, stdout=full,
                                stderr=subprocess.PIPE, text=True, env=pipeline_environment(tmp_path), timeout=120)
    assert result.returncode == 1 and result.stderr.startswith(
        "error: the command's output (standard output): cannot write (No space left on device)"), result.stderr


def test_the_sample_in_place_of_a_kept_competition_zip_is_warned_of(tmp_path):
    """Review 57 F: in a shell without the Kaggle credentials, `make all` replaced the competition's data by the
    sample's without a word, though data/raw kept the competition's zip."""
    import shutil

    kept = tmp_path / "data" / "raw" / "digit-recognizer.zip"
    kept.parent.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip", kept)
    result = assert_ok(run_in_process(tmp_path, "download"))
    assert f"warning: {kept} holds the competition's files from an earlier download" in result.stderr
    assert f"(SOURCE={kept})" in result.stderr


@pytest.mark.slow
def test_the_advice_to_train_again_names_the_runs_own_options(tmp_path):
    """Review 57 H: after a run folder was deleted, or a new split, the advice was `train` or `make all`: the default
    preset's 20 minutes, where the run's own options bring it back from the run cache in a second."""
    import shutil

    assert_ok(run_in_process(tmp_path, "all", *QUICK, "--folds", "2", "--no-report"))
    run_folder = next((tmp_path / "data" / "models").glob("*/run.json")).parent
    shutil.rmtree(run_folder)
    refused = run_in_process(tmp_path, "predict")
    assert refused.returncode == 1 and refused.stderr.endswith(
        "run `python -m pipeline train --preset quick --epochs 2` first\n"), refused.stderr
    back = assert_ok(run_in_process(tmp_path, "train", "--preset", "quick", "--epochs", "2"))
    assert "train: restored from the run cache" in back.stdout
    assert_ok(run_in_process(tmp_path, "split", "--seed", "7"))
    stale = run_in_process(tmp_path, "predict")  # (report makes the run's page as it was trained: review 57 H)
    # Review 58 K: not `make all PRESET=quick EPOCHS=2 FOLDS=2` besides, which went back to the run's split and run
    # where the user had just made a new one
    assert stale.returncode == 1 and stale.stderr.endswith(
        "run `python -m pipeline train --preset quick --epochs 2` and the stages after it\n"), stale.stderr


def test_make_passes_a_source_path_with_spaces_and_quotes(tmp_path):
    """Issue 9: `make all SOURCE="a path/with space.zip"` split the path at the space."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    source = tmp_path / "a path" / "it's here.zip"
    source.parent.mkdir()
    shutil.copyfile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip", source)
    root = tmp_path / "project"
    environment = {**os.environ, "PIPELINE_ROOT": str(root)}
    # -o: never (re)build the virtual environment here; PYTHON: the interpreter running the tests.
    result = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", f"PYTHON={sys.executable}",
                             "download", f"SOURCE={source}"],
                            cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((root / "data" / ".cache" / "download.json").read_text())
    assert record["extra"]["source"] == "zip" and (root / "data" / "raw" / "train.csv").is_file()
    assert str(source) in json.dumps(record)


def test_make_quotes_every_option_and_keeps_the_switches():
    """Values are one quoted shell word each (FOLDS and SEED too); FINAL_MODEL, PSEUDO_LABEL and TTA
    are switches, 1 or 0, that give --NAME or --no-NAME."""
    import shlex
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "PYTHON=python", "all",
                             "SOURCE=a b/it's.zip", "FOLDS=3", "SEED=7", "FINAL_MODEL=1", "PSEUDO_LABEL=0", "TTA=1"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    words = shlex.split(result.stdout.strip().splitlines()[-1])
    assert words[words.index("--source") + 1] == "a b/it's.zip"
    assert words[words.index("--folds") + 1] == "3" and words[words.index("--seed") + 1] == "7"
    assert "--final-model" in words and "--no-pseudo-label" in words and "--tta" in words


@pytest.mark.slow
def test_moved_checkout_is_up_to_date_and_records_hold_no_old_path(finished_root, tmp_path):
    """Issue 9: records and run.json held absolute paths, so a moved checkout pointed at the old place."""
    import shutil

    before, _ = finished_root
    after = tmp_path / "moved"
    shutil.copytree(before, after, symlinks=True)  # a copy: the other tests still read the original
    again = assert_ok(run_in_process(after, "all", *QUICK))
    lines = stage_lines(again.stdout)
    assert all("up to date" in lines[stage] for stage in STAGES), again.stdout
    written = [path for path in after.rglob("*") if path.is_file() and path.suffix in (".json", ".jsonl", ".html")]
    assert written and not [path for path in written if str(before) in path.read_text(errors="replace")]
    run_file = next((after / "data" / "models").glob("*/run.json"))
    run, predicted = json.loads(run_file.read_text()), json.loads((run_file.parent / "submission.json").read_text())
    assert (after / predicted["submission"]).is_file() and all((after / path).is_file() for path in run["models"])


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_ctrl_c_in_training_says_it_can_be_resumed(split_sample_root, sent):
    """Issue 9: Ctrl-C exited 130 with nothing printed. Review 57 E: SIGTERM (docker stop, timeout) ended it with
    no line at all (exit 143); it is taken as a Ctrl-C. Review 58 L: SIGHUP too (a closed terminal, exit 129)."""
    tmp_path = split_sample_root  # download, prepare and split done
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # SIGHUP as a terminal leaves it: a suite started under nohup would pass it on ignored
    default_hangup = {"preexec_fn": lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL)}
    process = start_pipeline(tmp_path, "train", "--preset", "quick", "--epochs", "4", env={"TMPDIR": str(temporary)},
                             **default_hangup)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if list((tmp_path / "data" / "models" / ".checkpoints").glob("*/member-0/state.json")):
            break
        time.sleep(0.05)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: ") and "resumes" in stderr
    # (that it resumes: test_faults.py::test_sigkill_then_rerun_gives_the_uninterrupted_result)
    assert list((tmp_path / "data" / "models" / ".checkpoints").glob("*/member-0/state.json"))
    # TensorFlow's autograph files, which the quick exit after Ctrl-C left in the temporary folder, 3-6 a time
    assert not list(temporary.iterdir())


@pytest.mark.parametrize("credentials", [True, False])
def test_a_run_on_the_sample_asked_for_with_credentials_set_up_says_to_leave_source_out(quick_run_root, credentials):
    """Review 58 K: `make all SOURCE=sample` with working credentials was told to set up Kaggle credentials."""
    env = {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": "0" * 32} if credentials else None
    result = assert_ok(run_in_process(quick_run_root, *QUICK_RUN, "--source", "sample", env=env))
    last = result.stdout.splitlines()[-1]
    assert "from the bundled sample (600 test rows, a trial run that Kaggle cannot score); for the competition's" \
           " data, " in last
    if credentials:
        assert last.endswith("run the same command without SOURCE=sample: Kaggle credentials are set up"), last
    else:
        assert "set up Kaggle credentials (README, 'Kaggle credentials')" in last, last


def test_a_killed_commands_temporary_folder_is_removed_by_the_next_command(tmp_path):
    """Review 57: a SIGKILLed command (the OOM killer, a test's kill) could not remove its digit-recognizer-* folder;
    43 were left in /tmp by the end of a stop. The next command removes it, and not a running command's."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environment = pipeline_environment(tmp_path, {"TMPDIR": str(temporary)})
    hold = ("import tempfile, time; from pipeline import cli_support; cli_support.private_temporary_folder(); "
            "print(tempfile.tempdir, flush=True); time.sleep(600)")
    killed, running = (subprocess.Popen([sys.executable, "-c", hold], cwd=PROJECT_ROOT, env=environment,
                                        stdout=subprocess.PIPE, text=True) for _ in range(2))
    try:
        killed_folder, running_folder = (Path(process.stdout.readline().strip()) for process in (killed, running))
        assert killed_folder.parent == running_folder.parent == temporary
        killed.kill()
        killed.wait(timeout=30)
        an_hour_ago = time.time() - 3600
        for folder in (killed_folder, running_folder):
            os.utime(folder, (an_hour_ago, an_hour_ago))
        assert_ok(run_pipeline(tmp_path, "runs", env={"TMPDIR": str(temporary)}))
        assert list(temporary.iterdir()) == [running_folder]  # the killed one's gone, and runs' own too
    finally:
        for process in (killed, running):
            process.kill()
            process.wait(timeout=30)


# A Ctrl-C in `runs` (its table raises KeyboardInterrupt), and with SECOND a second Ctrl-C as the line is printed.
CTRL_C_IN_RUNS = """
import runpy, signal, sys, typer
from pipeline.tools import runs_table
def ctrl_c(*args, **options):
    raise KeyboardInterrupt
runs_table.show_runs = ctrl_c
if "SECOND" in sys.argv:
    real_echo = typer.echo
    def echo_after_another_ctrl_c(*args, **options):
        signal.raise_signal(signal.SIGINT)
        real_echo(*args, **options)
    typer.echo = echo_after_another_ctrl_c
sys.argv = ["digit-recognizer", "runs"]
runpy.run_module("pipeline", run_name="__main__")
"""


@pytest.mark.parametrize("second", [False, True], ids=["once", "twice"])
def test_ctrl_c_in_a_command_that_trains_nothing_says_nothing_of_training_and_a_second_is_ignored(tmp_path, second):
    """Review 58 L: every command's Ctrl-C line said "training resumes from its last completed epoch"; a second
    Ctrl-C while the first one's line was printed (a held key repeats every 30 ms) gave a traceback."""
    result = subprocess.run([sys.executable, "-c", CTRL_C_IN_RUNS, *(["SECOND"] if second else [])], cwd=PROJECT_ROOT,
                            env=pipeline_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and result.stderr == (
        "interrupted: nothing half-written was kept; run the same command again to go on\n"), result.stderr


# A SIGINT sent while pipeline.cli imports typer: the Ctrl-C of a user who pressed it in the first tenths of a second.
CTRL_C_WHILE_IMPORTING = """
import builtins, os, runpy, signal, sys
real_import = builtins.__import__
def import_then_ctrl_c(name, *args, **options):
    if name == "typer":
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **options)
builtins.__import__ = import_then_ctrl_c
sys.argv = ["digit-recognizer", "--help"]
"""


@pytest.mark.parametrize("start", ["runpy.run_module('pipeline', run_name='__main__')",
                                   "from pipeline.__main__ import main; main()"], ids=["python -m", "console script"])
def test_ctrl_c_while_the_cli_imports_is_one_line_not_a_traceback(tmp_path, start):
    process = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING + start], cwd=PROJECT_ROOT,
                             env=pipeline_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert process.returncode == 130, process.stderr
    assert process.stderr.strip() == "interrupted: nothing was done"
    assert not process.stdout  # no help printed: the command never started


def test_clean_is_a_command_too_for_the_installed_package(tmp_path):
    """`runs` said `make clean-cache` empties the store, and an installed `digit-recognizer` has no Makefile."""
    data = tmp_path / "data"
    for folder in ("models/run", ".cache/store/objects", "sample"):
        (data / folder).mkdir(parents=True)
    (data / "submissions_sent.json").write_text("{}")
    assert run_in_process(tmp_path, "clean", "--cache").returncode == 0
    assert not (data / ".cache" / "store").exists() and (data / "models" / "run").is_dir()
    assert run_in_process(tmp_path, "clean").returncode == 0
    assert sorted(path.name for path in data.iterdir()) == [".pipeline.lock", "sample", "submissions_sent.json"]


def test_clean_says_what_it_removed_nothing_when_nothing_and_is_quiet_with_quiet(tmp_path):
    """It said "removed" of a store already empty, and --quiet (anywhere: errors only) was ignored."""
    data = tmp_path / "data"
    for folder in ("models/run", ".cache/store/objects"):
        (data / folder).mkdir(parents=True)
    assert run_in_process(tmp_path, "clean", "--cache", "--quiet").stdout == ""
    assert run_in_process(tmp_path, "clean", "--cache").stdout == (
        f"clean: nothing to remove: the run cache {data / '.cache' / 'store'} is empty\n")
    removed = run_in_process(tmp_path, "clean").stdout
    assert removed == f"clean: removed what the pipeline wrote in {data}: models, .cache\n"


def test_every_option_of_all_has_its_make_variable_listed_in_make_help():
    import typer.main

    from pipeline.cli import app

    command = typer.main.get_command(app).commands["all"]
    make = ["make", "--no-print-directory"]  # also when `make test` runs this test
    make_help = subprocess.run([*make, "-s", "help"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout
    for parameter in command.params:
        if parameter.name == "help":
            continue
        variable, option = parameter.name.upper(), "--" + parameter.name.replace("_", "-")
        assert f"{variable}=" in make_help, variable
        value = "1" if parameter.is_flag else "7"
        dry_run = subprocess.run([*make, "-n", "all", f"{variable}={value}"], cwd=PROJECT_ROOT,
                                 capture_output=True, text=True).stdout
        command_line = next(line for line in dry_run.splitlines() if "-m pipeline" in line)
        assert option in command_line, (variable, dry_run)


def test_split_seed_help_describes_only_the_split():
    result = run_in_process(PROJECT_ROOT / "unused", "split", "--help", env={"COLUMNS": "200"})
    seed_help = next(line for line in result.stdout.splitlines() if "--seed" in line)
    assert "split" in seed_help and "initialisation" not in seed_help and "augmentation" not in seed_help


def test_shell_completion_is_refused_for_python_m_pipeline_and_nothing_is_installed(tmp_path):
    """It wrote a script registered for `python`, `-m` and `pipeline`, sourced from ~/.bashrc: TAB on any python
    line then printed `env: '_PYTHON': No such file or directory`."""
    home = tmp_path / "home"
    home.mkdir()
    result = run_pipeline(tmp_path, "--install-completion", "bash", env={"HOME": str(home), "SHELL": "/bin/bash"})
    assert result.returncode == 2 and result.stderr == (
        "error: --install-completion: shell completion is the installed command's, `digit-recognizer"
        " --install-completion` (pip install -e .), not python -m pipeline's\n")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("command, expected", [
    (["report"], "error: no train output yet, or it changed since: run `python -m pipeline train` first\n"),
    (["prepare"], "error: no download output yet, or it changed since: run `python -m pipeline download` first\n"),
    (["blend", "a", "b"], "error: blend: no runs in {root}/data/models yet (see `python -m pipeline runs`)\n"),
    (["report", "--run", "20260101-120000-cnn"],
     "error: --run 20260101-120000-cnn: no runs in {root}/data/models yet\n"),
])
def test_a_command_typed_where_nothing_ran_leaves_no_data_folder(tmp_path, command, expected):
    """Typed by mistake in a home folder, it left ~/data/.pipeline.lock behind."""
    result = run_in_process(tmp_path, *command)
    assert result.returncode == 1 and result.stderr == expected.format(root=tmp_path)
    assert list(tmp_path.iterdir()) == []
