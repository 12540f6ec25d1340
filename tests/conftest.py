"""Shared fixtures: a private PIPELINE_ROOT per test, the CLI run as a user runs it, small CSVs."""

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from pipeline.core import config  # noqa: E402


def pipeline_environment(root: Path, env: dict | None = None) -> dict:
    """The environment of a pipeline a test starts: outputs under root, output unbuffered (tests read it line by
    line), and never the developer's real Kaggle credentials unless env gives some."""
    environment = {**os.environ, "PIPELINE_ROOT": str(root), "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        if not env or name not in env:
            environment.pop(name, None)
    environment.setdefault("KAGGLE_CONFIG_DIR", str(root / "no-kaggle-config"))
    return environment


def start_pipeline(root: Path, *args: str, env: dict | None = None, project: Path = PROJECT_ROOT,
                   **popen_options) -> subprocess.Popen:
    """`python -m pipeline ARGS` started in the background (to kill or interrupt it); stdout and stderr are pipes
    unless popen_options say otherwise."""
    popen_options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen_options}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=project,
                            env=pipeline_environment(root, env), text=True, **popen_options)


def run_pipeline(root: Path, *args: str, env: dict | None = None, timeout: float = 300,
                 project: Path = PROJECT_ROOT, **run_options) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` of the project (this one, or a copy) with its outputs under root, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=project, env=pipeline_environment(root, env),
                          capture_output=True, text=True, timeout=timeout, **run_options)


@pytest.fixture
def pipeline_root(tmp_path, monkeypatch):
    """A private project root; the in-process config.paths() points at it too."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("PIPELINE_ROOT", str(root))
    return root


def csv_text(rows: list[list], header: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def sample_frames():
    """The bundled sample's train.csv and test.csv as text."""
    with zipfile.ZipFile(config.SAMPLE_ARCHIVE) as archive:
        return archive.read("train.csv").decode(), archive.read("test.csv").decode()


@pytest.fixture
def small_train_csv(tmp_path):
    """A valid train.csv of 30 random images (3 per digit)."""
    from pipeline.stages.prepare import TRAIN_HEADER

    rng = np.random.default_rng(0)
    rows = [[digit, *rng.integers(0, 256, 784).tolist()] for digit in range(10) for _ in range(3)]
    path = tmp_path / "train.csv"
    path.write_text(csv_text(rows, TRAIN_HEADER))
    return path
