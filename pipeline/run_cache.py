"""The run cache: every completed stage result is kept, so going back to earlier settings restores it.

A stage's record (pipeline.cache) remembers only its latest run. Like DVC's run cache, this module
also keeps each finished run under the hash of its key (parameters, code, content hashes of the
inputs): `keep` stores the outputs' files by content in data/.cache/store/objects/ and the record in
data/.cache/store/runs/<stage>/<key>.json; `restore` puts them back when the same key comes again.

Files are hard-linked into the store when the filesystem allows (no second copy on disk; every
writer replaces a file by renaming a new one over it, which leaves the stored copy alone), else
copied. An object edited in place through its link is caught on restore: each object is hashed
again before use, and a mismatch means the stage simply runs again.
"""

import json
import os
import shutil
from pathlib import Path

from pipeline import cache, config


def _objects(paths: config.Paths) -> Path:
    return paths.store / "objects"


def _object_path(paths: config.Paths, digest: str) -> Path:
    return _objects(paths) / digest[:2] / digest[2:]


def _entry_path(paths: config.Paths, stage_name: str, key_id: str) -> Path:
    return paths.store / "runs" / stage_name / f"{key_id}.json"


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link to source at target (a new name), else a copy."""
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(source, target)


def _place(source: Path, target: Path) -> None:
    """target becomes the same content as source, atomically."""
    with cache.atomic_path(target) as temporary:
        _link_or_copy(source, temporary)


def _members(output: Path) -> dict[str, Path]:
    """The files of an output: {"": path} for a file, {relative name: path} for a folder's files."""
    if output.is_file():
        return {"": output}
    return {member.relative_to(output).as_posix(): member for member in sorted(output.rglob("*")) if member.is_file()}


def keep(paths: config.Paths, key_id: str, record: dict) -> None:
    """Store the outputs named by a stage's fresh record, and the record, under key_id."""
    files = {}
    for name, path in zip(record["outputs"], cache.output_paths(record)):
        files[name] = {}
        for member, file in _members(path).items():
            digest = cache.file_digest(file)
            stored = _object_path(paths, digest)
            if not stored.is_file():
                _place(file, stored)
            files[name][member] = digest
    cache.write_json(_entry_path(paths, record["stage"], key_id), {"record": record, "files": files})


def _intact(paths: config.Paths, files: dict) -> bool:
    """Every object still there and still holding what its name says."""
    for members in files.values():
        for digest in members.values():
            stored = _object_path(paths, digest)
            if not stored.is_file() or cache.file_digest(stored) != digest:
                return False
    return True


def _in_the_way(path: Path, wanted_digest: str | None, current_outputs: set[Path]) -> bool:
    """A different file at the place of a restored output that the stage did not write last: never replaced
    (an earlier submission, say)."""
    return path.exists() and path not in current_outputs and cache.path_digest(path) != wanted_digest


def _entry(paths: config.Paths, stage_name: str, key_id: str) -> tuple[dict, dict] | None:
    """(record, files) kept under key_id, when every object is still intact."""
    try:
        entry = json.loads(_entry_path(paths, stage_name, key_id).read_text())
        record, files = entry["record"], entry["files"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not _intact(paths, files):
        _entry_path(paths, stage_name, key_id).unlink(missing_ok=True)
        return None
    return record, files


def kept_record(paths: config.Paths, stage_name: str, key_id: str) -> dict | None:
    """The record kept under key_id (its outputs intact in the store), without restoring anything."""
    entry = _entry(paths, stage_name, key_id)
    return entry[0] if entry else None


def restore(paths: config.Paths, stage_name: str, key_id: str) -> dict | None:
    """Put back the outputs kept under key_id and make its record the stage's current one; the record,
    or None when nothing (intact) is kept or restoring would replace something it must not."""
    entry = _entry(paths, stage_name, key_id)
    if entry is None:
        return None
    record, files = entry
    current = cache.load_record(stage_name)
    current_outputs = set(cache.output_paths(current)) if current else set()
    targets = dict(zip(record["outputs"], cache.output_paths(record)))
    if any(_in_the_way(targets[name], record["outputs"][name], current_outputs) for name in files):
        return None
    for name, members in files.items():
        target = targets[name]
        if cache.path_digest(target) == record["outputs"][name]:
            continue  # already there, as it was
        if list(members) == [""]:
            _place(_object_path(paths, members[""]), target)
            continue
        with cache.atomic_path(target) as folder:
            for member, digest in members.items():
                (folder / member).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(_object_path(paths, digest), folder / member)
    cache.write_json(cache.record_path(stage_name), record)
    return record


def kept_records(paths: config.Paths, stage_name: str) -> list[dict]:
    """The records of every kept result of a stage, oldest first."""
    records = []
    for entry_file in (paths.store / "runs" / stage_name).glob("*.json"):
        try:
            records.append(json.loads(entry_file.read_text())["record"])
        except (json.JSONDecodeError, KeyError, OSError):
            continue
    return sorted(records, key=lambda record: record.get("finished_at", ""))


def disk_usage(paths: config.Paths) -> tuple[int, int]:
    """(bytes of the kept objects, of them the bytes no current output shares through a hard link)."""
    total = extra = 0
    for stored in _objects(paths).rglob("*"):
        if stored.is_file():
            status = stored.stat()
            total += status.st_size
            extra += status.st_size if status.st_nlink == 1 else 0
    return total, extra
