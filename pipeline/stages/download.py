"""Stage 1, download: the competition's CSV files into data/raw/, from one of three sources.

- kaggle: the official client (pipeline.competition.kaggle_api), which saves the competition zip;
- a PATH: a competition zip or a folder holding train.csv and test.csv, as downloaded by hand;
- sample: the small archive shipped in data/sample/, in exactly the competition's format.
"""

import contextlib
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from pipeline.competition import kaggle_api
from pipeline.competition.credentials import (credential_warnings, find_credentials,
                                              refuse_a_kaggle_json_the_client_breaks_on)
from pipeline.core import config
from pipeline.core.cache import record_path, relative_name, write_errors_named
from pipeline.core.errors import PipelineError
from pipeline.core.stage import Definition

REQUIRED_FILES = ("train.csv", "test.csv")
OPTIONAL_FILES = ("sample_submission.csv",)
# The real files are 77 MB and 51 MB; anything far larger is not this competition (or a zip bomb).
MAX_MEMBER_BYTES = 1 << 30


def resolve_source(source: str, credentials: str | None) -> tuple[str, Path | None]:
    """Turn --source into (kind, path): kind is 'kaggle', 'sample', 'zip' or 'folder'."""
    if source == "auto":
        return ("kaggle", None) if credentials else ("sample", config.SAMPLE_ARCHIVE)
    if source == "kaggle":
        return "kaggle", None
    if source == "sample":
        return "sample", config.SAMPLE_ARCHIVE
    if not source.strip():  # Path("") is the current folder
        raise PipelineError(f"--source {source!r}: expected auto, kaggle, sample, a competition zip or a folder"
                            " holding train.csv and test.csv")
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder", path.resolve()
    if path.is_file():
        if path.name.lower().endswith((".csv", ".csv.gz", ".gz")):  # else "not a readable zip archive"
            raise PipelineError(f"{path.absolute()}: one file, expected the competition zip or the folder holding"
                                " train.csv and test.csv (unpacked, as Kaggle gives them)")
        return "zip", path.resolve()
    raise PipelineError(  # named whole: a relative path was looked for from the current folder (make -C: the checkout)
        f"{path.absolute()}: no such file or folder (expected auto, kaggle, sample, a competition zip "
        "or a folder holding train.csv and test.csv)"
    )


def _safe_member_name(archive: Path, name: str) -> str:
    """The member's file name, refusing any path that would leave the target folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise PipelineError(f"{archive}: member {name!r} points outside the target folder; refusing the archive")
    return path.name


def competition_members(zip_file: zipfile.ZipFile, shown_as) -> dict[str, zipfile.ZipInfo]:
    """The archive's train.csv, test.csv (and sample_submission.csv) by name, each checked: no path leaving the
    target folder, none far larger than the competition's files; the archive named shown_as in errors."""
    wanted = REQUIRED_FILES + OPTIONAL_FILES
    members = {}
    for info in zip_file.infolist():
        file_name = _safe_member_name(shown_as, info.filename)
        if file_name in wanted and not info.is_dir():
            if file_name in members:  # which one is the competition's cannot be told: the last one was taken
                raise PipelineError(f"{shown_as}: two members could be {file_name} ({members[file_name].filename} and"
                                    f" {info.filename}); expected one of each of the competition's files")
            members[file_name] = info
    missing = [name for name in REQUIRED_FILES if name not in members]
    if missing:
        raise PipelineError(f"{shown_as}: no {' or '.join(missing)} in the archive"
                            " (expected the competition's files)")
    for _, info in sorted(members.items()):
        if info.file_size > MAX_MEMBER_BYTES:
            raise PipelineError(f"{shown_as}: member {info.filename} is {info.file_size} bytes, far larger"
                                " than the competition's files")
    return members


def check_competition_archive(archive: Path, shown_as: str) -> None:
    """Raise PipelineError unless the zip holds the competition's files (competition_members' checks)."""
    _read_zip(archive, shown_as, lambda zip_file: competition_members(zip_file, shown_as))


def extract_competition_files(archive: Path, target_dir: Path, mark: Path | None = None) -> list[Path]:
    """Extract train.csv, test.csv (and sample_submission.csv) from a competition zip.

    Every member is checked before a byte is written, and the files go to a temporary folder
    first: target_dir changes only once the whole archive has been read back (see _install).
    """
    def extract(zip_file):
        members = competition_members(zip_file, archive)
        with _staging_folder(target_dir) as staging:
            for file_name, info in sorted(members.items()):
                with write_errors_named(target_dir / file_name), open(staging / file_name, "wb") as destination:
                    for chunk in _member_chunks(archive, zip_file, info):
                        destination.write(chunk)
            return _install(staging, target_dir, mark)

    return _read_zip(archive, archive, extract)


