"""Where a run's models train: one after another in this process ("local"), or as Ray tasks ("ray"),
each in a worker process of its own, on this machine or on a cluster.

Folds, ensemble members and tune's trials share nothing while they train, so they scale out as
whole models: a 327k-parameter CNN gains nothing from splitting its batches across machines, and
independent tasks need no synchronisation at all. Ray is imported here only, and only when asked
for, so an up-to-date run never loads it.

A task trains one model (`pipeline.training.parts.train_part`) exactly as the local loop would, with the same
seed, and sends back the model file, its history and its out-of-fold probabilities; the run, its
cache entry and its report are written here, by the driver, as for a local run. A task whose
worker dies is retried (TASK_RETRIES times); it resumes from the epoch checkpoints in the driver's
data/models/.checkpoints/ folder when its node can reach that path (this machine, or a shared filesystem),
else it trains that model again from its first epoch.

On a cluster every node needs the same checkout at the same commit, set up with `make venv`: a
task refuses to run code whose hash differs from the driver's.

A local instance (no address) listens on 127.0.0.1 only, and Ray's token (~/.ray/auth_token) is
kept readable by its owner only. Its session folder (logs, sockets, spilled objects) is a temporary folder of
its own, removed when the instance ends, even by a killed driver's watchdog; RAY_TMPDIR set keeps Ray's own
place and leaves the logs there. A cluster that does not answer is given one attempt of about 20 s.
"""

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import extras
from pipeline.core.console import import_tensorflow_quietly
from pipeline.core.errors import PipelineError, one_line
from pipeline.training.device import DEVICES, describe_devices, resolve_precision, use_device

ENGINES = ("local", "ray")
# The longest socket path of a local instance, after its folder's parent (a pid of 7 digits)
RAY_SOCKET_IN_SESSION_FOLDER = "/ray-12345678/session_2026-12-07_16-56-20_381160_1234567/sockets/plasma_store"
TASK_RETRIES = 3  # a worker that dies (killed, out of memory, a lost node) is replaced this many times
# Set on Ctrl-C while tasks run in other threads (tune's trials): each stops its tasks at once.
STOPPING = threading.Event()


@dataclass(frozen=True)
class Engine:
    """How to run the models: not part of any stage's key (the models come out the same either way)."""

    name: str = "local"
    workers: int | None = None  # models training at once (ray); None: one per GPU, else one per node
    address: str | None = None  # a running Ray cluster; None: RAY_ADDRESS, else a new local instance
    device: str = "auto"  # auto, cpu or gpu (pipeline.training.device.DEVICES), here or on every worker

    def check(self) -> None:
        if self.name not in ENGINES:
            raise PipelineError(f"--engine {self.name}: expected one of {', '.join(ENGINES)}")
        if self.workers is not None and self.workers < 1:
            raise PipelineError(f"--workers {self.workers}: expected at least 1")
        if self.name == "local" and (self.workers or self.address):
            raise PipelineError("--workers and --ray-address go with --engine ray")
        if self.device not in DEVICES:
            raise PipelineError(f"--device {self.device}: expected one of {', '.join(DEVICES)}")
        if self.name == "ray":
            extras.require("ray", "--engine ray")


# Connecting to a cluster: one attempt of about 20 s (Ray's own default retries for many minutes).
CONNECT_SETTINGS = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_gcs_rpc_server_connect_timeout_s": "5",
                    "RAY_py_gcs_connect_timeout_s": "10"}
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _set_ray_environment(address: str | None) -> None:
    """What Ray reads when it is imported: set before `import ray`, or it is ignored."""
    # The workers' lines come through whole (none dropped as a repeat), each behind its
    # "(train_part pid=...)" prefix, uncoloured.
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        for name, value in CONNECT_SETTINGS.items():
            os.environ.setdefault(name, value)
    else:
        # A local instance: its node address is 127.0.0.1, so every server of it (GCS, raylet, agents, workers,
        # the driver) listens on the loopback interface only, not on every interface.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _keep_token_private(starting_here: bool) -> None:
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


class _Uncoloured:
    """sys.stdout or sys.stderr without ANSI colour codes: Ray forwards the workers' lines through them."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(ANSI_CODE.sub("", text))

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _stderr_caught():
    """File descriptor 2 into a temporary file: Ray's core prints its connection retries there, in
    lines of its own; the one line of the error says what failed."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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


def _start_watchdog(session_folder: str | None):
    """The watchdog process of the local instance about to start (Linux: it reads /proc); None elsewhere.
    It removes the instance's session folder too, should the driver be killed."""
    if not sys.platform.startswith("linux"):
        return None
    folder = [session_folder] if session_folder else []
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), *folder], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # Ctrl-C in the terminal does not reach it


def _stop_watchdog(watchdog, session_folder: str | None) -> None:
    if watchdog is not None:
        watchdog.stdin.close()  # whatever of the instance ray.shutdown left goes now
        watchdog.wait()
    if session_folder:
        shutil.rmtree(session_folder, ignore_errors=True)


def _session_folder(address: str | None) -> str | None:
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
def _workers_temporary_folder(session_folder: str | None):
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


