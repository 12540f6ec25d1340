"""Faults a competitor causes: kills at any stage, two runs at once, a model file that runs code."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PROJECT_ROOT, run_in_process, run_pipeline, start_pipeline
from pipeline.core import cache

OPTIONS = ["all", "--preset", "quick", "--epochs", "3", "--deterministic"]


def submissions(root) -> list[str]:
    return [path.read_text() for path in sorted((root / "submissions").glob("*.csv"))]


def histories(root) -> list:
    return [json.loads(path.read_text()) for path in sorted((root / "data" / "models").glob("*/history.json"))]


def assert_records_match_files(root):
    """Every cache record's outputs still hash to what the record says."""
    for record_file in (root / "data" / ".cache").glob("*.json"):
        record = json.loads(record_file.read_text())
        for name, digest in record["outputs"].items():
            assert cache.path_digest(root / name) == digest, f"{record_file.name}: {name} disagrees"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    result = run_in_process(root, *OPTIONS)  # --deterministic: the same result in this process as in another
    assert result.returncode == 0, result.stderr
    assert "about" in result.stdout and "left" in result.stdout  # the time-left estimate of each epoch
    return submissions(root), histories(root)


def checkpoint_after_one_epoch(root) -> bool:
    for state in (root / "data" / "models" / ".checkpoints").glob("*/member-0/state.json"):
        try:
            return json.loads(state.read_text())["completed_epochs"] >= 1
        except (json.JSONDecodeError, OSError):
            return False
    return False


