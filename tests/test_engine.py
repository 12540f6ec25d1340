"""The Ray engine (folds as tasks, killed tasks retried) and `tune`, on the bundled sample, against the
sequential chain. Ray starts a real local instance each time (a few seconds)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from conftest import PROJECT_ROOT, run_pipeline
from pipeline import tune
from pipeline.engine import Engine
from pipeline.errors import PipelineError

# Two folds of the quick preset; 5 epochs leave time to kill a task half way.
CHAIN = ("all", "--preset", "quick", "--folds", "2", "--epochs", "5", "--no-report")


def outputs(root):
    run_file = next((root / "data" / "models").glob("*/run.json"))
    out_of_fold = np.load(run_file.parent / "out_of_fold.npz")
    submission = pd.read_csv(next((root / "submissions").glob("*.csv")))
    return json.loads(run_file.read_text()), out_of_fold["probabilities"], submission["Label"].to_numpy()


# Each of two Ray workers gets one CPU, so TensorFlow runs one thread in it. The thread count changes
# the order of a convolution's sums on some CPUs (seen with AVX-512: 4e-7 after the first model, 0.011
# after the second, as training amplifies it), so the chain to compare with runs one thread too.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1"}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequential")
    result = run_pipeline(root, *CHAIN, env=ONE_THREAD, timeout=600)
    assert result.returncode == 0, result.stderr
    return outputs(root)


@pytest.mark.slow
def test_two_folds_as_ray_tasks_give_the_sequential_predictions(sequential, tmp_path):
    result = run_pipeline(tmp_path, *CHAIN, "--engine", "ray", "--workers", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "engine: 2 tasks on Ray (1 node" in result.stdout and "2 at once" in result.stdout
    workers = {line.split("pid=")[1].split(")")[0] for line in result.stdout.splitlines() if "(train_part pid=" in line}
    assert len(workers) == 2  # each fold in a worker process of its own
    run, probabilities, labels = outputs(tmp_path)
    sequential_run, sequential_probabilities, sequential_labels = sequential
    assert run["engine"] == "ray" and sequential_run["engine"] == "local"
    assert [part["seed"] for part in run["parts"]] == [part["seed"] for part in sequential_run["parts"]]
    np.testing.assert_allclose(probabilities, sequential_probabilities, atol=1e-4)
    assert (labels == sequential_labels).all()
    assert run["estimate"]["errors"] == sequential_run["estimate"]["errors"]


@pytest.mark.slow
def test_a_task_killed_half_way_is_retried_from_its_checkpoint_and_the_chain_finishes(sequential, tmp_path):
    environment = {**os.environ, "PIPELINE_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1",
                   "KAGGLE_CONFIG_DIR": str(tmp_path / "no-kaggle-config")}
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *CHAIN, "--engine", "ray", "--workers", "2"],
                               cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and process.poll() is None:
        for state_file in (tmp_path / "data").glob("models/.checkpoints/*/fold-0/state.json"):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if 1 <= state["completed_epochs"] < 4:
                killed = state["pid"]
                os.kill(killed, signal.SIGKILL)  # the worker process itself, as a crash or the OOM killer would
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=600)
    assert killed is not None and killed != process.pid, stdout
    assert process.returncode == 0, stderr
    assert "resuming from epoch" in stdout  # the retried task went on from the dead one's checkpoint
    run, probabilities, labels = outputs(tmp_path)
    fold_0 = next(part for part in run["parts"] if part["name"] == "fold-0")
    assert f"pid {killed}" not in fold_0["worker"]  # finished by another worker
    np.testing.assert_allclose(probabilities, sequential[1], atol=1e-4)
    assert (labels == sequential[2]).all()


@pytest.mark.slow
def test_tune_runs_trials_in_parallel_and_prints_options_that_restore_the_best(tmp_path):
    result = run_pipeline(tmp_path, "tune", "--preset", "quick", "--trials", "3", "--workers", "2", timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    first_finished = next(index for index, line in enumerate(lines) if line.startswith("train: run "))
    assert any(line.startswith("tune: trial 2 of 3") for line in lines[:first_finished]), result.stdout  # side by side
    best = next(line for line in lines if line.startswith("tune: best trial "))
    table = [line for line in lines if line[:1].isdigit() and "holdout" in line]
    assert len(table) == 3
    runs = run_pipeline(tmp_path, "runs")
    assert runs.stdout.count("quick") >= 3  # every trial is a run
    options = best.split(": ", 2)[2].split(" (")[0].split()
    again = run_pipeline(tmp_path, "all", "--preset", "quick", *options, "--no-final-model", "--no-report")
    assert again.returncode == 0, again.stderr
    assert "train: restored from the run cache" in again.stdout
    assert table[0].split()[2] in again.stdout  # the best trial's run, first in the table


def test_trials_start_from_the_preset_and_repeat_with_their_seed():
    base = {"learning_rate": 2e-3, "epochs": 18, "augmentation": 1.0, "dropout": 0.4, "width": 1.0}
    trials = tune.sample_trials(base, 6, seed=3)
    assert trials[0] == base and len(trials) == 6
    assert all(trial != other for index, trial in enumerate(trials) for other in trials[index + 1:])
    assert trials == tune.sample_trials(base, 6, seed=3) and trials != tune.sample_trials(base, 6, seed=4)
    assert all(12 <= trial["epochs"] <= 24 and 2e-3 / 3 <= trial["learning_rate"] <= 2e-3 * 2.1 for trial in trials)
    assert tune.cli_options(base) == "--learning-rate 0.002 --epochs 18 --augmentation 1 --dropout 0.4 --width 1"
    assert tune.make_options(base) == "LEARNING_RATE=0.002 EPOCHS=18 AUGMENTATION=1 DROPOUT=0.4 WIDTH=1"
    with pytest.raises(PipelineError, match="--trials 0"):
        tune.sample_trials(base, 0, seed=0)


def test_engine_options_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(PipelineError, match="--workers 0"):
        Engine("ray", workers=0).check()
    result = run_pipeline(tmp_path, "all", "--preset", "quick", "--workers", "2")
    assert result.returncode == 1 and result.stderr.strip() == "error: --workers and --ray-address go with --engine ray"
    assert not (tmp_path / "data" / "raw").exists()


def test_asking_for_a_gpu_where_there_is_none_fails_in_one_line_before_any_work(tmp_path):
    result = run_pipeline(tmp_path, "all", "--preset", "quick", "--device", "gpu", env={"CUDA_VISIBLE_DEVICES": "-1"})
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: --device gpu: TensorFlow finds no GPU here (it needs an NVIDIA driver and the CUDA libraries:"
        " `make venv GPU=1`); use --device auto or cpu"]
    assert not (tmp_path / "data" / "raw").exists()
