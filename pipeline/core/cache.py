"""The stage cache: a stage is skipped when its inputs, parameters, code and outputs are unchanged.

Like DVC's run cache, a stage is keyed on the content hashes of what it reads, its parameter
values and the source of the code that runs it. The record also holds the hashes of what the
stage wrote, so an output that was edited, truncated or deleted afterwards makes it run again.

Outputs are written under a temporary name and renamed when complete (`atomic_path`), and the
record is written last, so a stage killed half way leaves nothing a later run takes for finished.
"""

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.core import config
from pipeline.core.errors import Interrupted, PipelineError, write_error


def file_digest(path: Path) -> str:
    """The file's SHA-256 in hex, read in blocks by the standard library (hashlib.file_digest, Python 3.11)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def path_digest(path: Path) -> str | None:
    """Digest of a file, or of a folder's files and their relative names; None when missing."""
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(member.relative_to(path).as_posix().encode())
            digest.update(file_digest(member).encode())
        return digest.hexdigest()
    return None


def relative_name(path: Path) -> str:
    """path relative to the project root when it lies inside it: records and run.json stay valid
    when the checkout is moved. A path outside (a user's own zip) stays absolute, its links resolved.
    Inside, a folder that is a link (data/models kept on another disk) stays as named: resolved, its files
    were named outside the root, and the run cache refused every entry of it as tampered."""
    root = config.paths().root
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        try:
            return candidate.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(Path(path).resolve())


def absolute_path(name: str | Path) -> Path:
    path = Path(name)
    return path if path.is_absolute() else config.paths().root / path


@dataclass
class Stage:
    """What identifies one run of a stage: its name, parameters, inputs and code."""

    name: str
    params: dict
    inputs: list[Path] = field(default_factory=list)
    code: str = ""

    def key(self) -> dict:
        return {
            "params": self.params,
            "code": self.code,
            "inputs": {relative_name(path): path_digest(path) for path in self.inputs},
        }


def record_path(stage_name: str) -> Path:
    return config.paths().record(stage_name)


def load_record(stage_name: str) -> dict | None:
    """The stage's record; None when there is none or it is damaged (then the stage simply runs again)."""
    try:
        record = json.loads(record_path(stage_name).read_text())
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if has_record_shape(record) else None


def has_record_shape(record) -> bool:
    """Valid JSON can still be the wrong shape (edited by hand, written by another version)."""
    return (isinstance(record, dict) and isinstance(record.get("key"), dict)
            and isinstance(record["key"].get("params"), dict)
            and isinstance(record.get("extra"), dict) and isinstance(record.get("outputs"), dict)
            and all(isinstance(name, str) and isinstance(digest, str) for name, digest in record["outputs"].items()))


def outputs_intact(record: dict) -> bool:
    return all(path_digest(absolute_path(name)) == digest for name, digest in record["outputs"].items())


def changed_output(record: dict, digest_of=path_digest, skip=()) -> str | None:
    """The first output the stage wrote (but those named in skip) that no longer holds what it wrote; None when all
    still do."""
    for name, digest in record.get("outputs", {}).items():
        if name not in skip and digest_of(absolute_path(name)) != digest:
            return name
    return None


def changed_input(record: dict, digest_of=path_digest) -> str | None:
    """The first input the stage read that no longer holds what it held then; None when all still do.
    digest_of: path_digest, or a memo of it for one walk up the chain (a stage's input is the one above's output)."""
    for name, digest in record.get("key", {}).get("inputs", {}).items():
        if digest_of(absolute_path(name)) != digest:
            return name
    return None


def up_to_date(stage: Stage, code_as=None, key: dict | None = None) -> dict | None:
    """The stage's record when running it again would change nothing, else None. code_as: the recorded code
    digest as it counts now (core.stage.same_code: code checked to compute the same results). key: stage.key() as a
    record holds it, when the caller has it already (its inputs hashed once)."""
    record = load_record(stage.name)
    recorded = (record or {}).get("key")
    if code_as is not None and isinstance(recorded, dict) and isinstance(recorded.get("code"), str):
        recorded = {**recorded, "code": code_as(recorded["code"])}
    if record is None or recorded != (json.loads(json.dumps(stage.key())) if key is None else key):
        return None
    return record if outputs_intact(record) else None


