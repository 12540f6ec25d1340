"""The run cache: every completed stage result is kept, so going back to earlier settings restores it.

A stage's record (pipeline.core.cache) remembers only its latest run. Like DVC's run cache, this module
also keeps each finished run under the hash of its key (parameters, code, content hashes of the
inputs): `keep` stores the outputs' files by content in data/.cache/store/objects/ and the record in
data/.cache/store/runs/<stage>/<key>.json; `restore` puts them back when the same key comes again.

Files are hard-linked into the store when the filesystem allows (no second copy on disk; every
writer replaces a file by renaming a new one over it, which leaves the stored copy alone), else
copied. Objects are read-only, and so are the outputs linked to them: an editor refuses to change
them in place. Whoever does it all the same (root ignores the mode) only costs a rerun: each object
is hashed again before a restore, and `keep` replaces an object that no longer holds its content.

An entry is read as untrusted input: one of the wrong shape, or naming a file outside data/ and
submissions/, is treated as missing.
"""

import json
import os
import re
import shutil
import stat
from pathlib import Path

from pipeline.core import cache, config
from pipeline.core.errors import PipelineError

_DIGEST = re.compile(r"[0-9a-f]{64}")


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


def _holds(stored: Path, digest: str, fresh_file: Path) -> bool:
    """The object is there and still holds its content (it may have been edited through a link)."""
    if not stored.is_file():
        return False
    if os.path.samefile(stored, fresh_file):
        return True  # the file just hashed is this very object
    return stored.stat().st_size == fresh_file.stat().st_size and cache.file_digest(stored) == digest


def _make_read_only(stored: Path) -> None:
    mode = stored.stat().st_mode
    os.chmod(stored, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _members(output: Path) -> dict[str, Path]:
    """The files of an output: {"": path} for a file, {relative name: path} for a folder's files."""
    if output.is_file():
        return {"": output}
    return {member.relative_to(output).as_posix(): member for member in sorted(output.rglob("*")) if member.is_file()}


def keep(paths: config.Paths, key_id: str, record: dict) -> None:
    """Store the outputs named by a stage's fresh record, and the record, under key_id."""
    files = {}
    try:
        for name, path in zip(record["outputs"], cache.output_paths(record)):
            files[name] = {}
            for member, file in _members(path).items():
                digest = cache.file_digest(file)
                stored = _object_path(paths, digest)
                if not _holds(stored, digest, file):  # missing, or damaged: replaced by the fresh file
                    _place(file, stored)
                _make_read_only(stored)
                files[name][member] = digest
        cache.write_json(_entry_path(paths, record["stage"], key_id), {"record": record, "files": files})
    except (OSError, PipelineError) as error:  # a full disk, a damaged store (a file where a folder should be)
        cause = error.strerror or error if isinstance(error, OSError) else error
        raise PipelineError(f"{paths.store}: cannot keep this result in the run cache ({cause}); the result itself"
                            " is saved and current: free some space or empty the store"
                            f" ({config.how_to('`make clean-cache`', '`digit-recognizer clean --cache`')}: it holds"
                            " only copies of results), and the next command keeps it") from None


def _intact(paths: config.Paths, files: dict) -> bool:
    """Every object still there and still holding what its name says."""
    for members in files.values():
        for digest in members.values():
            stored = _object_path(paths, digest)
            if not stored.is_file() or cache.file_digest(stored) != digest:
                return False
    return True


def _in_the_way(path: Path, wanted_digest: str, current: dict | None, name: str) -> bool:
    """A file at the place of a restored output that holds neither what is restored nor what the stage
    wrote there last: never replaced (an earlier submission, or one edited by hand)."""
    digest = cache.path_digest(path)
    written_last = current["outputs"].get(name) if current else None
    return digest is not None and digest != wanted_digest and digest != written_last


def _inside_outputs(paths: config.Paths, name: str) -> bool:
    """An output's name that stays under data/ or submissions/ (and out of the cache's own folder)."""
    path, data, submissions, records = (Path(os.path.normpath(place)) for place in
                                        (cache.absolute_path(name), paths.data, paths.submissions, paths.cache))
    return (path.is_relative_to(data) or path.is_relative_to(submissions)) and not path.is_relative_to(records)


def _plain_member(member) -> bool:
    """"" (the output is one file), or a relative path inside its folder."""
    if member == "":
        return True
    parts = member.split("/") if isinstance(member, str) else []
    return bool(parts) and all(part not in ("", ".", "..") for part in parts) and "\\" not in member


def _valid_entry(paths: config.Paths, stage_name: str, entry) -> tuple[dict, dict] | None:
    """(record, files) of an entry of the right shape, naming only files under the outputs' folders."""
    if not isinstance(entry, dict) or not cache.has_record_shape(entry.get("record")):
        return None
    record, files = entry["record"], entry.get("files")
    if record.get("stage") != stage_name or not isinstance(files, dict) or set(files) != set(record["outputs"]):
        return None
    for name, members in files.items():
        if not _inside_outputs(paths, name) or not isinstance(members, dict) or not members:
            return None
        if ("" in members and len(members) > 1) or not all(_plain_member(member) for member in members):
            return None
        if not all(isinstance(digest, str) and _DIGEST.fullmatch(digest) for digest in members.values()):
            return None
    return record, files


def _read_entry(paths: config.Paths, stage_name: str, entry_file: Path) -> tuple[dict, dict] | None:
    """A kept entry; None when it is missing, unreadable or not a valid entry (then the stage runs again)."""
    try:
        entry = json.loads(entry_file.read_bytes().decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _valid_entry(paths, stage_name, entry)


def _entry(paths: config.Paths, stage_name: str, key_id: str) -> tuple[dict, dict] | None:
    """(record, files) kept under key_id, when every object is still intact."""
    entry = _read_entry(paths, stage_name, _entry_path(paths, stage_name, key_id))
    if entry is None:
        return None
    record, files = entry
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
    targets = dict(zip(record["outputs"], cache.output_paths(record)))
    if any(_in_the_way(targets[name], record["outputs"][name], current, name) for name in files):
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
    entries = (_read_entry(paths, stage_name, entry_file)
               for entry_file in (paths.store / "runs" / stage_name).glob("*.json"))
    records = [entry[0] for entry in entries if entry is not None]
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
