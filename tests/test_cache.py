"""The stage cache on real files: skip, rerun on a changed parameter, input, output or code."""

import json

import pytest

from pipeline.core import cache, config


@pytest.fixture
def files(pipeline_root):
    source = pipeline_root / "input.txt"
    source.write_text("one")
    return source, pipeline_root / "output.txt"


def run(stage, output, force=False):
    """A toy stage: copies its input upper-cased; returns whether it really ran."""
    if not force and cache.up_to_date(stage):
        return False
    with cache.atomic_path(output) as temporary:
        temporary.write_text(stage.inputs[0].read_text().upper())
    cache.save_record(stage, [output])
    return True


def stage_for(source, size=1, code="v1"):
    return cache.Stage("toy", {"size": size}, [source], code)


def test_second_run_is_skipped(files):
    source, output = files
    assert run(stage_for(source), output)
    assert not run(stage_for(source), output)


def test_changed_parameter_reruns(files):
    source, output = files
    run(stage_for(source), output)
    assert run(stage_for(source, size=2), output)
    assert not run(stage_for(source, size=2), output)


def test_changed_input_reruns(files):
    source, output = files
    run(stage_for(source), output)
    source.write_text("two")
    assert run(stage_for(source), output)
    assert output.read_text() == "TWO"


def test_changed_code_reruns(files):
    source, output = files
    run(stage_for(source), output)
    assert run(stage_for(source, code="v2"), output)


@pytest.mark.parametrize("tamper", ["edit", "truncate", "delete"])
def test_changed_output_is_noticed(files, tamper):
    source, output = files
    run(stage_for(source), output)
    if tamper == "edit":
        output.write_text("ONF")
    elif tamper == "truncate":
        output.write_text("")
    else:
        output.unlink()
    assert cache.up_to_date(stage_for(source)) is None
    assert run(stage_for(source), output) and output.read_text() == "ONE"


def test_force_reruns(files):
    source, output = files
    run(stage_for(source), output)
    assert run(stage_for(source), output, force=True)


def test_failed_write_leaves_no_output_and_no_temporary(pipeline_root):
    target = pipeline_root / "result.txt"
    with pytest.raises(RuntimeError):
        with cache.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed half way")
    assert list(pipeline_root.iterdir()) == []


def test_corrupt_record_means_not_up_to_date(files):
    source, output = files
    run(stage_for(source), output)
    cache.record_path("toy").write_text('{"key": ')
    assert cache.up_to_date(stage_for(source)) is None


def test_record_keeps_relative_paths_and_hashes(files, pipeline_root):
    source, output = files
    run(stage_for(source), output)
    record = json.loads(cache.record_path("toy").read_text())
    assert list(record["outputs"]) == ["output.txt"]
    assert record["outputs"]["output.txt"] == cache.file_digest(output)
    assert record["key"]["inputs"] == {"input.txt": cache.file_digest(source)}


def test_file_digest_is_the_sha256_of_the_whole_file(tmp_path):
    """hashlib.file_digest reads in blocks; the digest is the one earlier records hold, however large the file."""
    import hashlib
    import os

    for size in (0, 1, 3 * (1 << 20) + 7):  # empty, tiny, several read blocks and a remainder
        path = tmp_path / f"file-{size}"
        content = os.urandom(size)
        path.write_bytes(content)
        assert cache.file_digest(path) == hashlib.sha256(content).hexdigest()


def test_folder_digest_sees_a_changed_member(pipeline_root):
    folder = pipeline_root / "report"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"1")
    before = cache.path_digest(folder)
    (folder / "a.png").write_bytes(b"2")
    assert cache.path_digest(folder) != before
    assert cache.path_digest(pipeline_root / "missing") is None


@pytest.mark.parametrize("text", ['[]', '"a string"', '{"key": 1}',
                                  '{"key": {"params": {}}, "outputs": [], "extra": {}}',
                                  '{"key": {"params": {}}, "outputs": {"a": 1}, "extra": {}}', '\xff'])
def test_record_of_the_wrong_shape_means_not_up_to_date(files, text):
    """Issue 9: valid JSON of the wrong shape gave a traceback instead of a rerun."""
    source, output = files
    run(stage_for(source), output)
    cache.record_path("toy").write_bytes(text.encode("latin-1"))
    assert cache.load_record("toy") is None and cache.up_to_date(stage_for(source)) is None
    assert run(stage_for(source), output)


def test_cli_with_a_record_of_the_wrong_shape_is_one_line(tmp_path):
    from conftest import run_in_process

    records = tmp_path / "data" / ".cache"
    records.mkdir(parents=True)
    (records / "train.json").write_text('{"key": {"params": {}}, "outputs": {}, "extra": {}}')
    result = run_in_process(tmp_path, "predict")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no train output yet" in result.stderr


