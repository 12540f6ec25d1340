"""Progress: a line within an epoch on a terminal (a pty), one line per epoch into a pipe."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import PROJECT_ROOT, pipeline_environment, run_pipeline


def run_on_a_terminal(root, *args, env: dict, timeout: float = 300) -> str:
    """`python -m pipeline ARGS` with stdout on a pseudo-terminal, as in a user's shell; everything it printed."""
    controller, terminal = pty.openpty()
    environment = pipeline_environment(root, env)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=PROJECT_ROOT, env=environment,
                               stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    output, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    os.close(controller)
    assert process.returncode == 0, output.decode(errors="replace")
    return output.decode(errors="replace").replace("\r\n", "\n")


@pytest.mark.slow
def test_a_terminal_sees_lines_within_an_epoch_and_a_pipe_one_line_per_epoch(tmp_path):
    # The sample's epochs last seconds: a line every 0.5 s shows what a full-size epoch shows every 10 s.
    often = {"PIPELINE_PROGRESS_SECONDS": "0.5"}
    root = tmp_path / "project"
    seen = run_on_a_terminal(root, "all", "--preset", "quick", "--epochs", "2", "--tta", env=often)
    lines = seen.splitlines()
    # within the epoch: a batch, the graph being built, or the validation rows being checked
    within = [line for line in lines if line.startswith("epoch 1/2: ") and not line.startswith("epoch 1/2: loss")]
    assert within, seen
    # ... and before the epoch's own line
    assert lines.index(within[0]) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2: loss"))
    # prediction with test-time augmentation: a line per pass
    assert "predict: pass 5 of 5 done" in seen
    assert "report: picture 6 of 6" in seen  # the report's drawing too

    piped = run_pipeline(root, "train", "--preset", "quick", "--epochs", "2", "--seed", "7", "--width", "1.5",
                         env=often)
    assert piped.returncode == 0, piped.stderr
    assert "train: 1 x small at 1.5x width, 2 epochs" in piped.stdout  # a wider network says so
    epoch_lines = [line for line in piped.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("loss" in line for line in epoch_lines), piped.stdout
    assert ": batch " not in piped.stdout  # no within-epoch lines into a pipe


def test_the_ticker_speaks_while_no_batch_ends_and_stops_when_told(monkeypatch):
    # A graph being built ends no batch for many seconds: the lines come from a thread, counted from the
    # last line anyone printed, and end with the fit (or when the caller stops them after an error).
    from pipeline.core import progress

    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "INTERVAL_S", 0.2)
    lines = []

    def soon(condition):  # polled, not a fixed sleep: the thread may be late on a busy machine
        deadline = time.time() + 10
        while time.time() < deadline and not condition():
            time.sleep(0.05)
        return condition()

    ticker = progress.batch_ticker(lines.append, "epoch 1/3", 50)
    ticker.on_epoch_begin(0)
    ticker.on_train_begin()
    assert soon(lambda: lines) and lines[0].startswith("epoch 1/3: building the graph, batch 1 of 50"), lines
    ticker.on_train_batch_end(0)
    ticker.on_train_batch_end(1)
    assert soon(lambda: any(line.startswith("epoch 1/3: batch 3 of 50, ") for line in lines)), lines
    ticker.on_test_begin()
    assert soon(lambda: lines[-1].startswith("epoch 1/3: checking the validation rows")), lines
    ticker.stop()
    count = len(lines)
    time.sleep(0.5)
    assert len(lines) == count  # stopped: silent


def test_no_dataset_of_training_or_prediction_starts_tf_datas_autotuning_thread():
    # With it, dropping an epoch's iterator held Python's lock for 19-47 s on a busy machine (docs/experiments.md).
    import numpy as np

    from pipeline.training import augment

    images, labels = np.zeros((10, 28, 28, 1), np.float32), np.arange(10) % 10
    for dataset in (augment.make_training_dataset(images, labels, 4, 0, 0),
                    augment.make_evaluation_dataset(images, labels), augment.make_evaluation_dataset(images)):
        assert dataset.options().autotune.enabled is False


def test_a_warning_is_given_once_a_command(capsys):
    """tune's trials train in one command: each gave its own copy of the same warning (an emulated precision)."""
    from pipeline.core.console import Console

    console = Console(quiet=True)
    for message in ("the first", "the second", "the first"):
        console.warn(message)
    assert capsys.readouterr().err == "warning: the first\nwarning: the second\n"
