"""download: archives and folders as a user has them, and archives that must be refused."""

import zipfile
from pathlib import Path

import pytest

from pipeline.core import config
from pipeline.core.errors import PipelineError
from pipeline.stages import download
from pipeline.stages.download import (
    copy_competition_folder,
    extract_competition_files,
    remove_stale_optional_files,
    resolve_source,
)


def make_zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_bundled_sample_extracts_the_three_competition_files(tmp_path):
    written = extract_competition_files(config.SAMPLE_ARCHIVE, tmp_path)
    assert sorted(path.name for path in written) == ["sample_submission.csv", "test.csv", "train.csv"]
    assert (tmp_path / "train.csv").read_text().startswith("label,pixel0,")
    assert not list(tmp_path.glob(".tmp-*"))


def test_only_expected_members_are_extracted(tmp_path):
    archive = make_zip(tmp_path / "c.zip", {"train.csv": "a", "test.csv": "b", "notes/evil.sh": "x"})
    target = tmp_path / "raw"
    extract_competition_files(archive, target)
    assert sorted(path.name for path in target.iterdir()) == ["test.csv", "train.csv"]


def test_member_leaving_the_target_folder_is_refused(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"train.csv": "a", "test.csv": "b", "../../outside.csv": "x"})
    with pytest.raises(PipelineError, match="points outside the target folder"):
        extract_competition_files(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_zip_without_train_csv_is_refused(tmp_path):
    archive = make_zip(tmp_path / "c.zip", {"test.csv": "b"})
    with pytest.raises(PipelineError, match="no train.csv in the archive"):
        extract_competition_files(archive, tmp_path / "raw")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_zip_is_refused(tmp_path, cut):
    data = config.SAMPLE_ARCHIVE.read_bytes()
    archive = tmp_path / "cut.zip"
    archive.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(PipelineError, match="not a readable zip archive"):
        extract_competition_files(archive, tmp_path / "raw")
    assert not (tmp_path / "raw" / "train.csv").exists()


def test_corrupt_member_is_refused_and_leaves_nothing(tmp_path):
    data = bytearray(make_zip(tmp_path / "ok.zip", {"train.csv": "label,pixel0\n" * 500, "test.csv": "x"}).read_bytes())
    start = data.index(b"label,pixel0")
    data[start + 100] ^= 0xFF  # flip a byte inside the stored train.csv: its CRC no longer matches
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="not a readable zip"):
        extract_competition_files(tmp_path / "bad.zip", tmp_path / "raw")
    assert not (tmp_path / "raw" / "train.csv").exists()


def test_folder_source_copies_files(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "train.csv").write_text("t")
    (folder / "test.csv").write_text("s")
    written = copy_competition_folder(folder, tmp_path / "raw")
    assert sorted(path.name for path in written) == ["test.csv", "train.csv"]


def test_folder_without_test_csv_is_refused(tmp_path):
    (tmp_path / "train.csv").write_text("t")
    with pytest.raises(PipelineError, match="no test.csv in this folder"):
        copy_competition_folder(tmp_path, tmp_path / "raw")


def test_stale_sample_submission_is_removed(tmp_path):
    (tmp_path / "sample_submission.csv").write_text("old")
    remove_stale_optional_files(tmp_path, [tmp_path / "train.csv"])
    assert not (tmp_path / "sample_submission.csv").exists()


def test_resolve_source(tmp_path):
    assert resolve_source("auto", None) == ("sample", config.SAMPLE_ARCHIVE)
    assert resolve_source("auto", "KAGGLE_USERNAME/KAGGLE_KEY") == ("kaggle", None)
    assert resolve_source(str(tmp_path), None) == ("folder", tmp_path.resolve())
    with pytest.raises(PipelineError, match="no such file or folder"):
        resolve_source(str(tmp_path / "missing.zip"), None)


