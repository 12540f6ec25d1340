"""The run cache on real files: every result kept, restored when its key comes back, never wrongly."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, run_pipeline
from pipeline import cache, config, run_cache, stage
from pipeline.console import Console


def toy_stage(calls):
    """A stage writing out-<size>.txt (its input upper-cased, size times) and a report/ folder."""

    def define(paths, console, size):
        source, output, folder = paths.root / "input.txt", paths.root / f"out-{size}.txt", paths.root / "report"

        def work():
            calls.append(size)
            with cache.atomic_path(output) as temporary:
                temporary.write_text(source.read_text().upper() * size)
            with cache.atomic_path(folder) as temporary:
                temporary.mkdir()
                (temporary / "page.html").write_text(f"size {size}")
            return [output, folder], {"size": size}

        return stage.Definition("toy", {"size": size}, [source], work, lambda record: f"size {record['extra']['size']}")

    return define


@pytest.fixture
def toy(pipeline_root, monkeypatch):
    (pipeline_root / "input.txt").write_text("one")
    monkeypatch.setattr(stage, "code_digest", lambda name: "toy-code")
    calls = []
    return pipeline_root, toy_stage(calls), calls


def test_a_stages_code_is_its_module_and_every_pipeline_module_it_uses():
    assert stage.stage_modules("train") == {"train", "model", "augment", "predict", "submission", "device", "estimate",
                                            "engine"}
    assert stage.stage_modules("prepare") == {"prepare"}
    assert stage.stage_modules("download") == {"download", "kaggle_api"}


def test_going_back_restores_instead_of_running(toy):
    root, define, calls = toy
    for size in (1, 2, 1):
        stage.run(define, Console(quiet=True), size=size)
    assert calls == [1, 2]
    assert (root / "out-1.txt").read_text() == "ONE"
    assert (root / "report" / "page.html").read_text() == "size 1"
    assert cache.up_to_date(define(config.paths(), None, 1).key()) is not None


def test_an_object_edited_in_place_is_not_restored(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    (root / "out-1.txt").write_text("tampered")  # in place: a hard-linked object changes with it
    stage.run(define, Console(quiet=True), size=2)
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1, 2, 1]
    assert (root / "out-1.txt").read_text() == "ONE"


def test_forced_run_ignores_the_run_cache(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    stage.run(define, Console(quiet=True), size=2)
    stage.run(define, Console(quiet=True), force=True, size=1)
    assert calls == [1, 2, 1]


def test_a_file_the_stage_did_not_write_last_is_never_replaced(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    stage.run(define, Console(quiet=True), size=2)
    (root / "out-1.txt").unlink()
    (root / "out-1.txt").write_text("a user's own file")  # a new file: the kept copy stays intact
    paths = config.paths()
    assert run_cache.restore(paths, "toy", define(paths, None, 1).key_id) is None
    assert (root / "out-1.txt").read_text() == "a user's own file"
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1, 2, 1]  # ran again instead


def test_disk_usage_counts_only_what_no_output_shares(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    total, extra = run_cache.disk_usage(config.paths())
    assert total == len("ONE") + len("size 1") and extra == 0
    stage.run(define, Console(quiet=True), size=3)
    total, extra = run_cache.disk_usage(config.paths())
    assert extra == len("size 1")  # size 1's report now lives only in the store; out-1.txt is still there


# --------------------------------------------------------------------------- through the CLI, on the sample

QUICK = ["--preset", "quick", "--epochs", "1", "--no-report"]
STAGES = ("download", "prepare", "split", "train", "predict")


def stage_words(output: str) -> dict:
    """{stage: "up to date" | "restored" | "ran"} from a run's output."""
    words = {}
    for line in output.splitlines():
        name = line.split(":")[0]
        if name in STAGES and ("in " in line or "up to date" in line):
            words[name] = ("up to date" if ": up to date" in line else
                           "restored" if ": restored from the run cache" in line else "ran")
    return words


def run_copy(copy: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` from a copy of the project, writing under that copy."""
    result = run_pipeline(copy, *args, project=copy)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_changed_stage_code_reruns_that_stage_and_only_later_ones(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT_ROOT / "data" / "sample", copy / "data" / "sample")
    first = stage_words(run_copy(copy, "all", *QUICK).stdout)
    assert first == dict.fromkeys(STAGES, "ran"), first

    # Another split for the same seed: the split stage reruns, and train and predict after it (new inputs).
    split_code = copy / "pipeline" / "split.py"
    split_code.write_text(split_code.read_text().replace("random_state=seed", "random_state=seed + 1000"))
    after_split_change = stage_words(run_copy(copy, "all", *QUICK).stdout)
    assert after_split_change == {"download": "up to date", "prepare": "up to date", "split": "ran",
                                  "train": "ran", "predict": "ran"}, after_split_change

    # A change to a module only predict uses (a comment is enough: the source is hashed): predict alone.
    predict_code = copy / "pipeline" / "submission.py"
    predict_code.write_text(predict_code.read_text() + "\n# a changed line\n")
    after_predict_change = stage_words(run_copy(copy, "all", *QUICK).stdout)
    assert after_predict_change["split"] == "up to date" and after_predict_change["predict"] == "ran"


@pytest.mark.slow
def test_going_back_to_earlier_settings_restores_without_training(tmp_path):
    def timed(*args):
        started = time.perf_counter()
        result = assert_ran(run_pipeline(tmp_path, *args))
        return result, time.perf_counter() - started

    def assert_ran(result):
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    _, first_seconds = timed("all", *QUICK)
    first_submission = list((tmp_path / "submissions").glob("*.csv"))
    timed("split", "--seed", "7")
    timed("train", "--preset", "quick", "--epochs", "1", "--seed", "7")
    baseline, _ = timed("all", *QUICK, "--preset", "baseline")
    assert stage_words(baseline.stdout)["split"] == "restored"  # the default seed's split, kept
    back, back_seconds = timed("all", *QUICK)
    words = stage_words(back.stdout)
    assert words["train"] == "restored" and words["predict"] == "restored", back.stdout
    assert "epoch" not in back.stdout.lower()  # nothing trained
    assert back_seconds < 5, f"going back took {back_seconds:.1f} s"
    print(f"\nfirst run {first_seconds:.1f} s, going back {back_seconds:.1f} s")
    # the same submission file as the first time, not a new copy under another name
    assert str(first_submission[0]) in back.stdout.splitlines()[-1]
    runs_table = assert_ran(run_pipeline(tmp_path, "runs")).stdout
    assert runs_table.count(" yes ") == 3 and "run cache:" in runs_table