LOCK_HOLDER = """
import sys, time
from filelock import FileLock, Timeout
lock = FileLock(sys.argv[1])
try:
    lock.acquire(timeout=0)
except Timeout:
    print("busy", flush=True)
    sys.exit(0)
print("free", flush=True)
"""


def lock_is_free_for_another_process(lock_path) -> bool:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LOCK_HOLDER, str(lock_path)], capture_output=True, text=True,
                            timeout=60, check=True)
    return result.stdout.strip() == "free"


def test_lock_is_reentrant_within_a_process_and_exclusive_across_processes(pipeline_root):
    """A chain holds the lock from its first stage to its last and each stage takes it again: no deadlock,
    and another process finds it held until the outermost holder lets go."""
    lock_path = pipeline_root / "data" / ".pipeline.lock"
    with cache.exclusive_lock():
        with cache.exclusive_lock():
            assert not lock_is_free_for_another_process(lock_path)
        assert not lock_is_free_for_another_process(lock_path)  # the inner release keeps the outer hold
    assert lock_is_free_for_another_process(lock_path)


def test_a_nested_holder_keeps_the_temporaries_being_written(pipeline_root):
    """Stale temporaries of a killed process are swept when the lock is first taken, not by a stage
    nested in a chain that is writing its own."""
    stale = pipeline_root / "data" / ".tmp-1-old.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a killed process")
    with cache.exclusive_lock():
        assert not stale.exists()
        writing = pipeline_root / "data" / ".tmp-2-new.csv"
        writing.write_text("half written")
        with cache.exclusive_lock():
            assert writing.exists()


def test_an_empty_model_folder_left_by_a_killed_run_is_removed_when_the_lock_is_next_taken(pipeline_root):
    """Issue 21: a run killed before it saved its first model left an empty data/models/<run>/ behind."""
    models = pipeline_root / "data" / "models"
    (models / "20260101-120000-small").mkdir(parents=True)
    (models / "20260101-110000-small").mkdir()
    (models / "20260101-110000-small" / "run.json").write_text("{}")
    (models / ".checkpoints").mkdir()
    with cache.exclusive_lock():
        pass
    assert sorted(path.name for path in models.iterdir()) == [".checkpoints", "20260101-110000-small"]


def test_the_models_of_a_run_killed_after_its_first_are_removed_but_not_a_finished_run_s(pipeline_root):
    """A run killed after its first model kept data/models/<run>/ with its models and no run.json (train writes it
    last): the resumed run trains into a new folder, and the old one stayed, unlisted, for good. A finished run's
    folder whose run.json was deleted by hand (its histories are there) stays: the run is read from its record."""
    models = pipeline_root / "data" / "models"
    for run_id in ("20260101-120000-small", "20260101-130000-small"):
        (models / run_id).mkdir(parents=True)
        (models / run_id / "member-0.keras").write_text("weights")
    (models / "20260101-130000-small" / "history.json").write_text("[]")
    with cache.exclusive_lock():
        pass
    assert sorted(path.name for path in models.iterdir()) == ["20260101-130000-small"]
    assert (models / "20260101-130000-small" / "member-0.keras").is_file()


def test_a_run_killed_after_its_histories_but_before_its_run_json_is_removed(pipeline_root):
    """Review 58 L: a train killed between history.json and run.json left a folder that `runs` never lists and
    that stayed for good (taken for a finished run whose run.json was deleted by hand). Train marks a folder
    unfinished until its run.json; a kill between run.json and the mark's removal leaves a finished run."""
    models = pipeline_root / "data" / "models"
    for run_id in ("20260101-120000-small", "20260101-130000-small"):
        (models / run_id).mkdir(parents=True)
        for name in ("member-0.keras", "history.json", config.Paths.UNFINISHED_RUN):
            (models / run_id / name).write_text("")
    (models / "20260101-130000-small" / "run.json").write_text("{}")
    with cache.exclusive_lock():
        pass
    assert [path.name for path in models.iterdir()] == ["20260101-130000-small"]
    from pipeline.stages.train import new_run_id  # train (and blend) make their folders marked
    made = new_run_id(config.paths(), "20260101-140000-small")
    assert [path.name for path in (models / made).iterdir()] == [config.Paths.UNFINISHED_RUN]
    assert sorted(path.name for path in (models / "20260101-130000-small").iterdir()) == [
        "history.json", "member-0.keras", "run.json"]
    from pipeline.core import runs
    from pipeline.core.records import Run

    runs.write_run(config.paths(), Run(id=made))  # its run.json: a finished run from now on
    assert [path.name for path in (models / made).iterdir()] == ["run.json"]