def test_a_single_csv_or_a_folder_one_level_too_high_is_said_for_what_it_is(tmp_path):
    """Review 57 D: a CSV given as the source was "not a readable zip archive", and a folder holding the competition's
    folder was refused without a word of where the files were."""
    for name in ("train.csv", "train.csv.gz"):
        (tmp_path / name).write_text("x")
        with pytest.raises(PipelineError, match=f"^{tmp_path / name}: one file, expected the competition zip or the"
                                                " folder holding train.csv and test.csv"):
            resolve_source(str(tmp_path / name), None)
    inner = tmp_path / "up" / "digit-recognizer"
    inner.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):
        (inner / name).write_text("x")
    with pytest.raises(PipelineError, match=f"; {inner} holds them: pass that folder$"):
        copy_competition_folder(tmp_path / "up", tmp_path / "raw")
    saved = tmp_path / "saved"  # review 60 F: the folder a zip downloaded by hand was saved in
    saved.mkdir()
    (saved / "digit-recognizer.zip").write_text("x")
    with pytest.raises(PipelineError, match=f"; digit-recognizer.zip is there: pass the zip itself"
                                            f" \\({saved / 'digit-recognizer.zip'}\\)$"):
        copy_competition_folder(saved, tmp_path / "raw")
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("train.csv.gz", "test.csv.gz"):
        (packed / name).write_text("x")
    with pytest.raises(PipelineError, match="; train.csv.gz and test.csv.gz are there: unpack with gunzip$"):
        copy_competition_folder(packed, tmp_path / "raw")


def test_a_relative_path_not_found_is_named_whole(tmp_path, monkeypatch):
    """Review 57 E: `make -C checkout download SOURCE=dr.zip` (and `submit FILE=sub.csv`) looked in the checkout, and
    the error named `dr.zip` alone."""
    from pipeline.competition.submission import read_submission

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=f"^{tmp_path / 'dr.zip'}: no such file or folder"):
        resolve_source("dr.zip", None)
    with pytest.raises(PipelineError, match=f"^{tmp_path / 'sub.csv'}: file not found"):
        read_submission(Path("sub.csv"))


OLD_RAW = {"train.csv": "old train", "test.csv": "old test", "sample_submission.csv": "old sample"}


def raw_with_old_files(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, text in OLD_RAW.items():
        (raw / name).write_text(text)
    return raw


def assert_unchanged(raw):
    assert {path.name: path.read_text() for path in raw.iterdir()} == OLD_RAW


def test_archive_refused_half_way_leaves_raw_as_it_was(tmp_path, monkeypatch):
    """Issue 9: the members before the refused one had already replaced the old files."""
    monkeypatch.setattr(download, "MAX_MEMBER_BYTES", 100)
    archive = make_zip(tmp_path / "c.zip", {"sample_submission.csv": "new", "test.csv": "new",
                                            "train.csv": "x" * 1000})
    raw = raw_with_old_files(tmp_path)
    with pytest.raises(PipelineError, match="member train.csv is 1000 bytes"):
        extract_competition_files(archive, raw)
    assert_unchanged(raw)


def test_corrupt_archive_leaves_raw_as_it_was(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"test.csv": "new", "train.csv": "label,pixel0\n" * 500})
    data = bytearray(archive.read_bytes())
    data[data.index(b"label,pixel0") + 100] ^= 0xFF
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    raw = raw_with_old_files(tmp_path)
    with pytest.raises(PipelineError, match="not a readable zip"):
        extract_competition_files(tmp_path / "bad.zip", raw)
    assert_unchanged(raw)


def test_folder_link_to_a_file_outside_is_refused(tmp_path):
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:the first line of a system file\n")
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "train.csv").symlink_to(secret)
    (folder / "test.csv").write_text("s")
    raw = raw_with_old_files(tmp_path)
    with pytest.raises(PipelineError, match="a link to a file outside") as caught:
        copy_competition_folder(folder, raw)
    assert "root:x" not in str(caught.value)
    assert_unchanged(raw)


def test_folder_link_inside_the_folder_is_followed(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "train-v2.csv").write_text("t")
    (folder / "train.csv").symlink_to(folder / "train-v2.csv")
    (folder / "test.csv").write_text("s")
    copy_competition_folder(folder, tmp_path / "raw")
    assert (tmp_path / "raw" / "train.csv").read_text() == "t" and not (tmp_path / "raw" / "train.csv").is_symlink()


