"""Shared fixtures: a private PIPELINE_ROOT per test, the CLI run as a user runs it, small CSVs."""

import atexit
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from hypothesis import settings as hypothesis_settings
from hypothesis.configuration import set_hypothesis_home_dir

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

# What the suite's processes would write outside their tests' folders goes to a folder of the session's own, removed
# at its end: matplotlib's and Keras's files (~/.cache/matplotlib, ~/.keras), and the temporary folders of the
# pipelines the tests kill (a SIGKILLed command cannot remove its own). Set before anything imports either library.
SUITE_FOLDER = Path(tempfile.mkdtemp(prefix="pipeline-suite-"))
atexit.register(shutil.rmtree, SUITE_FOLDER, ignore_errors=True)
(SUITE_FOLDER / "tmp").mkdir()
(SUITE_FOLDER / "home").mkdir()  # the pipelines' HOME: never the developer's ~/.kaggle
os.environ["MPLCONFIGDIR"] = str(SUITE_FOLDER / "matplotlib")
os.environ["KERAS_HOME"] = str(SUITE_FOLDER / "keras")
for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):  # never the developer's real Kaggle account
    os.environ.pop(name, None)

from pipeline.core import config  # noqa: E402

# Hypothesis keeps no example database, and its other files go to the session's folder: it wrote .hypothesis/ into
# the checkout.
set_hypothesis_home_dir(SUITE_FOLDER / "hypothesis")
hypothesis_settings.register_profile("suite", database=None)
hypothesis_settings.load_profile("suite")

# A suite started in the background (`nohup make test &`) inherits Ctrl-C ignored, and so would every pipeline it
# starts: the tests that press Ctrl-C need it as a terminal gives it (a handler here, so the children get the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pipeline_environment(root: Path, env: dict | None = None) -> dict:
    """The environment of a pipeline a test starts: outputs under root, output unbuffered (tests read it line by
    line), temporary files in the session's folder, and never the developer's real Kaggle credentials unless env
    gives some."""
    # HOME too: the client reads ~/.kaggle/access_token whatever KAGGLE_CONFIG_DIR says.
    environment = {**os.environ, "PIPELINE_ROOT": str(root), "PYTHONUNBUFFERED": "1",
                   "TMPDIR": str(SUITE_FOLDER / "tmp"), "HOME": str(SUITE_FOLDER / "home"),
                   "KAGGLE_CONFIG_DIR": str(root / "no-kaggle-config"), **(env or {})}
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        if not env or name not in env:
            environment.pop(name, None)
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


def run_in_process(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` run inside the test process (TensorFlow is imported once for the session, not per
    command), with the environment run_pipeline gives, its stdout and stderr captured, its exit status returned
    as a CompletedProcess's; an exception the CLI lets through is a traceback on stderr and status 1, as a process
    shows it. For tests about what a command computes and prints; tests about the process itself (signals, exit
    on a kill, locks between processes, a terminal, what it imports) start a real one (run_pipeline)."""
    from pipeline import cli

    saved_environment, saved_argv, saved_directory = dict(os.environ), sys.argv, os.getcwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    returncode = 0
    try:
        os.environ.clear()
        os.environ.update(pipeline_environment(root, env))
        os.chdir(PROJECT_ROOT)
        sys.argv = [str(PROJECT_ROOT / "pipeline" / "__main__.py"), *args]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                cli.main()
            except SystemExit as stop:
                code = stop.code
                returncode = code if isinstance(code, int) else 0 if code is None else 1
                if code is not None and not isinstance(code, int):
                    print(code, file=sys.stderr)
            except Exception:  # what a process prints before it dies
                traceback.print_exc()
                returncode = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_environment)
        os.chdir(saved_directory)
        sys.argv = saved_argv
    return subprocess.CompletedProcess(["python", "-m", "pipeline", *args], returncode, stdout.getvalue(),
                                       stderr.getvalue())


def copy_project_root(source: Path, target: Path) -> Path:
    """A copy of a pipeline's root as a user's `cp -a` makes it: files with their modes and times, symbolic links
    as links, and files hard-linked to each other (an output and its run-cache object) still one file."""
    copied = {}  # (device, inode) -> the first copy of that file

    def copy(path, destination):
        status = os.stat(path)
        if status.st_nlink > 1:
            first = copied.setdefault((status.st_dev, status.st_ino), destination)
            if first != destination:
                os.link(first, destination)
                return destination
        return shutil.copy2(path, destination)

    shutil.copytree(source, target, symlinks=True, copy_function=copy)
    return target


def assert_pipeline_ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that build(folder) fills once for the whole test run: under pytest-xdist every worker is a session
    of its own, so the first worker builds it under a lock in the run's shared temporary folder and the others wait
    for it and read it. Never written to afterwards (tests copy it)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' folders (popen-gw0, ...) sit side by side in it
    root = base / name
    with FileLock(f"{root}.lock"):
        if not (base / f"{name}.built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            (base / f"{name}.built").touch()
    return root


@pytest.fixture(scope="session")
def sample_split_master(tmp_path_factory):
    """One root where download (the bundled sample), prepare and split (the defaults) have run: set up once,
    copied by split_sample_root for each test that trains on it."""
    def build(root):
        for stage in (["download", "--source", "sample"], ["prepare"], ["split"]):
            assert_pipeline_ok(run_in_process(root, *stage))

    return built_once(tmp_path_factory, "sample-split", build)


@pytest.fixture
def split_sample_root(sample_split_master, tmp_path):
    """A private copy of a root where the sample is downloaded, prepared and split (as three commands leave it)."""
    return copy_project_root(sample_split_master, tmp_path / "split-sample")


# The quick run every test that starts from "one finished quick run on the sample" shares.
QUICK_RUN = ("all", "--preset", "quick", "--epochs", "1", "--no-report")


@pytest.fixture(scope="session")
def quick_run_master(tmp_path_factory):
    """`all --preset quick --epochs 1 --no-report` on the sample, run once for the session: never written to."""
    def build(root):
        result = assert_pipeline_ok(run_in_process(root, *QUICK_RUN))
        root.with_suffix(".json").write_text(json.dumps([result.returncode, result.stdout, result.stderr]))

    root = built_once(tmp_path_factory, "quick-run", build)
    returncode, stdout, stderr = json.loads(root.with_suffix(".json").read_text())
    return root, subprocess.CompletedProcess(["python", "-m", "pipeline", *QUICK_RUN], returncode, stdout, stderr)


@pytest.fixture
def quick_run_root(quick_run_master, tmp_path):
    """A private copy of the root of one finished QUICK_RUN on the sample (hard links into the run cache kept)."""
    return copy_project_root(quick_run_master[0], tmp_path / "quick-run")


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
