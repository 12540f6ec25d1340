"""The run cache on real files: every result kept, restored when its key comes back, never wrongly."""

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, QUICK_RUN, run_in_process, run_pipeline
from pipeline.core import cache, config, run_cache, stage
from pipeline.core.console import Console


def toy_stage(calls):
    """A stage writing data/out-<size>.txt (its input upper-cased, size times) and a data/report/ folder."""

    def define(paths, console, size):
        source, output, folder = paths.root / "input.txt", paths.data / f"out-{size}.txt", paths.data / "report"

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
    assert stage.stage_modules("stages.train") == {
        "stages.train", "training.settings", "training.fit", "training.plan", "training.parts", "training.prediction",
        "training.model", "training.augment", "training.averaging", "training.device", "training.engine",
        "training.ray_local", "training.looks", "core.estimate", "core.extras", "core.progress",
        "core.records"}  # core.records: the shape of run.json, which train writes
    assert stage.stage_modules("stages.prepare") == {"stages.prepare", "core.digits"}
    assert stage.stage_modules("stages.download") == {"stages.download", "competition.kaggle_api",
                                                      "competition.credentials", "competition.network"}


def test_what_a_stage_leaves_until_its_record_goes_when_it_is_next_found_up_to_date(toy):
    """Review 58 L: a train killed between its record and the removal of its checkpoints was up to date ever after,
    and `runs` said "unfinished trainings: 1" for a finished run."""
    root, define, calls = toy
    leftovers, killed = root / "data" / "checkpoints", []

    def with_leftovers(paths, console, size):
        definition = define(paths, console, size)

        def work():
            leftovers.mkdir()
            return definition.work()

        def after_record(record):
            if not killed:  # the first time, a kill right after the record
                killed.append(True)
                raise KeyboardInterrupt
            shutil.rmtree(leftovers, ignore_errors=True)

        return dataclasses.replace(definition, work=work, after_record=after_record)

    with pytest.raises(KeyboardInterrupt):
        stage.run(with_leftovers, Console(quiet=True), size=1)
    assert leftovers.is_dir() and cache.load_record("toy") is not None
    stage.run(with_leftovers, Console(quiet=True), size=1)  # up to date
    assert calls == [1] and not leftovers.exists()
    # Review 59 D: a result kept since, the leftovers are a later --force run's, interrupted: kept for it to resume
    leftovers.mkdir()
    stage.run(with_leftovers, Console(quiet=True), size=1)  # up to date
    assert calls == [1] and leftovers.is_dir()


def test_going_back_restores_instead_of_running(toy):
    root, define, calls = toy
    for size in (1, 2, 1):
        stage.run(define, Console(quiet=True), size=size)
    assert calls == [1, 2]
    assert (root / "data" / "out-1.txt").read_text() == "ONE"
    assert (root / "data" / "report" / "page.html").read_text() == "size 1"
    assert cache.up_to_date(define(config.paths(), None, 1).key()) is not None


def test_results_of_code_mapped_only_later_stay_current_and_restorable(toy, monkeypatch):
    """Review 57 G: a result made by a commit whose code was mapped to the digest it replaced only in a later commit
    holds its own digest; SAME_RESULTS was applied to the current code alone, so it trained again on upgrade."""
    root, define, calls = toy
    monkeypatch.setattr(stage, "code_digest", lambda name: "mid-stop-code")
    for size in (1, 2):
        stage.run(define, Console(quiet=True), size=size)
    monkeypatch.setattr(stage, "code_digest", lambda name: "checked-code")
    monkeypatch.setattr(stage, "SAME_RESULTS", {"toy": {"mid-stop-code": "checked-code"}})
    assert stage.run(define, Console(quiet=True), size=2)["extra"]["size"] == 2  # up to date
    assert stage.run(define, Console(quiet=True), size=1)["extra"]["size"] == 1  # restored from the run cache
    assert calls == [1, 2]
    monkeypatch.setattr(stage, "SAME_RESULTS", {})  # not checked: runs again
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1, 2, 1]


