"""A local Ray instance's housekeeping (pipeline.training.engine starts it): its token kept private, its session
folder of its own, and a watchdog that ends its processes and removes that folder when the driver ends, killed or
not."""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The longest socket path of a local instance, after its folder's parent (a pid of 7 digits)
RAY_SOCKET_IN_SESSION_FOLDER = "/ray-12345678/session_2026-12-07_16-56-20_381160_1234567/sockets/plasma_store"


def keep_token_private(starting_here: bool) -> None:
    """Ray's token lets whoever reads it run code on every local instance and cluster that uses it, and
    Ray writes it readable by all (0644): made here readable by its owner only (0600)."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        if token.exists():
            if token.stat().st_mode & 0o077:
                token.chmod(0o600)
        elif starting_here and not os.environ.get("RAY_AUTH_TOKEN") and os.environ.get("RAY_AUTH_MODE") != "disabled":
            # The token Ray would create for a new local instance (256 random bits), created private.
            token.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as stream:
                stream.write(secrets.token_hex(32))
    except OSError as error:  # another user's file, a read-only home: Ray goes on with what is there
        print(f"warning: {token}: cannot make Ray's token private ({error.strerror or error})", file=sys.stderr)


# The watchdog of a local instance: it notes every process under the driver, once a second, and when the
# driver ends, killed or not (its end of the pipe closes), ends those still running. Ray's agents otherwise
# linger a minute or two after a killed driver, reporting the raylet's death to a GCS that died with it.
WATCHDOG = """
import os, select, signal, sys
driver, watchdog = int(sys.argv[1]), os.getpid()

def processes():
    found = {}  # pid: (parent pid, start time): the start time tells a reused pid apart
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            found[int(name)] = (int(fields[1]), fields[19])
        except (OSError, IndexError, ValueError):
            pass
    return found

def under_driver():
    table = processes()
    found, pending = set(), [driver]
    while pending:
        parent = pending.pop()
        for pid, (parent_pid, started) in table.items():
            if parent_pid == parent and pid != watchdog and (pid, started) not in found:
                found.add((pid, started))
                pending.append(pid)
    return found

known = set()
while not select.select([sys.stdin], [], [], 1.0)[0]:
    known |= under_driver()
table = processes()
for pid, started in known:
    if pid in table and table[pid][1] == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
if len(sys.argv) > 2:  # the instance's session folder, once nothing of it writes there
    import shutil
    shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


def start_watchdog(session_folder: str | None):
    """The watchdog process of the local instance about to start (Linux: it reads /proc); None elsewhere.
    It removes the instance's session folder too, should the driver be killed."""
    if not sys.platform.startswith("linux"):
        return None
    folder = [session_folder] if session_folder else []
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), *folder], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # Ctrl-C in the terminal does not reach it


def stop_watchdog(watchdog, session_folder: str | None) -> None:
    if watchdog is not None:
        watchdog.stdin.close()  # whatever of the instance ray.shutdown left goes now
        watchdog.wait()
    if session_folder:
        shutil.rmtree(session_folder, ignore_errors=True)


def session_folder_for(address: str | None) -> str | None:
    """A local instance's own temporary folder, instead of the /tmp/ray that Ray leaves behind at every start
    (a few MB of logs and sockets each); None for a cluster, or where RAY_TMPDIR says where Ray's files go."""
    if address or os.environ.get("RAY_TMPDIR"):
        return None
    # Where Ray would put it, not in the command's own temporary folder (tempfile's default while a command runs).
    if sys.platform == "win32":  # the system's temporary folder
        base = os.environ.get("TEMP") or os.environ.get("TMP")
    else:  # the paths of the sockets inside stay under 108 bytes: a long TMPDIR gives way to /tmp, as on macOS
        base = os.environ.get("TMPDIR") or "/tmp"
        if len(base.encode()) + len(RAY_SOCKET_IN_SESSION_FOLDER) > 107:
            base = "/tmp"
    try:
        return tempfile.mkdtemp(prefix="ray-", dir=base)
    except OSError:  # a TMPDIR that is gone: Ray's own choice, and its own error
        return None


@contextlib.contextmanager
def workers_temporary_folder(session_folder: str | None):
    """The workers' temporary files (TensorFlow's autograph files, which a killed worker leaves) in the
    session folder: the instance's processes, started now, take TMPDIR from this environment."""
    saved = os.environ.get("TMPDIR")
    if session_folder:
        os.environ["TMPDIR"] = session_folder
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