def _termination_handlers() -> dict:
    """What SIGTERM and SIGHUP do in the command (a Ctrl-C's line, pipeline.cli_support; or end it, as by default),
    which ray.init replaces in the driver with its own: a native stack dump, then exit 15 or an abort. Only the main
    thread sets handlers; one not set from Python (None) cannot be put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    numbers = [number for number in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if number is not None]
    return {number: signal.getsignal(number) for number in numbers if signal.getsignal(number) is not None}


def _put_back(handlers: dict) -> None:
    for number, handler in handlers.items():
        signal.signal(number, handler)


def ray_running() -> bool:
    """Whether a Ray session is up in this process (tune's, around its trials' trainings)."""
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


@contextlib.contextmanager
def ray_session(engine: Engine, store_bytes: int = 0):
    """Ray, connected: to engine.address or RAY_ADDRESS, else to a local instance started here, on
    127.0.0.1 only, and stopped at the end. Nested sessions share the outer one."""
    address = engine.address or os.environ.get("RAY_ADDRESS")
    _set_ray_environment(address)
    import ray

    if ray.is_initialized():
        yield
        return
    _keep_token_private(starting_here=not address)
    session_folder = _session_folder(address)
    watchdog = None if address else _start_watchdog(session_folder)
    handlers = _termination_handlers()
    try:
        if address:
            with _stderr_caught():
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=True)
        else:
            # The object store holds the image arrays once, shared by every worker of the node.
            with _workers_temporary_folder(session_folder):
                ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True,
                         object_store_memory=max(2 * store_bytes + (256 << 20), 128 << 20),
                         _temp_dir=session_folder)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError... for one reason: no cluster
        _stop_watchdog(watchdog, session_folder)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise PipelineError(f"--engine ray: cannot reach {where} ({one_line(error)})") from None
    _put_back(handlers)
    _keep_token_private(starting_here=False)  # made by Ray after all (RAY_AUTH_TOKEN_PATH, another version)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Uncoloured(sys.stdout), _Uncoloured(sys.stderr)
    try:
        yield
    finally:
        ray.shutdown()
        sys.stdout, sys.stderr = streams
        _stop_watchdog(watchdog, session_folder)


def cluster_plan(workers: int | None, device: str = "auto") -> tuple[int, dict, str]:
    """(models at once, Ray resources of one task, a description of the cluster) for the connected cluster."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = int(total.get("CPU", 1)), int(total.get("GPU", 0))
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    described = f"{nodes} node{'s' * (nodes != 1)}, {cpus} CPUs" + (f", {gpus} GPUs" if gpus else "")
    if device == "gpu" and not gpus:
        raise PipelineError(f"--device gpu: the Ray cluster ({described}) has no GPU; use --device auto or cpu")
    if device == "cpu":
        gpus = 0
    if gpus:  # one GPU a model; `workers` can only ask for fewer at once
        at_once = min(workers or gpus, gpus)
        return at_once, {"num_gpus": 1, "num_cpus": max(1, cpus // gpus)}, described
    at_once = workers or nodes
    return at_once, {"num_cpus": max(1, cpus // at_once)}, described


def _probe_devices(requested_precision: str, device: str) -> tuple[str, str]:
    use_device(device)
    import_tensorflow_quietly()
    return resolve_precision(requested_precision), describe_devices()


def cluster_devices(requested_precision: str, device: str) -> tuple[str, str]:
    """(the precision, a description of the devices) as a worker of the connected cluster sees them:
    "auto" is resolved where the models train, not where the driver runs (a probe task, a few seconds)."""
    import ray

    _, resources, described = cluster_plan(None, device)
    if requested_precision != "auto":
        return requested_precision, f"Ray ({described})"
    probe = ray.remote(max_calls=1, **resources)(_probe_devices)
    try:
        precision, devices = ray.get(probe.remote(requested_precision, device))
    except ray.exceptions.RayError as error:
        raise PipelineError(f"--engine ray: a worker could not start TensorFlow ({one_line(error)})") from None
    return precision, f"Ray ({described}; a worker has {devices})"


def run_tasks(function, jobs: list[dict], engine: Engine, console, shared: dict) -> list:
    """function(job, **shared) for every job as Ray tasks, at most `workers` at once; results in job order.

    shared: large arrays, put once into the object store and handed to every task.
    """
    import ray

    at_once, resources, described = cluster_plan(engine.workers, engine.device)
    remote = ray.remote(max_retries=TASK_RETRIES, max_calls=1, **resources)(function)
    shared_refs = {name: ray.put(value) for name, value in shared.items()}
    console.say(f"engine: {len(jobs)} task{'s' * (len(jobs) != 1)} on Ray ({described}), {at_once} at once,"
                f" {' and '.join(f'{int(count)} {name[4:-1].upper()}' for name, count in resources.items())} each")
    pending, results, waiting = {}, {}, list(enumerate(jobs))
    try:
        while waiting or pending:
            while waiting and len(pending) < at_once:
                index, job = waiting.pop(0)
                pending[remote.remote(job, **shared_refs)] = index
            # Waits a second at a time: tune's trials call this from threads, which Ctrl-C does not reach.
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if STOPPING.is_set():
                raise KeyboardInterrupt
            if done:
                index = pending.pop(done[0])
                results[index] = _result(done[0], jobs[index])
    except KeyboardInterrupt:
        # Ctrl-C: ray_session's ray.shutdown ends the running tasks (their checkpoints stay). Cancelling them here
        # too could race a task's own reply inside Ray's core worker (a failed internal check, exit 1 instead of
        # "interrupted", about 1 Ctrl-C in 15 in tests/test_engine.py), so it is left to the shutdown.
        raise
    except BaseException:
        for ref in pending:  # a task failed: the others stop too (their checkpoints stay)
            ray.cancel(ref, force=True)
        raise
    return [results[index] for index in range(len(jobs))]


def _result(ref, job: dict):
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, PipelineError):
            raise type(cause)(str(cause)) from None  # its kind too: tune goes on after a TrainingDiverged
        raise PipelineError(f"{job['label']}: the task failed: {one_line(cause or error)}") from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as error:
        raise PipelineError(f"{job['label']}: its worker died {TASK_RETRIES + 1} times ({one_line(error)});"
                            " run the same command again to resume from its last checkpoint") from None
