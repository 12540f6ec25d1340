"""`runs` for comparing: 100 columns, full-size runs first, sorting, tune trials, `runs diff`, scores beside
estimates."""

import json
import shutil

import pytest

from conftest import run_in_process
from pipeline.core import config, runs, sent_log
from pipeline.core.records import Leaderboard, ReportRecord, Run, SubmissionRecord, TuneMark
from pipeline.tools import runs_table

# Values as wide as a tune trial's: the table must still fit.
PARAMS = dict(architecture="deotte", epochs=18, learning_rate=0.00153, augmentation=1.25, dropout=0.35, width=1.25,
              seed=42, members=1, batch_size=64)


def make_run(run_id, source="kaggle", accuracy=0.9952, date="2026-01-01 10:00:00", preset="default", score=None,
             **extra):
    run = {"id": run_id, "date": date, "source": source, "preset": preset, "params": dict(PARAMS),
           "estimate": {"accuracy": accuracy, "low": accuracy - 0.0007, "high": accuracy + 0.0006,
                        "kind": "cross-validation", "folds": 5, "images": 42000, "errors": 200},
           "data": {"train_images.npy": source * 8}, "models": ["a.keras", "b.keras"],
           "submission": f"submissions/{run_id}.csv", "durations_s": {"train": 1234.5}, **extra}
    if score is not None:
        run["leaderboard"] = {"ref": 1, "status": "COMPLETE", "public_score": score, "private_score": ""}
    return run


def write_runs(root, *records):
    for run in records:
        folder = root / "data" / "models" / run["id"]
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(run))


@pytest.fixture
def mixed_root(pipeline_root):
    write_runs(pipeline_root,
               make_run("20260101-100000-deotte", accuracy=0.9952, score="0.99543"),
               make_run("20260102-100000-deotte-12", accuracy=0.9960, date="2026-01-02 10:00:00", score="0.99400",
                        preset="baseline", tune={"trial": 12, "trials": 16, "search_seed": 0}),
               make_run("20260103-100000-cnn", accuracy=0.9940, date="2026-01-03 10:00:00"),
               make_run("20260104-100000-small", source="sample", accuracy=0.9667, date="2026-01-04 10:00:00"))
    return pipeline_root


def test_runs_fits_100_columns_and_hides_sample_runs_when_there_are_full_size_ones(mixed_root):
    table = run_in_process(mixed_root, "runs").stdout
    lines = table.splitlines()
    assert max(map(len, lines)) <= 100, table
    assert "20260104-100000-small" not in table
    assert "1 run on the bundled sample not shown (`make runs ALL=1` lists them)" in table
    # learning rate, augmentation, dropout and width are columns; the tune trial is marked
    assert lines[0].split()[:7] == ["run", "preset", "ep", "lr", "aug", "drop", "w"]
    assert "baseline t12" in table
    # the score beside the estimate, its gap in points and whether it lies in the 95 % interval
    first = next(line for line in lines if line.startswith("20260101-100000-deotte "))
    assert "0.9952" in first and "0.99543" in first and "+0.02 in" in first
    tuned = next(line for line in lines if line.startswith("20260102-100000-deotte-12"))
    assert "-0.20 out" in tuned
    everything = run_in_process(mixed_root, "runs", "--all").stdout
    assert "20260104-100000-small" in everything and "not shown" not in everything
    # review 57 H: the sample's run was ranked among full-size ones without a mark
    sample = next(line for line in everything.splitlines() if line.startswith("20260104-100000-small"))
    assert sample.split()[1:3] == ["default", "s"]
    assert "s: trained on the bundled sample, its estimate of other rows than the full-size runs'" in everything
    assert "trained on the bundled sample" not in table  # hidden without --all: nothing to tell apart
    wide = run_in_process(mixed_root, "runs", "--wide").stdout
    assert "95 % interval" in wide and "20260101-100000-deotte.csv" in wide


