"""The stage cache: a stage is skipped when its inputs, parameters, code and outputs are unchanged.

Like DVC's run cache, a stage is keyed on the content hashes of what it reads, its parameter
values and the source of the code that runs it. The record also holds the hashes of what the
stage wrote, so an output that was edited, truncated or deleted afterwards makes it run again.

Outputs are written under a temporary name and renamed when complete (`atomic_path`), and the
record is written last, so a stage killed half way leaves nothing a later run takes for finished.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return path.relative_to(config.paths().root).as_posix()
    except ValueError:
        return str(path)


def _absolute(name: str) -> Path:
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
            "inputs": {_relative(path): path_digest(path) for path in self.inputs},
        }


def record_path(stage_name: str) -> Path:
    return config.paths().record(stage_name)


def load_record(stage_name: str) -> dict | None:
    try:
        return json.loads(record_path(stage_name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def outputs_intact(record: dict) -> bool:
    return all(path_digest(_absolute(name)) == digest for name, digest in record["outputs"].items())


def changed_input(record: dict) -> str | None:
    """The first input the stage read that no longer holds what it held then; None when all still do."""
    for name, digest in record.get("key", {}).get("inputs", {}).items():
        if path_digest(_absolute(name)) != digest:
            return name
    return None


def up_to_date(stage: Stage) -> dict | None:
    """The stage's record when running it again would change nothing, else None."""
    record = load_record(stage.name)
    if record is None or record.get("key") != json.loads(json.dumps(stage.key())):
        return None
    return record if outputs_intact(record) else None


def save_record(stage: Stage, outputs: list[Path], extra: dict | None = None) -> dict:
    record = {
        "stage": stage.name,
        "key": stage.key(),
        "outputs": {_relative(path): path_digest(path) for path in outputs},
        "extra": extra or {},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(record_path(stage.name), record)
    return record


def output_paths(record: dict) -> list[Path]:
    return [_absolute(name) for name in record["outputs"]]


@contextlib.contextmanager
def atomic_path(final_path: Path):
    """Yield a temporary sibling path; rename it to final_path only if the block succeeds."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    # The name keeps its ending: Keras insists on ".keras" and ".weights.h5".
    temporary = final_path.with_name(f".tmp-{os.getpid()}-{final_path.name}")
    try:
        yield temporary
        if final_path.is_dir() and temporary.is_dir():
            # A folder cannot replace a folder in one rename: move the old one aside first.
            old = final_path.with_name(f".tmp-{os.getpid()}-old-{final_path.name}")
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


def write_json(path: Path, value) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def exclusive_lock(name: str = "pipeline"):
    """One stage at a time per checkout: a second `make all` waits instead of racing the first."""
    data = config.paths().data
    data.mkdir(parents=True, exist_ok=True)
    with open(data / f".{name}.lock", "a+") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another pipeline process in this folder to finish...", file=sys.stderr)
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        remove_stale_temporaries()
        yield


def remove_stale_temporaries() -> None:
    """Delete what a killed process was writing; only safe while holding the lock, as every writer does."""
    for folder in (config.paths().data, config.paths().submissions):
        if folder.is_dir():
            for path in list(folder.rglob(".tmp-*")):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
