"""`runs` for comparing: 100 columns, full-size runs first, sorting, tune trials, `runs diff`, scores beside
estimates."""

import json

import pytest

from conftest import run_in_process
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
    assert "20260104-100000-small" not in table and "1 runs on the bundled sample not shown (`runs --all`" in table
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
    (["runs", "diff", "20260101-100000-deotte", "nothing-here"], "no such run"),
    (["runs", "--sort", "score"], "'score' is not one of"),
])
def test_runs_bad_input_is_one_clear_error(mixed_root, arguments, expected):
    result = run_in_process(mixed_root, *arguments)
    assert result.returncode != 0 and "Traceback" not in result.stderr and expected in result.stderr


def test_tune_trials_are_marked():
    assert runs_table.preset_cell({"preset": "quick", "tune": {"trial": 3}}) == "quick t3"
    assert runs_table.preset_cell({"preset": "quick"}) == "quick"