@pytest.mark.parametrize("sort, order", [
    ("estimate", ["20260102-100000-deotte-12", "20260101-100000-deotte", "20260103-100000-cnn"]),
    ("leaderboard", ["20260101-100000-deotte", "20260102-100000-deotte-12", "20260103-100000-cnn"]),
    ("time", ["20260103-100000-cnn", "20260102-100000-deotte-12", "20260101-100000-deotte"]),
])
def test_runs_sort(mixed_root, sort, order):
    lines = run_in_process(mixed_root, "runs", "--sort", sort).stdout.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == order


def test_runs_counts_the_checkpoints_of_unfinished_trainings(mixed_root):
    """A training stopped and never resumed with the same options kept its checkpoints for good, unseen."""
    assert "unfinished" not in run_in_process(mixed_root, "runs").stdout
    checkpoints = mixed_root / "data" / "models" / ".checkpoints"
    for key, size in (("a1b2c3", 1_500_000), ("d4e5f6", 1_000_000)):
        (checkpoints / key / "member-0").mkdir(parents=True)
        (checkpoints / key / "member-0" / "epoch-3.keras").write_bytes(b"\0" * size)
    listed = run_in_process(mixed_root, "runs")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == ("unfinished trainings: 2, 2.5 MB of checkpoints in"
                                              " data/models/.checkpoints (the same options go on from their last"
                                              " epoch; delete the folder to forget them)")


def test_runs_quiet_prints_the_table_alone(mixed_root):
    """README: QUIET prints only errors (and the tables of `runs`, `submissions`); review 58 K: the run cache's
    two lines came too."""
    for everything in ([], ["--all"]):  # review 58 R: without --all, the line on hidden sample runs came too
        loud = run_in_process(mixed_root, "runs", *everything)
        quiet = run_in_process(mixed_root, "--quiet", "runs", *everything)
        assert loud.returncode == quiet.returncode == 0 and "run cache: " in loud.stdout
        assert "run cache" not in quiet.stdout and "not shown" not in quiet.stdout
        assert quiet.stdout.splitlines() == loud.stdout.splitlines()[:len(quiet.stdout.splitlines())]
        assert all(line.startswith(("run ", "20")) for line in quiet.stdout.splitlines()), quiet.stdout


def test_a_large_seed_is_shown_whole():
    """`runs --wide` showed a seed of 20261207 as 2.02612e+07, which cannot be typed back."""
    run_id = "20260101-100000-deotte"
    run = Run.from_json({**make_run(run_id), "params": {**PARAMS, "seed": 20261207}}, run_id)
    assert "20261207" in runs_table.format_runs_table([run], wide=True)


def test_only_sample_runs_are_all_shown(pipeline_root):
    write_runs(pipeline_root, make_run("20260104-100000-small", source="sample"))
    table = run_in_process(pipeline_root, "runs").stdout
    assert "20260104-100000-small" in table and "not shown" not in table


def test_runs_diff_prints_only_what_differs(mixed_root):
    result = run_in_process(mixed_root, "runs", "diff", "20260101-100000-deotte", "20260102-100000-deotte-12")
    assert result.returncode == 0, result.stderr
    fields = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert fields == ["preset", "estimate", "leaderboard", "gap"]
    assert "baseline t12" in result.stdout and "outside its 95 % interval" in result.stdout
    data = run_in_process(mixed_root, "runs", "diff", "20260101-100000-deotte", "20260104-100000-small").stdout
    assert "source" in data and "data.train_images.npy" in data


@pytest.mark.parametrize("arguments, expected", [
    (["runs", "diff", "20260101-100000-deotte", "nothing-here"], "run nothing-here: no such run"),  # not `--run`
    (["runs", "--sort", "score"], "'score' is not one of"),
])
def test_runs_bad_input_is_one_clear_error(mixed_root, arguments, expected):
    result = run_in_process(mixed_root, *arguments)
    assert result.returncode != 0 and "Traceback" not in result.stderr and expected in result.stderr


