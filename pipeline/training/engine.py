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
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass

from pipeline.core import extras
from pipeline.core.console import import_tensorflow_quietly
from pipeline.core.errors import PipelineError, one_line
from pipeline.training.device import DEVICES, describe_devices, precision_warning, resolve_precision, use_device
from pipeline.training.ray_local import (keep_token_private, session_folder_for, start_watchdog, stop_watchdog,
                                         workers_temporary_folder)

ENGINES = ("local", "ray")
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


def _termination_handlers() -> dict:
    """What SIGTERM and SIGHUP do in the command (a Ctrl-C's line, pipeline.cli_support; or end it, as by default).
    Only the main thread sets handlers; one not set from Python (None) cannot be put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    numbers = [number for number in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if number is not None]
    return {number: signal.getsignal(number) for number in numbers if signal.getsignal(number) is not None}


def _put_back(handlers: dict) -> None:
    for number, handler in handlers.items():
        signal.signal(number, handler)


@contextlib.contextmanager
def _termination_held_back(ray, received: list):
    """SIGTERM and SIGHUP noted in `received` while ray.init starts Ray (10-30 s), and the command's own
    handlers back after it. ray.init's first step set a handler of its own, sys.exit(the signal's number): the
    command ended without the line that says what to do next (exit 15), or went on where the exit fell inside a
    fork's callbacks ("Exception ignored"). Its last step, the driver's connection, sets native ones (a stack
    dump, then exit 15 or an abort): put back here too."""
    handlers = _termination_handlers()
    utils = ray._private.utils
    rays_own = getattr(utils, "set_sigterm_handler", None)  # a private function: absent in another version, then
    try:                                                    # its handler stays for the start-up, as before
        if rays_own and handlers:
            utils.set_sigterm_handler = lambda handler: None
            for number, handler in handlers.items():
                if handler is not signal.SIG_IGN:  # ignored stays ignored (nohup), in Ray's processes started now too
                    signal.signal(number, lambda number, frame: received.append(number))
        yield
    finally:
        if rays_own:
            utils.set_sigterm_handler = rays_own
        _put_back(handlers)


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
    keep_token_private(starting_here=not address)
    session_folder = session_folder_for(address)
    watchdog = None if address else start_watchdog(session_folder)
    signals_received = []  # SIGTERM or SIGHUP during the start-up: given to the command's handler after it
    try:
        with _termination_held_back(ray, signals_received):
            if address:
                with _stderr_caught():
                    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=True)
            else:
                # The object store holds the image arrays once, shared by every worker of the node.
                with workers_temporary_folder(session_folder):
                    ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR,
                             log_to_driver=True, object_store_memory=max(2 * store_bytes + (256 << 20), 128 << 20),
                             _temp_dir=session_folder)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError... for one reason: no cluster
        stop_watchdog(watchdog, session_folder)
        if signals_received:
            signal.raise_signal(signals_received[0])
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise PipelineError(f"--engine ray: cannot reach {where} ({one_line(error)})") from None
    keep_token_private(starting_here=False)  # made by Ray after all (RAY_AUTH_TOKEN_PATH, another version)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Uncoloured(sys.stdout), _Uncoloured(sys.stderr)
    try:
        if signals_received:  # now that Ray is up: the command's handler (a Ctrl-C), and ray.shutdown below
            signal.raise_signal(signals_received[0])
        yield
    finally:
        ray.shutdown()
        sys.stdout, sys.stderr = streams
        stop_watchdog(watchdog, session_folder)


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


def _probe_devices(requested_precision: str, device: str) -> tuple[str, str, str | None]:
    use_device(device)
    import_tensorflow_quietly()
    precision = resolve_precision(requested_precision)
    return precision, describe_devices(), precision_warning(precision)


def cluster_devices(requested_precision: str, device: str) -> tuple[str, str, str | None]:
    """(the precision, a description of the devices, a warning where that precision is emulated there) as a worker
    of the connected cluster sees them: "auto" is resolved, and a mixed precision checked, where the models train,
    not where the driver runs (a probe task, a few seconds)."""
    import ray

    _, resources, described = cluster_plan(None, device)
    if requested_precision == "float32":  # fast everywhere: nothing to find out
        return requested_precision, f"Ray ({described})", None
    probe = ray.remote(max_calls=1, **resources)(_probe_devices)
    try:
        precision, devices, warning = ray.get(probe.remote(requested_precision, device))
    except ray.exceptions.RayError as error:
        raise PipelineError(f"--engine ray: a worker could not start TensorFlow ({one_line(error)})") from None
    return precision, f"Ray ({described}; a worker has {devices})", warning


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