KILL_POINTS = {
    "prepare": lambda root: (root / "data" / ".cache" / "download.json").exists(),
    "training": checkpoint_after_one_epoch,
    "predict": lambda root: (root / "data" / ".cache" / "train.json").exists(),
    "report": lambda root: (root / "data" / ".cache" / "predict.json").exists(),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_sigkill_then_rerun_gives_the_uninterrupted_result(tmp_path, reference, stage):
    process = start_pipeline(tmp_path, *OPTIONS)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and not KILL_POINTS[stage](tmp_path):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    # Killed at its point, not ended before it (the test would then pass and test nothing: review 58 J)
    assert process.returncode == -signal.SIGKILL and KILL_POINTS[stage](tmp_path), process.stderr.read()
    rerun = run_in_process(tmp_path, *OPTIONS)  # what follows the kill need not be a process of its own
    assert rerun.returncode == 0, rerun.stderr
    if stage == "training":  # from its checkpoint, not from nothing, to every epoch's figures of a run not killed
        assert "resuming from epoch " in rerun.stdout, rerun.stdout
    assert (submissions(tmp_path), histories(tmp_path)) == reference
    assert_records_match_files(tmp_path)
    assert not list(tmp_path.rglob(".tmp-*")), "a half-written file was left behind"


@pytest.mark.slow
def test_two_runs_at_once_both_end_well(tmp_path, reference):
    first, second = start_pipeline(tmp_path, *OPTIONS), start_pipeline(tmp_path, *OPTIONS)
    outputs = [process.communicate(timeout=400) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert submissions(tmp_path) == reference[0]  # one submission, not two racing ones
    assert_records_match_files(tmp_path)
    assert any("up to date" in stdout for stdout, _ in outputs)


def test_model_file_that_runs_code_is_refused(tmp_path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from pipeline.core.errors import PipelineError
    from pipeline.training.model import load_models

    inputs = keras.Input(shape=(2,))
    outputs = keras.layers.Lambda(lambda values: values * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(PipelineError, match="cannot load this model safely"):
        load_models([path])


def timed_lines(process, lines):
    for line in process.stdout:
        lines.append((time.monotonic(), line))


def lock_free_moments(root, running, moments):
    """Try the checkout's lock without waiting, again and again, while running() is true; note when it was free."""
    import fcntl

    lock_path = root / "data" / ".pipeline.lock"
    while running():
        if lock_path.exists():
            with open(lock_path, "a+") as lock_file:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                moments.append(time.monotonic())
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        time.sleep(0.0005)


@pytest.mark.slow
def test_a_chain_holds_the_lock_from_start_to_end_and_a_second_one_waits(tmp_path):
    """Issue 9: the lock was per stage, so a second `make all` with another seed could slip its
    split in between the first one's stages. Now a chain holds the lock from start to end."""
    import threading

    first = start_pipeline(tmp_path, "all", "--preset", "quick", "--epochs", "2", "--seed", "1")
    first_lines, free_moments = [], []
    threads = [threading.Thread(target=timed_lines, args=(first, first_lines)),
               threading.Thread(target=lock_free_moments, args=(tmp_path, lambda: first.poll() is None, free_moments))]
    for thread in threads:
        thread.start()
    deadline = time.time() + 240
    checkpoints = tmp_path / "data" / "models" / ".checkpoints"
    while time.time() < deadline and first.poll() is None and not checkpoints.exists():
        time.sleep(0.02)
    second = start_pipeline(tmp_path, "all", "--preset", "quick", "--epochs", "2", "--seed", "2")
    second_lines = []
    threads.append(threading.Thread(target=timed_lines, args=(second, second_lines)))
    threads[-1].start()
    first.wait(timeout=400)
    second.wait(timeout=400)
    for thread in threads:
        thread.join(timeout=30)
    first_stderr, second_stderr = first.stderr.read(), second.stderr.read()
    assert first.returncode == 0 and second.returncode == 0, (first_stderr, second_stderr)
    done = next(moment for moment, line in first_lines if line.startswith("done in"))
    # Checked up to the arrival of predict's line: "done in" is printed just before the lock is
    # released, and on a loaded machine this reader may take it in after the release; the report
    # stage after predict takes seconds, far more than that lag.
    started = first_lines[0][0]
    predicted = next(moment for moment, line in first_lines if line.startswith("predict:"))
    inside = [moment for moment in free_moments if started < moment < predicted]
    assert not inside, f"the lock was free {len(inside)} times while the first chain ran"
    assert "waiting for another pipeline process" in second_stderr
    second_split = next(moment for moment, line in second_lines if line.startswith("split:"))
    assert second_split > done, "the second chain ran a stage while the first was running"
    runs = (tmp_path / "data" / "models").glob("*/run.json")
    seeds = sorted(json.loads(path.read_text())["params"]["seed"] for path in runs)
    assert seeds == [1, 2]
    assert_records_match_files(tmp_path)


def test_ctrl_c_while_waiting_for_the_lock_says_nothing_was_done(tmp_path):
    """Review 57 E: Ctrl-C on a command waiting for another's lock said "training resumes from its last completed
    epoch", though nothing had started."""
    from filelock import FileLock

    (tmp_path / "data").mkdir()
    with FileLock(tmp_path / "data" / ".pipeline.lock"):  # another command's, for as long as this test needs it
        waiting = start_pipeline(tmp_path, "all", "--preset", "quick")
        deadline = time.time() + 60
        stderr = ""
        while time.time() < deadline and "waiting for another" not in stderr:
            stderr += waiting.stderr.readline()
        waiting.send_signal(signal.SIGINT)
        _, rest = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, stderr + rest
    assert rest.strip().splitlines()[-1] == ("interrupted: nothing was done, as another pipeline command held this"
                                             " folder; run the same command again once it is done")


def test_sigterm_still_ends_a_command_whose_ctrl_c_is_ignored(tmp_path):
    """Review 57 diff: SIGTERM, taken as a Ctrl-C, did nothing in a script's background job (SIGINT ignored there):
    `kill`, `timeout` and `docker stop` no longer ended the command."""
    from filelock import FileLock

    (tmp_path / "data").mkdir()
    with FileLock(tmp_path / "data" / ".pipeline.lock"):  # the command waits on it, doing nothing else
        waiting = start_pipeline(tmp_path, "all", "--preset", "quick",
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        deadline = time.time() + 60
        stderr = ""
        while time.time() < deadline and "waiting for another" not in stderr:
            stderr += waiting.stderr.readline()
        waiting.send_signal(signal.SIGTERM)
        waiting.communicate(timeout=60)
    assert waiting.returncode == -signal.SIGTERM


def one_error_line(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr.strip()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (needs root and mount); the test may remount it with other options."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); test_write_beyond_a_file_size_limit covers the code path")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.slow
def test_full_disk_then_read_only_folder_give_one_line_and_a_rerun_works(small_disk):
    """Issue 9: a 16 MB disk gave a traceback (once a segmentation fault) while saving the model."""
    options = ["all", "--preset", "quick", "--epochs", "3", "--no-report"]  # 1-2 epochs: a warning besides the error
    message = one_error_line(run_pipeline(small_disk, *options))
    assert str(small_disk) in message and ("No space left on device" in message or "MB free" in message), message
    assert_records_match_files(small_disk)
    assert not list(small_disk.rglob(".tmp-*")), "a half-written file was left behind"

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    rerun = run_pipeline(small_disk, *options)
    assert rerun.returncode == 0, rerun.stderr
    assert "download: up to date" in rerun.stdout and len(list((small_disk / "submissions").glob("*.csv"))) == 1

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    message = one_error_line(run_pipeline(small_disk, "split", "--seed", "3"))
    assert "Read-only file system" in message and str(small_disk / "data") in message, message


def test_write_beyond_a_file_size_limit_is_one_line_and_keeps_earlier_outputs(tmp_path):
    """A write that fails (EFBIG under a file-size limit, as ENOSPC on a full disk), without root."""
    import resource

    assert run_pipeline(tmp_path, "download", "--source", "sample").returncode == 0
    raw_before = {path.name: path.read_bytes() for path in (tmp_path / "data" / "raw").iterdir()}

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))

    result = run_pipeline(tmp_path, "prepare", preexec_fn=limit_file_size)
    message = one_error_line(result)
    expected = f"error: {tmp_path}/data/prepared/train_images.npy: cannot write (File too large)"
    assert message.startswith(expected), message
    assert "raise the file-size limit (ulimit -f)" in message  # it said to free some space: the disk was not full
    assert {path.name: path.read_bytes() for path in (tmp_path / "data" / "raw").iterdir()} == raw_before
    assert not (tmp_path / "data" / ".cache" / "prepare.json").exists()
    assert not list(tmp_path.rglob(".tmp-*"))
    assert run_pipeline(tmp_path, "prepare").returncode == 0  # without the limit


def test_predict_cut_short_by_a_file_size_limit_is_one_line_and_leaves_no_submission(quick_run_root):
    """NumPy reports a short write without an errno (`6000 requested and 4064 written`): a traceback, and the
    submission, written before the probabilities, stayed behind finished-looking and unrecorded."""
    import resource

    submissions_before = sorted(path.name for path in (quick_run_root / "submissions").iterdir())

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))  # the CSV's 3.5 KB fit, not the 24 KB array

    result = run_pipeline(quick_run_root, "predict", "--tta", preexec_fn=limit_file_size)
    message = one_error_line(result)
    assert "/test_probabilities.npy: cannot write (" in message and "free some space" in message, message
    assert sorted(path.name for path in (quick_run_root / "submissions").iterdir()) == submissions_before
    again = run_pipeline(quick_run_root, "predict", "--tta")
    assert again.returncode == 0, again.stderr
    assert len(list((quick_run_root / "submissions").iterdir())) == len(submissions_before) + 1


def test_a_predict_interrupted_after_its_submission_was_written_adds_no_copy_when_run_again(quick_run_root,
                                                                                              monkeypatch):
    """Stop 59's note: a predict stopped between its CSV and its records (here a full disk; a kill, a Ctrl-C) left
    `<run>.csv` unrecorded, and the next predict wrote the same labels again as `<run>-2.csv`: two finished-looking
    files, one of them no run's."""
    from pipeline.core import runs

    def disk_full(paths, run_id, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(paths.submission_json(run_id)))

    with monkeypatch.context() as patch:
        patch.setattr(runs, "write_submission_record", disk_full)
        stopped = run_in_process(quick_run_root, "predict", "--tta")
    assert stopped.returncode == 1 and "submission.json: cannot write" in stopped.stderr, stopped.stderr
    left = sorted(path.name for path in (quick_run_root / "submissions").iterdir())
    again = run_in_process(quick_run_root, "predict", "--tta")
    assert again.returncode == 0, again.stderr
    assert sorted(path.name for path in (quick_run_root / "submissions").iterdir()) == left
    run_folder = next((quick_run_root / "data" / "models").glob("*/run.json")).parent
    recorded = json.loads((run_folder / "submission.json").read_text())["submission"]
    assert (quick_run_root / recorded).is_file() and recorded in again.stdout


def test_download_cut_short_by_a_file_size_limit_names_the_file(tmp_path):
    """The error of a write names no file: a full disk during download said `a file under the pipeline's folders`."""
    import resource

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # sample_submission.csv fits, test.csv not

    result = run_pipeline(tmp_path, "download", "--source", "sample", preexec_fn=limit_file_size)
    message = one_error_line(result)
    written = tmp_path / "data" / "raw" / "test.csv"
    assert message.startswith(f"error: {written}: cannot write (File too large)"), message
    assert not list((tmp_path / "data" / "raw").iterdir())  # nothing half-written kept


@pytest.mark.slow
def test_a_train_record_that_cannot_be_written_costs_no_training_again(split_sample_root, monkeypatch):
    """The checkpoints went before the record was written: a record that could not be written (a full disk, a
    read-only data/.cache) meant the whole training again on the next run."""
    from pathlib import Path

    from pipeline.core.errors import PipelineError

    real_write_json = cache.write_json

    def no_train_record(path, value):
        if Path(path).name == "train.json":
            raise PipelineError(f"{path}: cannot write (No space left on device)")
        return real_write_json(path, value)

    monkeypatch.setattr(cache, "write_json", no_train_record)
    failed = run_in_process(split_sample_root, "train", "--preset", "quick", "--epochs", "2")
    assert failed.returncode == 1 and "train.json: cannot write" in failed.stderr
    assert "epoch 2/2" in failed.stdout
    monkeypatch.setattr(cache, "write_json", real_write_json)
    again = run_in_process(split_sample_root, "train", "--preset", "quick", "--epochs", "2")
    assert again.returncode == 0, again.stderr
    assert "epoch 1/2" not in again.stdout and "epoch 2/2" not in again.stdout  # the finished model just loads
    assert not list((split_sample_root / "data" / "models" / ".checkpoints").iterdir())  # gone once recorded


@pytest.mark.parametrize("raised, shown", [("KeyboardInterrupt", ""), ("ImportError", "oneDNN chatter\n")])
def test_tensorflow_s_start_up_chatter_is_shown_for_a_failed_import_not_for_a_ctrl_c(raised, shown):
    """A Ctrl-C while TensorFlow imported printed its oneDNN and CUDA lines before `interrupted`."""
    import sys

    from conftest import PROJECT_ROOT

    code = (
        "import builtins, os\n"
        "real = builtins.__import__\n"
        "def stopped(name, *arguments, **options):\n"
        "    if name == 'tensorflow':\n"
        "        os.write(2, b'oneDNN chatter\\n')\n"
        f"        raise {raised}\n"
        "    return real(name, *arguments, **options)\n"
        "builtins.__import__ = stopped\n"
        "from pipeline.core.console import import_tensorflow_quietly\n"
        "try:\n"
        "    import_tensorflow_quietly()\n"
        "except BaseException as error:\n"
        "    print(type(error).__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout == f"{raised}\n" and result.stderr == shown


def test_a_ctrl_c_in_the_pandas_import_pyarrow_starts_while_prepare_reads_is_not_lost(tmp_path):
    """pyarrow imports pandas from its compiled code on its first read and swallowed the KeyboardInterrupt of a Ctrl-C
    landing there: `all` went on to train, and ended with exit 0."""
    import sys
    import zipfile

    from conftest import PROJECT_ROOT

    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        archive.extract("test.csv", tmp_path)
    code = (
        "import sys\n"
        "class CtrlCInPandasImport:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pandas':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlCInPandasImport())\n"
        "from pathlib import Path\n"
        "from pipeline.stages.prepare import read_digits_csv\n"
        "try:\n"
        f"    read_digits_csv(Path({str(tmp_path / 'test.csv')!r}), with_labels=False)\n"
        "    print('read on')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout == "interrupted\n", result.stdout + result.stderr


@pytest.mark.parametrize("split_options", [["--folds", "3"], ["--seed", "7"]])
def test_after_a_new_split_the_advice_is_train_not_make_all_which_goes_back_to_the_old_one(quick_run_root,
                                                                                           split_options):
    """Review 58 K: after `make split FOLDS=3` (or SEED=7), predict advised `make all PRESET=quick`, which restored
    the old split and the old run from the run cache; `train` trains on the new split."""
    assert run_in_process(quick_run_root, "split", *split_options).returncode == 0
    result = run_in_process(quick_run_root, "predict")
    assert result.returncode == 1 and result.stderr == (
        "error: the train result is out of date (data/split/split.npz changed since train last ran): run"
        " `python -m pipeline train --preset quick --epochs 1` and the stages after it\n")


@pytest.mark.parametrize("command, damaged, required", [
    (["predict"], "test_images.npy", "train"),  # garbled in place: a new submission made from garbage, exit 0
    (["train", "--preset", "quick", "--epochs", "2"], "train_images.npy", "split"),  # truncated: a traceback
])
def test_a_stage_run_alone_refuses_prepared_arrays_that_changed_since_prepare(quick_run_root, command, damaged,
                                                                              required):
    """train and predict run on their own checked their own records, never prepare's outputs, which they read."""
    path = quick_run_root / "data" / "prepared" / damaged
    content = path.read_bytes()
    path.unlink()  # kept files are read-only hard links into the run cache: a new file in its place
    path.write_bytes(content[:1000] if damaged == "train_images.npy"
                     else content[:-4000] + b"\x00\x00\x80\x7f" * 1000)
    submissions = sorted((quick_run_root / "submissions").iterdir())
    result = run_in_process(quick_run_root, *command)
    # make all only where it trains the run's options again (train's result needed); above, the default preset's
    again = ", or `make all PRESET=quick EPOCHS=1`" if required == "train" else ""
    assert result.returncode == 1 and result.stderr == (
        f"error: the {required} result is out of date (data/prepared/{damaged} changed since prepare last ran): run"
        f" `python -m pipeline prepare` and the stages after it{again}\n")
    assert sorted((quick_run_root / "submissions").iterdir()) == submissions


def test_ctrl_c_in_make_clean_is_one_line_and_a_rerun_finishes(quick_run_root):
    """Review 58 L: Ctrl-C during `make clean` (python3 -m pipeline.core.clean) printed a traceback."""
    data = quick_run_root / "data"
    ctrl_c_in_the_second_removal = (
        "import runpy, shutil, sys\n"
        "real, calls = shutil.rmtree, []\n"
        "def rmtree(*args, **options):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        raise KeyboardInterrupt\n"
        "    return real(*args, **options)\n"
        "shutil.rmtree = rmtree\n"
        f"sys.argv = ['clean', {str(data)!r}]\n"
        "runpy.run_module('pipeline.core.clean', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", ctrl_c_in_the_second_removal], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and result.stderr == ("interrupted: clean stopped part way, and what it had not"
                                                          " reached is kept; run it again to finish\n"), result.stderr
    again = subprocess.run([sys.executable, "-m", "pipeline.core.clean", str(data)], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "clean: removed" in again.stdout, again.stdout + again.stderr