def test_tune_trials_are_marked():
    assert runs_table.preset_cell(Run(id="r", preset="quick", tune=TuneMark(3, 16, 0))) == "quick t3"
    assert runs_table.preset_cell(Run.from_json({"preset": "quick", "tune": {"trial": 3}})) == "quick t3"  # older
    assert runs_table.preset_cell(Run(id="r", preset="quick")) == "quick"


def test_a_run_json_of_the_previous_format_is_listed_with_its_submission_report_and_score(pipeline_root):
    """Earlier versions wrote what predict, report, submit and tune learnt into run.json itself."""
    old = make_run("20260101-100000-deotte", score="0.99543", report="data/reports/20260101-100000-deotte/index.html",
                   tune={"trial": 2, "trials": 4, "search_seed": 0})
    write_runs(pipeline_root, old)
    run, = runs.list_runs(config.paths())
    assert run.submission == "submissions/20260101-100000-deotte.csv"
    assert run.report == "data/reports/20260101-100000-deotte/index.html"
    assert run.leaderboard.status == "COMPLETE" and run.public_score == pytest.approx(0.99543)
    assert run.tune == TuneMark(2, 4, 0) and runs.read_run(config.paths(), run.id) == run
    wide = run_in_process(pipeline_root, "runs", "--wide").stdout
    line = next(line for line in wide.splitlines() if line.startswith(run.id))
    assert "0.99543" in line and "+0.02 in" in line and "20260101-100000-deotte.csv" in line and "default t2" in line


def test_a_run_is_composed_of_its_folder_s_records_and_the_sent_log(pipeline_root):
    """run.json is train's; predict, report and tune write their own files, and the scores live in the sent log.
    Where an old run.json and a newer record both say something, the newer record wins."""
    run_id = "20260101-100000-deotte"
    write_runs(pipeline_root, make_run(run_id, score="0.99000"))  # an older score inside run.json
    paths = config.paths()
    runs.write_submission_record(paths, run_id, SubmissionRecord("submissions/other.csv", rows=28000, seconds=2.5))
    runs.write_report_record(paths, run_id, ReportRecord("data/reports/x/index.html"))
    runs.write_tune_mark(paths, run_id, TuneMark(5, 8, 1))
    answer = {"message": "ok", "ref": 1001}
    sent_log.record_sent_submission(paths, "d1", paths.root / "submissions/other.csv", "m", answer, run_id)
    run = runs.read_run(paths, run_id)
    assert run.submission == "submissions/other.csv" and run.report == "data/reports/x/index.html"
    assert run.tune == TuneMark(5, 8, 1) and run.durations_s == {"train": 1234.5, "predict": 2.5}
    assert run.leaderboard == Leaderboard(ref=1001, status="PENDING") and run.public_score is None
    sent_log.update_sent_submission(paths, {"ref": 1001, "status": "COMPLETE", "public_score": "0.99543",
                                            "private_score": "", "error_description": "", "description": "m"})
    assert runs.read_run(paths, run_id).public_score == pytest.approx(0.99543)
    assert runs.run_for_submission(paths, paths.root / "submissions/other.csv")[0].id == run_id


def test_a_deleted_submission_is_said_to_be_deleted(pipeline_root):
    """`runs --wide` and the run's page named a submission whose file was gone as if it were there."""
    write_runs(pipeline_root, make_run("20260101-100000-deotte"))
    submission = pipeline_root / "submissions" / "20260101-100000-deotte.csv"
    submission.parent.mkdir()
    submission.write_text("ImageId,Label\n")
    assert runs_table.submission_name("submissions/20260101-100000-deotte.csv") == "20260101-100000-deotte.csv"
    wide = run_in_process(pipeline_root, "runs", "--wide").stdout
    assert "20260101-100000-deotte.csv" in wide and "(deleted)" not in wide
    submission.unlink()
    assert "20260101-100000-deotte.csv (deleted)" in run_in_process(pipeline_root, "runs", "--wide").stdout


