"""Progress: a line within an epoch on a terminal (a pty), one line per epoch into a pipe."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import PROJECT_ROOT, run_pipeline


def run_on_a_terminal(root, *args, env: dict, timeout: float = 300) -> str:
    """`python -m pipeline ARGS` with stdout on a pseudo-terminal, as in a user's shell; everything it printed."""
    controller, terminal = pty.openpty()
    environment = {**os.environ, "PIPELINE_ROOT": str(root), "KAGGLE_CONFIG_DIR": str(root / "no-kaggle"), **env}
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
    within = [line for line in lines if line.startswith("epoch 1/2: batch ")]
    assert within, seen
    # ... and before the epoch's own line
    assert lines.index(within[0]) < next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2: loss"))
    # prediction with test-time augmentation: a line per pass
    assert "predict: pass 5 of 5 done" in seen
    assert "report: picture 6 of 6" in seen  # the report's drawing too

    piped = run_pipeline(root, "train", "--preset", "quick", "--epochs", "2", "--seed", "7", env=often)
    assert piped.returncode == 0, piped.stderr
    epoch_lines = [line for line in piped.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("loss" in line for line in epoch_lines), piped.stdout
    assert ": batch " not in piped.stdout  # no within-epoch lines into a pipe