def test_a_stage_says_why_it_runs_again_when_its_code_or_an_input_changed(toy, monkeypatch, capsys):
    """Review 57 G: after an upgrade, stages ran again without a word of why."""
    root, define, calls = toy
    def command(**options):  # each a command of its own, as the CLI runs them
        stage.new_command()
        stage.run(define, Console(), **options)

    command(size=1)
    monkeypatch.setattr(stage, "code_digest", lambda name: "new-code")
    command(size=1)
    (root / "input.txt").write_text("two")
    command(size=1)
    command(size=2)  # new options: the user's own doing, nothing to explain
    (root / "input.txt").write_text("three")
    stage._MADE_HERE.add("download")  # as if a stage above made its new input in this same command (`all`)
    stage.run(define, Console(), size=2)
    said = [line for line in capsys.readouterr().out.splitlines() if "running again" in line]
    assert said == ["toy: running again: its code changed since its last result (a new version of the pipeline)",
                    "toy: running again: input.txt changed since its last result"]
    assert calls == [1, 1, 1, 2, 2]


def test_an_object_edited_in_place_is_not_restored(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    (root / "data" / "out-1.txt").chmod(0o644)  # read-only, as its object
    (root / "data" / "out-1.txt").write_text("tampered")  # in place: a hard-linked object changes with it
    stage.run(define, Console(quiet=True), size=2)
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1, 2, 1]
    assert (root / "data" / "out-1.txt").read_text() == "ONE"


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
    (root / "data" / "out-1.txt").unlink()
    (root / "data" / "out-1.txt").write_text("a user's own file")  # a new file: the kept copy stays intact
    paths = config.paths()
    assert run_cache.restore(paths, "toy", define(paths, None, 1).key_id) is None
    assert (root / "data" / "out-1.txt").read_text() == "a user's own file"
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1, 2, 1]  # ran again instead


def stored_object(root, path):
    return root / "data" / ".cache" / "store" / "objects" / cache.file_digest(path)[:2] / cache.file_digest(path)[2:]


def test_a_hand_edited_output_is_never_replaced_by_a_restore(toy):
    """Issue 21: the output the stage wrote last, edited by hand (saved as a new file, as editors do),
    was replaced by the kept copy."""
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    edited = root / "data" / ".edited"
    edited.write_text("ONE, corrected by hand")
    os.replace(edited, root / "data" / "out-1.txt")
    paths = config.paths()
    assert run_cache.restore(paths, "toy", define(paths, None, 1).key_id) is None
    assert (root / "data" / "out-1.txt").read_text() == "ONE, corrected by hand"