def test_a_run_whose_folder_was_deleted_still_shows_its_submission(quick_run_root):
    """`runs --wide` showed `-` for a submission still in submissions/, and `submit --run` said the run had none."""
    import shutil

    run_id = json.loads((quick_run_root / "data" / ".cache" / "train.json").read_text())["extra"]["run_id"]
    shutil.rmtree(quick_run_root / "data" / "models" / run_id)
    wide = run_in_process(quick_run_root, "runs", "--wide", "--all").stdout
    line = next(line for line in wide.splitlines() if line.startswith(run_id))
    assert f"{run_id}.csv" in line, wide


def test_a_run_whose_folder_is_gone_is_marked_as_kept_by_the_run_cache_alone(quick_run_root):
    """Review 57 H: `runs` listed a run whose folder was deleted as if it were there (report and blend refused it)."""
    run_dir = next((quick_run_root / "data" / "models").glob("*/run.json")).parent
    line = next(line for line in run_in_process(quick_run_root, "runs").stdout.splitlines()
                if line.startswith(run_dir.name))
    assert line.split()[:3] == [run_dir.name, "quick", "1"]  # its epochs next
    shutil.rmtree(run_dir)
    table = run_in_process(quick_run_root, "runs").stdout
    line = next(line for line in table.splitlines() if line.startswith(run_dir.name))
    assert line.split()[:3] == [run_dir.name, "quick", "*"]  # the id stays one to copy (review 59 D)
    assert "*: its folder in data/models is gone; the run cache keeps its models (its options train it back in" in table


def test_a_run_whose_folder_is_gone_keeps_the_submission_last_chosen(quick_run_root):
    """Review 60 H: with its folder gone, a run was listed with the newest file predict had made for it (and that
    file's score), not the one the user had gone back to."""
    run_dir = next((quick_run_root / "data" / "models").glob("*/run.json")).parent
    assert run_in_process(quick_run_root, "predict", "--tta").returncode == 0  # <run>-2.csv (or the same labels)
    back = run_in_process(quick_run_root, "predict", "--no-tta")  # the first file again, from the run cache
    assert back.returncode == 0 and f"{run_dir.name}.csv" in back.stdout, back.stdout
    shutil.rmtree(run_dir)
    wide = run_in_process(quick_run_root, "runs", "--wide").stdout
    line = next(line for line in wide.splitlines() if line.startswith(run_dir.name))
    assert f" {run_dir.name}.csv " in f"{line} ", wide


def test_runs_diff_of_an_older_run_lists_no_option_the_newer_one_leaves_at_its_default():
    """Review 57 H: every option added since an older run was listed as a difference (`pseudo_tune - 0`), though the
    older run trained as that default does."""
    older = Run.from_json(make_run("20260101-100000-deotte"), "20260101-100000-deotte")
    newer = Run.from_json(make_run("20260102-100000-deotte", params={**PARAMS, "pseudo_tune": 0, "ema": 0.0}),
                          "20260102-100000-deotte")
    assert [name for name, _, _ in runs_table.differences(older, newer)] == []
    changed = Run.from_json(make_run("20260103-100000-deotte", params={**PARAMS, "pseudo_tune": 3}),
                            "20260103-100000-deotte")
    assert runs_table.differences(older, changed) == [("params.pseudo_tune", "-", "3")]
    assert runs_table.differences(changed, older) == [("params.pseudo_tune", "3", "-")]


def test_the_wide_table_tells_a_pseudo_labelled_run_from_one_with_a_model_on_all_rows_alone():
    """Review 60 H: `runs --wide` ("every column") gave the two the same row but for the date."""
    final = {**PARAMS, "final_model": True, "pseudo_label": False}
    assert runs_table.recipe_cell(final) == "all-rows"
    assert runs_table.recipe_cell({**final, "pseudo_label": True, "rare_looks": 2, "tta": True}) == (
        "all-rows,pseudo,looks 2,tta")
    assert runs_table.recipe_cell({**PARAMS, "final_model": False, "alternate": "none"}) == "-"
