"""Inside a Kaggle Notebook: the competition's data mounted read-only at /kaggle/input/digit-recognizer/."""

import json
import os
import stat
import zipfile

import pytest

from conftest import PROJECT_ROOT, run_in_process


@pytest.fixture
def kaggle_mount(tmp_path):
    """/kaggle/input/digit-recognizer/ as a notebook sees it: the three CSVs in a read-only folder."""
    folder = tmp_path / "kaggle" / "input" / "digit-recognizer"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip") as archive:
        archive.extractall(folder)
    for path in [*folder.iterdir(), folder]:
        path.chmod(stat.S_IREAD | stat.S_IEXEC if path.is_dir() else stat.S_IREAD)
    yield folder
    for path in [folder, *folder.iterdir()]:
        path.chmod(stat.S_IRWXU)


@pytest.mark.slow
def test_a_kaggle_notebook_mount_works_as_source(kaggle_mount, tmp_path):
    working = tmp_path / "kaggle" / "working"  # a notebook's writable folder, where its outputs go
    result = run_in_process(working, "all", "--source", str(kaggle_mount), "--preset", "quick", "--epochs", "1",
                            "--no-report")
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(next((working / "data" / "models").glob("*/run.json")).read_text())
    assert run["source"] == "folder"  # the mount's data, not the bundled sample
    submission = next((working / "submissions").glob("*.csv"))
    lines = submission.read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 601  # one row per test.csv row of the mount
    assert sorted(os.listdir(kaggle_mount)) == ["sample_submission.csv", "test.csv", "train.csv"]  # nothing written
