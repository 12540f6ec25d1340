"""`make clean` and `make clean-cache`: remove what the pipeline wrote under a data/ folder, holding its lock.

    python3 -m pipeline.core.clean DATA_FOLDER [--cache] [--quiet]

Run by the system's python3, before any environment may exist: the standard library only. The lock is the OS
flock that filelock takes on Linux and macOS (pipeline.core.cache.exclusive_lock), so a command running in the
folder holds it: clean refuses then, instead of deleting the data under it. The lock file itself is never
removed: a second command would lock a new file while the first still held the old one, and both would run.
"""

import shutil
import signal
import sys
from pathlib import Path

# What the pipeline writes under data/. Not the log of submissions sent to Kaggle (it keeps a file from being sent
# twice, and the scores), the bundled sample, or anything else a user put there.
PIPELINE_WRITES = ("raw", "prepared", "split", "models", "reports", "bench", "tensorboard", ".cache")
RUN_CACHE_STORE = ".cache/store"
LOCK_FILE = ".pipeline.lock"


def remove(data: Path, cache_only: bool = False) -> list[str]:
    """Remove the run cache's store (cache_only), or everything the pipeline writes under data; the names removed."""
    names = [RUN_CACHE_STORE] if cache_only else [*PIPELINE_WRITES, *(path.name for path in data.glob(".tmp-*"))]
    removed = []
    for name in names:
        path = data / name
        if path.is_dir() and not path.is_symlink():
            _remove_tree(path)
        elif path.is_symlink():  # a folder kept on another disk: neither its files (not ours to delete through a
            # link) nor the link (the next run would write gigabytes to this disk instead, without a word)
            removed.append(f"not {name}: a link to {path.resolve()}, left as it is with what it holds")
            continue
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _remove_tree(path: Path) -> None:
    """shutil.rmtree, its first failure raised with the whole path of the file (rmtree's own names only the file)."""
    def failed(function, name, error):
        error = error if isinstance(error, BaseException) else error[1]
        raise OSError(getattr(error, "errno", None), getattr(error, "strerror", None) or str(error), name)
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=failed)
    else:
        shutil.rmtree(path, onerror=failed)


def main(arguments: list[str]) -> int:
    data = Path(arguments[0]).expanduser().resolve()  # PIPELINE_ROOT='~/x' quoted: the CLI expands it too
    try:
        return _clean(data, "--cache" in arguments[1:], "--quiet" in arguments[1:])
    except OSError as error:  # a read-only folder, a file another user owns: one line, what is left said
        where = error.filename or data
        print(f"error: {where}: cannot {'write' if str(where).endswith(LOCK_FILE) else 'remove'}"
              f" ({error.strerror or error}); clean stopped there, and what it had not reached is kept: make"
              " that writable, then clean again", file=sys.stderr)
        return 1


def _clean(data: Path, cache_only: bool, quiet: bool) -> int:
    if not (data / ".cache").is_dir():  # every stage records itself there: without it, this data/ is not the pipeline's
        _say(f"clean: nothing removed: {data} holds no outputs of the pipeline (no .cache folder)", quiet)
        return 0
    try:
        import fcntl
    except ImportError:  # Windows: no flock to take
        return _remove_and_say(data, cache_only, quiet)
    lock_path = data / LOCK_FILE
    existed = lock_path.exists()
    running = (f"error: a pipeline command is running in {data.parent} (it holds {lock_path}); let it finish or stop"
               " it, then clean")
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # EWOULDBLOCK, EAGAIN, EACCES: held
            print(running, file=sys.stderr)
            return 1
        except OSError:  # no flock on this filesystem (some network mounts): filelock's lock is then the file itself
            if existed:
                print(running, file=sys.stderr)
                return 1
            lock_path.unlink()  # ours: left behind, it would read as held for ever
        return _remove_and_say(data, cache_only, quiet)


def _remove_and_say(data: Path, cache_only: bool, quiet: bool) -> int:
    removed = remove(data, cache_only)
    if not removed:
        _say(f"clean: nothing to remove: the run cache {data / RUN_CACHE_STORE} is empty" if cache_only else
             f"clean: nothing to remove in {data}", quiet)
    else:
        _say(f"clean: removed the run cache, {data / RUN_CACHE_STORE}" if cache_only else
             f"clean: removed what the pipeline wrote in {data}: {', '.join(removed)}", quiet)
    return 0


def _say(line: str, quiet: bool) -> None:
    if not quiet:  # --quiet: errors only, as every command
        print(line)


if __name__ == "__main__":  # make clean, make clean-cache (the CLI's `clean` says a Ctrl-C as every command does)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # a traceback, with clean stopped part way
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one while this is said
        print("interrupted: clean stopped part way, and what it had not reached is kept; run it again to finish",
              file=sys.stderr)
        sys.exit(130)