def test_kept_objects_and_their_outputs_are_read_only(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    output = root / "data" / "out-1.txt"
    for path in (output, root / "data" / "report" / "page.html", stored_object(root, output)):
        assert path.stat().st_mode & 0o222 == 0, path


def test_an_output_edited_in_place_is_restored_again_later(toy):
    """Issue 21: an in-place edit went through the hard link into the object; keep() then skipped the
    existing (damaged) object, so that result ran again every time and was never restored."""
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    output = root / "data" / "out-1.txt"
    output.chmod(0o644)  # as a user who insists (root needs not even that)
    with open(output, "r+") as stream:  # in place: the same inode as the object
        stream.write("TWO")
    for size in (2, 1, 2, 1):
        stage.run(define, Console(quiet=True), size=size)
    assert calls == [1, 2, 1]  # ran once more, then restored
    assert output.read_text() == "ONE"


def test_a_truncated_object_is_healed_when_the_result_is_made_again(toy):
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    stage.run(define, Console(quiet=True), size=2)
    stored = stored_object(root, root / "data" / "out-1.txt")
    stored.chmod(0o644)
    stored.write_text("")  # truncated: the result kept for size 1 is damaged
    for size in (1, 2, 1):
        stage.run(define, Console(quiet=True), size=size)
    assert calls == [1, 2, 1]
    assert stored.read_text() == "ONE"


def entry_file(root, define, size):
    return root / "data" / ".cache" / "store" / "runs" / "toy" / f"{define(config.paths(), None, size).key_id}.json"


def outside_entry(entry: dict) -> dict:
    """The entry with its output file renamed to a path outside the project."""
    entry["record"]["outputs"]["../outside.txt"] = entry["record"]["outputs"].pop("data/out-1.txt")
    entry["files"]["../outside.txt"] = entry["files"].pop("data/out-1.txt")
    return entry


TAMPERED_ENTRIES = {
    "outside the project": lambda text: json.dumps(outside_entry(json.loads(text))).encode(),
    "into the record folder": lambda text: text.replace('"data/out-1.txt"', '"data/.cache/toy.json"').encode(),
    "a member outside its folder": lambda text: text.replace('"page.html"', '"../../outside.txt"').encode(),
    "without outputs": lambda text: json.dumps({**json.loads(text), "record": {"stage": "toy"}}).encode(),
    "a JSON list": lambda text: b"[]",
    "non-UTF-8 bytes": lambda text: b"\xff\xfe{",
}


@pytest.mark.parametrize("tamper", list(TAMPERED_ENTRIES))
def test_a_tampered_entry_is_treated_as_missing(toy, tamper):
    """Issue 21: a store entry is untrusted input: one naming ../../../../outside.npz was restored there,
    others ended in tracebacks. Now the stage simply runs again, and nothing is written outside."""
    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    stage.run(define, Console(quiet=True), size=2)
    entry = entry_file(root, define, 1)
    entry.write_bytes(TAMPERED_ENTRIES[tamper](entry.read_text()))
    assert run_cache.kept_records(config.paths(), "toy")  # the other entry, without a traceback
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1, 2, 1]
    assert not (root.parent / "outside.txt").exists() and not (root / "outside.txt").exists()
    assert (root / "data" / "out-1.txt").read_text() == "ONE"


def objects_folder_is_a_file(root, monkeypatch):
    objects = root / "data" / ".cache" / "store" / "objects"
    objects.parent.mkdir(parents=True, exist_ok=True)
    objects.write_text("not a folder")