def test_folder_file_too_large_is_refused_before_copying(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "MAX_MEMBER_BYTES", 100)
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "train.csv").write_text("x" * 1000)
    (folder / "test.csv").write_text("s")
    raw = raw_with_old_files(tmp_path)
    with pytest.raises(PipelineError, match="train.csv: 1000 bytes, far larger"):
        copy_competition_folder(folder, raw)
    assert_unchanged(raw)


def test_a_mended_sample_submission_in_a_folder_source_is_downloaded_again(tmp_path):
    """A folder's download was keyed by its train.csv and test.csv alone: mending its sample_submission.csv left
    download `up to date`, and prepare refused the old copy on every run."""
    from conftest import run_in_process

    folder, root = tmp_path / "competition", tmp_path / "project"
    with zipfile.ZipFile(config.SAMPLE_ARCHIVE) as archive:
        archive.extractall(folder)
    good = (folder / "sample_submission.csv").read_text()
    (folder / "sample_submission.csv").write_text("".join(good.splitlines(keepends=True)[:-1]))  # a row short
    assert run_in_process(root, "download", "--source", str(folder)).returncode == 0
    refused = run_in_process(root, "prepare")
    assert refused.returncode == 1 and "sample_submission.csv: 599 rows, expected 600" in refused.stderr
    (folder / "sample_submission.csv").write_text(good)
    again = run_in_process(root, "download", "--source", str(folder))
    assert again.returncode == 0 and "up to date" not in again.stdout, again.stdout
    prepared = run_in_process(root, "prepare")
    assert prepared.returncode == 0, prepared.stderr


def test_a_zip_with_two_members_of_one_name_is_refused(tmp_path):
    """A zip holding train.csv and old/train.csv: the last one listed was taken without a word (199 rows, not 2,400)."""
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        for name in ("train.csv", "test.csv", "old/train.csv"):
            zip_file.writestr(name, "label,pixel0\n1,0\n")
    with pytest.raises(PipelineError) as raised:
        extract_competition_files(archive, tmp_path / "raw")
    assert str(raised.value) == (f"{archive}: two members could be train.csv (train.csv and old/train.csv); expected"
                                 " one of each of the competition's files")
    assert not (tmp_path / "raw" / "train.csv").exists()


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_source_is_refused_not_taken_as_the_current_folder(source):
    with pytest.raises(PipelineError, match=r"^--source '\s*': expected auto, kaggle, sample, a competition zip"):
        download.resolve_source(source, None)


def test_a_competition_beside_a_source_that_has_the_files_is_refused(tmp_path):
    """`download --source sample --competition titanic` ignored the competition without a word."""
    from conftest import run_in_process

    result = run_in_process(tmp_path, "download", "--source", "sample", "--competition", "titanic")
    assert result.returncode == 1 and result.stderr == (
        "error: --competition titanic: only the kaggle source downloads a competition (--source sample has the files"
        " already); leave it out, or use --source kaggle\n")
    named = run_in_process(tmp_path, "download", "--source", "sample", "--competition", "digit-recognizer")
    assert named.returncode == 0
    # auto without credentials: the sample it falls back to would ignore the competition asked for
    fallback = run_in_process(tmp_path / "auto", "download", "--competition", "titanic",
                              env={"KAGGLE_CONFIG_DIR": str(tmp_path / "none")})
    assert fallback.returncode == 1 and fallback.stderr == (
        "error: --competition titanic: no Kaggle credentials found to download it (README, 'Kaggle credentials');"
        " leave it out for the bundled sample\n")


def test_a_read_only_raw_folder_is_named_not_its_temporary_staging_folder(tmp_path, monkeypatch):
    """The error named data/raw/.tmp-<pid>-staging, a folder the user never sees."""
    import errno
    from pathlib import Path

    from pipeline.core.errors import PipelineError
    from pipeline.stages import download

    real_mkdir = Path.mkdir

    def read_only(self, *arguments, **options):
        if self.name.startswith(".tmp-"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *arguments, **options)

    monkeypatch.setattr(Path, "mkdir", read_only)
    raw = tmp_path / "data" / "raw"
    with pytest.raises(PipelineError, match=f"^{raw}: cannot write \\(Read-only file system\\); make the folder"):
        download.extract_competition_files(download.config.SAMPLE_ARCHIVE, raw)