def _read_zip(archive: Path, shown_as, read):
    """read(the open zip file)'s value; an archive zipfile cannot read is one PipelineError naming shown_as."""
    try:
        with zipfile.ZipFile(archive) as zip_file:
            return read(zip_file)
    # UnicodeDecodeError: a member name flagged as UTF-8 that is not.
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError, UnicodeDecodeError) as error:
        raise PipelineError(f"{shown_as}: not a readable zip archive ({error})") from None


def _member_chunks(archive: Path, zip_file: zipfile.ZipFile, info: zipfile.ZipInfo):
    """The member's bytes. A corrupt archive fails here in many ways (zlib.error, a bad CRC, OSError
    from bz2 or a bad seek, LZMAError, RuntimeError for a flipped "encrypted" bit): all the archive's
    fault, so all one PipelineError; errors writing the target are not caught here."""
    try:
        with zip_file.open(info) as source:
            while chunk := source.read(1 << 20):
                yield chunk
    except Exception as error:
        raise PipelineError(f"{archive}: not a readable zip archive ({info.filename!r}: {error})") from None


def copy_competition_folder(folder: Path, target_dir: Path, mark: Path | None = None) -> list[Path]:
    """Copy the competition's files from a folder, refusing links that lead out of it and files
    too large to be the competition's, before anything is copied."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise PipelineError(f"{folder}: no {' or '.join(missing)} in this folder (expected the competition's"
                            f" files){_where_they_may_be(folder, missing)}")
    names = [name for name in REQUIRED_FILES + OPTIONAL_FILES if (folder / name).is_file()]
    for name in names:
        source = folder / name
        real_path = source.resolve()
        if not real_path.is_relative_to(folder.resolve()):
            raise PipelineError(f"{source}: a link to a file outside {folder}; refusing it "
                                "(copy the competition's file itself into the folder)")
        size = real_path.stat().st_size
        if size > MAX_MEMBER_BYTES:
            raise PipelineError(f"{source}: {size} bytes, far larger than the competition's files")
    with _staging_folder(target_dir) as staging:
        for name in names:
            with write_errors_named(target_dir / name):
                shutil.copyfile((folder / name).resolve(), staging / name)
        return _install(staging, target_dir, mark)


def _where_they_may_be(folder: Path, missing: list[str]) -> str:
    """'; <sub> holds them: pass that folder' for the folder one level too high, '; train.csv.gz is there: unpack it'
    for compressed files, '; digit-recognizer.zip is there: pass the zip itself' for the folder it was saved in; ''
    when none."""
    packed = [f"{name}.gz" for name in missing if (folder / f"{name}.gz").is_file()]
    if packed:
        return f"; {' and '.join(packed)} {'is' if len(packed) == 1 else 'are'} there: unpack with gunzip"
    holders = [sub for sub in sorted(folder.iterdir()) if sub.is_dir() and
               all((sub / name).is_file() for name in REQUIRED_FILES)] if folder.is_dir() else []
    if len(holders) == 1:
        return f"; {holders[0]} holds them: pass that folder"
    archives = sorted(folder.glob("*.zip")) if folder.is_dir() else []  # the competition's zip, saved by hand
    return f"; {archives[0].name} is there: pass the zip itself ({archives[0]})" if len(archives) == 1 else ""


@contextlib.contextmanager
def _staging_folder(target_dir: Path):
    """A temporary folder beside the files it will replace; swept like any temporary if killed."""
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = target_dir / f".tmp-{os.getpid()}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    with write_errors_named(target_dir):  # a read-only data/raw: named, not its temporary folder
        staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def unfinished_mark() -> Path:
    """Beside download's record, from _install's first rename until that record is written (not in data/raw, whose
    files are the download's alone)."""
    return record_path("download").with_suffix(".unfinished")


def _install(staging: Path, target_dir: Path, mark: Path | None = None) -> list[Path]:
    """Move every staged file into target_dir and drop an optional file the new source lacks; mark: a file made
    first, which the stage removes once its record is written (unfinished_mark).

    Only renames are left by now, nothing that can fail half way for a bad source; a process
    killed between them leaves files that no longer match the download record, so the next run
    downloads again (every stage holds the pipeline's lock, so no other stage reads them meanwhile).
    """
    written = []
    if mark is not None:  # a kill between the renames, or before the record: these files are no user's own
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    for path in sorted(staging.iterdir()):
        os.replace(path, target_dir / path.name)
        written.append(target_dir / path.name)
    remove_stale_optional_files(target_dir, written)
    return written


def remove_stale_optional_files(target_dir: Path, written: list[Path]) -> None:
    """A sample_submission.csv left from another source must not be checked against this one."""
    for name in OPTIONAL_FILES:
        if target_dir / name not in written and (target_dir / name).exists():
            (target_dir / name).unlink()


# ----------------------------------------------------------------------------------------- the stage

def _refuse_files_put_in_raw_by_hand(paths) -> None:
    """The competition's files in data/raw/ that no download wrote (no record of one) are the user's own, put
    where prepare reads: download would replace them, and keeps no copy (the bundled sample replaced them)."""
    if record_path("download").exists() or unfinished_mark().exists():  # a first download cut short
        return
    own = [paths.raw / name for name in REQUIRED_FILES + OPTIONAL_FILES if (paths.raw / name).exists()]
    if own:
        elsewhere = config.how_to("`make all SOURCE=that-folder`", "`digit-recognizer all --source that-folder`")
        raise PipelineError(f"{own[0]}: not written by download (no record of it), and download would replace it:"
                            f" keep your own files in a folder outside {paths.data} and pass it, {elsewhere}; or"
                            f" delete {paths.raw} to download")


def define(paths, console, source: str, competition: str, force_download: bool = False):
    """The download stage for --source (auto, kaggle, sample or a PATH) and --competition."""
    credentials = None
    if source in ("auto", "kaggle"):
        credentials = find_credentials()
    kind, path = resolve_source(source, credentials)
    if kind != "kaggle" and competition != config.COMPETITION:  # it would be ignored without a word
        if source == "auto":  # no credentials: the sample instead of the competition asked for
            raise PipelineError(f"--competition {competition}: no Kaggle credentials found to download it (README,"
                                " 'Kaggle credentials'); leave it out for the bundled sample")
        raise PipelineError(f"--competition {competition}: only the kaggle source downloads a competition (--source"
                            f" {source} has the files already); leave it out, or use --source kaggle")
    if source == "auto":
        console.say(f"download: Kaggle credentials found ({credentials}); using the competition {competition}"
                    if credentials else
                    "download: no Kaggle credentials found, using the bundled sample"
                    " (see README, 'Kaggle credentials')")
        if not credentials:  # a kaggle.json the client ignores (not JSON, no key) is why, and must be said
            for warning in credential_warnings():
                console.warn(warning)
            kept = paths.raw / f"{competition}.zip"  # credentials set in another shell: the competition's data
            if kept.is_file():                       # replaced by the sample's, and the stages after it rerun
                console.warn(f"{kept} holds the competition's files from an earlier download, but this shell has"
                             " no Kaggle credentials, so the sample is used: pass that zip"
                             f" ({config.how_to(f'SOURCE={kept}', f'--source {kept}')}) to train on it")
    _refuse_files_put_in_raw_by_hand(paths)
    if kind == "kaggle":
        refuse_a_kaggle_json_the_client_breaks_on()  # its one line, not a warning of it first
        for warning in credential_warnings():
            console.warn(warning)
        params, inputs = {"source": "kaggle", "competition": competition}, []
    else:
        params = {"source": kind, "path": relative_name(path)}
        # A folder: each file it may give (a sample_submission.csv mended or added reruns the stage; missing: None).
        inputs = [path] if kind != "folder" else [path / name for name in REQUIRED_FILES + OPTIONAL_FILES]

    def work():
        paths.raw.mkdir(parents=True, exist_ok=True)
        if kind == "kaggle":
            archive = kaggle_api.download_competition(competition, paths.raw, force=force_download,
                                                      quiet=console.quiet, check=check_competition_archive)
            written = extract_competition_files(archive, paths.raw, unfinished_mark())
        elif kind == "folder":
            written = copy_competition_folder(path, paths.raw, unfinished_mark())
        else:
            written = extract_competition_files(path, paths.raw, unfinished_mark())
        return written, {"source": kind if kind != "kaggle" else f"kaggle:{competition}",
                         "source_path": relative_name(path) if path else None}

    def describe(record):
        return f"{', '.join(Path(name).name for name in record['outputs'])} in {paths.raw}"

    def after_restore(record):
        remove_stale_optional_files(paths.raw, [paths.root / name for name in record["outputs"]])

    def after_record(record):
        unfinished_mark().unlink(missing_ok=True)

    return Definition("download", params, inputs, work, describe, after_restore=after_restore,
                      after_record=after_record)