def disk_is_full(root, monkeypatch):
    def no_space(source, target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(run_cache, "_link_or_copy", no_space)


@pytest.mark.parametrize("damage", [objects_folder_is_a_file, disk_is_full])
def test_a_store_that_cannot_be_written_is_a_warning_and_the_result_is_kept_next_time(toy, monkeypatch, capsys,
                                                                                      damage):
    """Issue 21: after a full disk the result was up to date but never kept; a file in place of store/objects gave a
    traceback. Then the record waited for the store, so a finished training whose copy could not be kept was thrown
    away (its checkpoints gone) and trained again from its first epoch."""
    root, define, calls = toy
    with monkeypatch.context() as patches:
        damage(root, patches)
        stage.run(define, Console(quiet=True), size=1)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: ") and warning.count("\n") == 1 and "store" in warning, warning
    assert "the result itself is saved and current" in warning and "make clean-cache" in warning
    assert cache.load_record("toy") is not None  # the result stands: never made again for want of its copy
    objects = root / "data" / ".cache" / "store" / "objects"
    if objects.is_file():
        objects.unlink()  # what the warning says to do (with the folder)
    for size in (1, 2, 1):  # the first finds it up to date and keeps it; the last restores it from the store
        stage.run(define, Console(quiet=True), size=size)
    assert calls == [1, 2]


def test_a_store_emptied_by_clean_cache_is_not_filled_again_by_an_up_to_date_run(toy):
    """Only a result whose keeping failed is kept at the next up-to-date run: `make clean-cache` forgets."""
    import shutil

    root, define, calls = toy
    stage.run(define, Console(quiet=True), size=1)
    shutil.rmtree(root / "data" / ".cache" / "store")  # make clean-cache
    stage.run(define, Console(quiet=True), size=1)
    assert calls == [1] and run_cache.kept_records(config.paths(), "toy") == []


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
    split_code = copy / "pipeline" / "stages" / "split.py"
    split_code.write_text(split_code.read_text().replace("random_state=seed", "random_state=seed + 1000"))
    after_split_change = stage_words(run_copy(copy, "all", *QUICK).stdout)
    assert after_split_change == {"download": "up to date", "prepare": "up to date", "split": "ran",
                                  "train": "ran", "predict": "ran"}, after_split_change

    # A change to a module only predict uses (a comment is enough: the source is hashed): predict alone.
    predict_code = copy / "pipeline" / "competition" / "submission.py"
    predict_code.write_text(predict_code.read_text() + "\n# a changed line\n")
    after_predict_change = stage_words(run_copy(copy, "all", *QUICK).stdout)
    assert after_predict_change["split"] == "up to date" and after_predict_change["predict"] == "ran"


@pytest.mark.slow
def test_going_back_to_earlier_settings_restores_without_training(quick_run_root):
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run

    def timed(*args, run=run_in_process):
        started = time.perf_counter()
        result = assert_ran(run(tmp_path, *args))
        return result, time.perf_counter() - started

    def assert_ran(result):
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    assert QUICK_RUN == ("all", *QUICK)
    first_submission = list((tmp_path / "submissions").glob("*.csv"))
    timed("split", "--seed", "7")
    timed("train", "--preset", "quick", "--epochs", "1", "--seed", "7")
    baseline, _ = timed("all", *QUICK, "--preset", "baseline")
    assert stage_words(baseline.stdout)["split"] == "restored"  # the default seed's split, kept
    back, back_seconds = timed("all", *QUICK, run=run_pipeline)  # a process of its own: its start-up counts
    words = stage_words(back.stdout)
    assert words["train"] == "restored" and words["predict"] == "restored", back.stdout
    assert "epoch" not in back.stdout.lower()  # nothing trained
    assert back_seconds < 5, f"going back took {back_seconds:.1f} s"
    print(f"\ngoing back {back_seconds:.1f} s")
    # the same submission file as the first time, not a new copy under another name
    assert str(first_submission[0]) in back.stdout.splitlines()[-1]
    runs_table = assert_ran(run_in_process(tmp_path, "runs", "--wide")).stdout  # "kept" is among every column
    assert runs_table.count(" yes ") == 3 and "run cache:" in runs_table


@pytest.mark.slow
def test_going_back_restores_with_the_models_folder_a_link_to_another_disk(tmp_path):
    """Review 57 E: with data/models a link (the models kept on a bigger disk), records named its files by the
    link's target, outside the root; the run cache refused them as tampered, and going back trained again."""
    root, disk = tmp_path / "project", tmp_path / "other-disk" / "models"
    disk.mkdir(parents=True)
    (root / "data").mkdir(parents=True)
    (root / "data" / "models").symlink_to(disk)
    for seed in ("42", "3"):
        assert run_in_process(root, "all", *QUICK, "--seed", seed).returncode == 0
    back = run_in_process(root, "all", *QUICK, "--seed", "42")
    assert back.returncode == 0, back.stdout + back.stderr
    assert stage_words(back.stdout)["train"] == "restored", back.stdout
    record = (root / "data" / ".cache" / "train.json").read_text()
    assert str(disk) not in record and "data/models/" in record
    assert len(list(disk.glob("*/run.json"))) == 2  # one run a seed, none twice


@pytest.mark.slow
@pytest.mark.parametrize("how", ["saved as a new file", "in place"])
def test_a_hand_edited_submission_is_kept_and_predict_writes_beside_it(quick_run_root, how):
    """Issue 21: edit a line of submissions/<run>.csv, run `all` again: "predict: restored from the run
    cache", and the edit was gone."""
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run: its submission hard-linked to its kept object
    submission = next((tmp_path / "submissions").glob("*.csv"))
    original = submission.read_text()
    image_id, label = original.splitlines()[1].split(",")
    edited = original.replace(f"\n{image_id},{label}\n", f"\n{image_id},{(int(label) + 1) % 10}\n", 1)
    if how == "in place":  # through the hard link into the stored object (root ignores the read-only mode)
        submission.chmod(0o644)
        submission.write_text(edited)
    else:  # as most editors save
        (tmp_path / "submissions" / "edited").write_text(edited)
        os.replace(tmp_path / "submissions" / "edited", submission)
    again = run_in_process(tmp_path, "all", *QUICK)
    assert again.returncode == 0, again.stderr
    assert "predict: restored" not in again.stdout and stage_words(again.stdout)["train"] == "up to date"
    assert submission.read_text() == edited
    beside = [path for path in (tmp_path / "submissions").glob("*.csv") if path != submission]
    assert len(beside) == 1 and beside[0].read_text() == original, beside
    assert str(beside[0]) in again.stdout.splitlines()[-1]


@pytest.mark.slow
def test_a_deleted_run_json_is_read_from_the_run_cache_and_put_back(quick_run_root):
    """run.json is not among train's outputs: deleted, train stayed `up to date` and every later `report`
    (so `all`) said `no such run`, which `runs` still listed."""
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run
    run_json = next((tmp_path / "data" / "models").glob("*/run.json"))
    written = json.loads(run_json.read_text())
    run_json.unlink()
    report = run_in_process(tmp_path, "report")  # reads the run as the run cache keeps it
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    again = run_in_process(tmp_path, *QUICK_RUN)
    assert again.returncode == 0, again.stderr
    assert stage_words(again.stdout)["train"] == "up to date" and "epoch" not in again.stdout.lower()
    assert json.loads(run_json.read_text()) == written  # put back as train wrote it


def test_the_report_of_a_run_whose_folder_was_deleted_says_the_run_cache_brings_it_back(quick_run_root):
    """It said to retrain the run (at full size, up to 90 minutes), which the run cache restores in seconds."""
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run
    run_dir = next((tmp_path / "data" / "models").glob("*/run.json")).parent
    shutil.rmtree(run_dir)
    report = run_in_process(tmp_path, "report", "--run", run_dir.name)
    assert report.returncode == 1 and report.stderr.count("\n") == 1, report.stderr
    # Review 57 H: the command itself, with the run's own options (it said to find them with `runs diff`)
    assert ("the run cache keeps it: `make all PRESET=quick EPOCHS=1` brings its files back in seconds (on the data it"
            " was trained on)") in report.stderr
    again = run_in_process(tmp_path, "all", "--preset", "quick", "--epochs", "1")  # what the advice names
    assert "train: restored from the run cache" in again.stdout and (run_dir / "run.json").is_file(), again.stdout


@pytest.mark.slow
def test_the_way_back_to_a_run_on_the_users_own_folder_names_that_folder(tmp_path):
    """Review 60 H: the advice for a deleted run trained with SOURCE= named `make all PRESET=quick ...` alone, which
    trains on the sample (or Kaggle's files) instead, and run.json says only "folder"."""
    folder = tmp_path / "my digits"
    folder.mkdir()
    with zipfile.ZipFile(config.SAMPLE_ARCHIVE) as archive:
        archive.extractall(folder)
    train_csv = folder / "train.csv"
    train_csv.write_text("".join(train_csv.read_text().splitlines(keepends=True)[:2001]))  # the user's own rows
    root = tmp_path / "project"
    first = run_in_process(root, "all", "--source", str(folder), "--preset", "quick", "--epochs", "1", "--no-report")
    assert first.returncode == 0, first.stderr
    run_dir = next((root / "data" / "models").glob("*/run.json")).parent
    assert run_in_process(root, "all", "--preset", "quick", "--epochs", "1", "--no-report").returncode == 0  # sample
    shutil.rmtree(run_dir)
    report = run_in_process(root, "report", "--run", run_dir.name)
    advice = f"`make all SOURCE='{folder}' PRESET=quick EPOCHS=1` brings its files back in seconds"
    assert report.returncode == 1 and advice in report.stderr, report.stderr
    again = run_in_process(root, "all", "--source", str(folder), "--preset", "quick", "--epochs", "1")
    assert "train: restored from the run cache" in again.stdout and (run_dir / "run.json").is_file(), again.stdout


@pytest.mark.slow
def test_the_report_follows_a_new_submission_of_its_run(quick_run_root):
    """`predict --tta` (or another --final-weight) wrote <run>-2.csv, and `report` stayed `up to date`, its page
    naming the first file: the submission `make submit` sends was another."""
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run
    assert run_in_process(tmp_path, "report").returncode == 0
    predicted = run_in_process(tmp_path, "predict", "--tta")
    new_file = next(path for path in (tmp_path / "submissions").glob("*-2.csv"))
    assert predicted.returncode == 0 and new_file.name in predicted.stdout
    # Review 60 H: until `report` ran, the page named the earlier file (and its score): predict writes it again
    page = next((tmp_path / "data" / "reports").glob("*/index.html"))
    assert "predict: the report page names this submission now" in predicted.stdout, predicted.stdout
    assert new_file.name in page.read_text() and "(with test-time augmentation)" in page.read_text()
    again = run_in_process(tmp_path, "report")
    assert again.returncode == 0 and "up to date" not in again.stdout, again.stdout
    page = next((tmp_path / "data" / "reports").glob("*/index.html")).read_text()
    assert new_file.name in page


@pytest.mark.slow
def test_the_latest_run_named_is_reported_after_a_new_split(quick_run_root):
    """`report --run <latest>` after `split` changed was refused with advice to train again (up to 1 h 46 with
    `best`), where any earlier run on the same data was reported."""
    tmp_path = quick_run_root  # where `all` (QUICK_RUN) has run
    run_id = next((tmp_path / "data" / "models").glob("*/run.json")).parent.name
    assert run_in_process(tmp_path, "split", "--seed", "7").returncode == 0
    named = run_in_process(tmp_path, "report", "--run", run_id)
    assert named.returncode == 0 and "Traceback" not in named.stderr, named.stderr
    assert (tmp_path / "data" / "reports" / run_id / "index.html").is_file()
    # Not named: the latest run's page all the same (review 57 H: refused, while --run of the same run worked)
    latest = run_in_process(tmp_path, "report")
    assert latest.returncode == 0, latest.stderr
    assert latest.stdout.startswith(f"report: the latest run, {run_id}, trained before the current split or data")


def test_stage_code_checked_to_compute_the_same_results_keeps_the_digest_it_replaced(monkeypatch, tmp_path):
    """Training that stops at a NaN loss trains the same models: its runs stay current (SAME_RESULTS), but only for
    that exact code; any later edit reruns the stage as usual."""
    digest = stage.code_digest.__wrapped__  # without the per-process memo
    own = digest("split")
    monkeypatch.setattr(stage, "SAME_RESULTS", {"split": {own: "0123456789abcdef"}})
    assert digest("split") == "0123456789abcdef" and digest("prepare") != "0123456789abcdef"
    edited = tmp_path / "split.py"
    edited.write_text(stage._module_file("stages.split").read_text() + "# a comment\n")
    real = stage._module_file
    monkeypatch.setattr(stage, "_module_file", lambda name: edited if name == "stages.split" else real(name))
    assert digest("split") not in (own, "0123456789abcdef")