def make_record(stage: Stage, outputs: list[Path], extra: dict | None = None, key: dict | None = None) -> dict:
    """key: stage.key(), when the caller has it already (its inputs hashed once)."""
    return {
        "stage": stage.name,
        "key": stage.key() if key is None else key,
        "outputs": {relative_name(path): path_digest(path) for path in outputs},
        "extra": extra or {},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def save_record(stage: Stage, outputs: list[Path], extra: dict | None = None) -> dict:
    """Record a stage's fresh outputs as its current ones."""
    record = make_record(stage, outputs, extra)
    write_json(record_path(stage.name), record)
    return record


def output_paths(record: dict) -> list[Path]:
    return [absolute_path(name) for name in record["outputs"]]


@contextlib.contextmanager
def atomic_path(final_path: Path):
    """Yield a temporary sibling path; rename it to final_path only if the block succeeds."""
    final_path = Path(final_path)
    make_folder(final_path.parent)
    # The name keeps its ending: Keras insists on ".keras" and ".weights.h5". The thread too: tune's
    # trials write side by side in one process.
    writer = f"{os.getpid()}-{threading.get_ident()}"
    temporary = final_path.with_name(f".tmp-{writer}-{final_path.name}")
    try:
        with write_errors_named(final_path):
            yield temporary
            if final_path.is_dir() and temporary.is_dir():
                # A folder cannot replace a folder in one rename: move the old one aside first.
                old = final_path.with_name(f".tmp-{writer}-old-{final_path.name}")
                os.replace(final_path, old)
                os.replace(temporary, final_path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(temporary, final_path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def write_errors_named(path: Path):
    """A full disk or a read-only folder met in the block: one line naming path (a write's own error names no file,
    or the temporary one)."""
    try:
        yield
    except OSError as error:
        raise (write_error(error, path) or error) from None


def make_folder(folder: Path) -> None:
    """mkdir -p, failing in one line: a full disk or a read-only folder says what to do, any other cause is named."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise (write_error(error, folder) or PipelineError(f"cannot create {folder}: {error}")) from None


def require_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Refuse to start a write that cannot fit: some libraries (HDF5 under Keras) do not fail
    cleanly when the disk fills up under them."""
    make_folder(folder)
    free_bytes = shutil.disk_usage(folder).free
    if free_bytes < needed_bytes:
        raise PipelineError(f"{folder}: cannot write {what} (about {needed_bytes / 1e6:.1f} MB, only "
                            f"{free_bytes / 1e6:.1f} MB free on its disk); free some space, then run the same command "
                            "again: finished outputs are kept")


def write_json(path: Path, value) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _pipeline_lock(name: str) -> FileLock:
    """The checkout's lock file, one object a file in this process (is_singleton: nested holders count)."""
    return FileLock(config.paths().data / f".{name}.lock", is_singleton=True)


@contextlib.contextmanager
def exclusive_lock(name: str = "pipeline"):
    """One pipeline process at a time per checkout: a second `make all` waits instead of racing the first.

    Re-entrant within a thread: filelock hands one object per lock file (is_singleton) and counts
    nested acquisitions, so a chain (`all`) takes it once for its whole run, and no other process can
    change a stage's inputs between two of its stages, while each stage inside takes it again for free.
    An OS lock (flock, or LockFileEx on Windows): a killed holder frees it.
    """
    make_folder(config.paths().data)
    lock = _pipeline_lock(name)
    lock_path = Path(lock.lock_file)
    outermost = not lock.is_locked
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:  # the line inside: a Ctrl-C right after it is this one's too
                print("waiting for another pipeline process in this folder to finish...", file=sys.stderr)
                lock.acquire()
            except KeyboardInterrupt:  # not "training resumes from its last completed epoch": nothing had started
                raise Interrupted("nothing was done, as another pipeline command held this folder; run the same"
                                  " command again once it is done") from None
    except OSError as error:  # a read-only folder: one line naming the file
        raise (write_error(error, lock_path) or error) from None
    try:
        if outermost:  # a nested holder's own temporaries are still being written
            remove_stale_temporaries()
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def lock_if_free(name: str = "pipeline"):
    """exclusive_lock's lock when no process holds it: True inside, else False (nothing waits), for bookkeeping
    that may be left undone while another command runs."""
    lock = _pipeline_lock(name)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def remove_stale_temporaries() -> None:
    """Delete what a killed process was writing; only safe while holding the lock, as every writer does."""
    for folder in (config.paths().data, config.paths().submissions):
        if folder.is_dir():
            for path in list(folder.rglob(".tmp-*")):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    # The folder of a training run (or blend) killed before its run.json: marked unfinished from its making; one of
    # an earlier version is empty or holds its first models alone. A folder without run.json but with histories
    # and no mark is a finished run's, its run.json perhaps deleted by hand (the run still read from its record).
    if config.paths().models.is_dir():
        for run_dir in config.paths().models.iterdir():
            if not run_dir.is_dir() or run_dir.name.startswith("."):
                continue
            unfinished = run_dir / config.Paths.UNFINISHED_RUN
            if (run_dir / config.Paths.RUN_JSON).exists():
                unfinished.unlink(missing_ok=True)  # killed between its run.json and the mark's removal
            elif unfinished.exists() or not (run_dir / config.Paths.HISTORY_JSON).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
