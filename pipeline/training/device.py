"""Which device trains, and the numeric precision that is fast on it.

bfloat16 halves the work only where the hardware computes in it: CPUs with AVX-512 BF16 or AMX,
NVIDIA GPUs from compute capability 8.0 (A100, H100, RTX 30xx). Elsewhere TensorFlow emulates it,
which was measured 13 times slower than float32 on an AVX2-only CPU (46 against 626 images/s of
the default CNN). Older GPUs (T4, V100, P100) get float16 with loss scaling instead.
"""

import os
import sys
from pathlib import Path

from pipeline.core import config
from pipeline.core.errors import PipelineError

DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras's mixed-precision policies
PRECISIONS = ("auto", *DTYPE_POLICIES)  # auto: the fastest policy on the device that trains
DEVICES = ("auto", "cpu", "gpu")  # auto: every GPU TensorFlow finds, else the CPU
_CPU_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) of every visible NVIDIA GPU; imports TensorFlow."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def choose_precision(gpu_capabilities: list[tuple[int, int]], flags: set[str]) -> str:
    """The fastest precision that keeps accuracy, for the devices found."""
    if gpu_capabilities:
        return "mixed_bfloat16" if min(gpu_capabilities) >= (8, 0) else "mixed_float16"
    return "mixed_bfloat16" if flags & _CPU_BFLOAT16_FLAGS else "float32"


def resolve_precision(requested: str) -> str:
    """An explicit precision is kept; "auto" becomes the one chosen for this machine."""
    if requested != "auto":
        return requested
    return choose_precision(gpu_compute_capabilities(), cpu_flags() if sys.platform == "linux" else set())


def slow_precision(precision: str, gpu_capabilities: list[tuple[int, int]], flags: set[str]) -> str | None:
    """A warning where the precision asked for is emulated on the device that trains (several times slower than
    float32), else None."""
    if gpu_capabilities:
        return None
    if precision == "mixed_float16":
        return ("--precision mixed_float16: a CPU has no float16 arithmetic, TensorFlow emulates it (8x slower than"
                " float32 was measured); --precision auto picks the fast one")
    if precision == "mixed_bfloat16" and not flags & _CPU_BFLOAT16_FLAGS:
        return ("--precision mixed_bfloat16: this CPU has no AVX-512 BF16 or AMX, TensorFlow emulates bfloat16"
                " (13x slower than float32 was measured); --precision auto picks the fast one")
    return None


def precision_warning(precision: str) -> str | None:
    """slow_precision for this machine; imports TensorFlow."""
    return slow_precision(precision, gpu_compute_capabilities(), cpu_flags() if sys.platform == "linux" else set())


def describe_devices() -> str:
    """'1 GPU (compute capability 8.0)' or 'CPU (no GPU found)', for the line that starts training."""
    capabilities = gpu_compute_capabilities()
    if not capabilities:
        return "CPU (no GPU found)"
    listed = ", ".join(f"{major}.{minor}" for major, minor in capabilities)
    return f"{len(capabilities)} GPU{'s' * (len(capabilities) > 1)} (compute capability {listed})"


def use_device(requested: str) -> None:
    """Before TensorFlow starts: "cpu" hides every GPU from it; "gpu" fails in one line where it finds none."""
    if requested == "cpu":
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif requested == "gpu" and not gpu_compute_capabilities():
        install = config.how_to("`make venv GPU=1`", "`pip install 'digit-recognizer-pipeline[gpu]'`")
        raise PipelineError("--device gpu: TensorFlow finds no GPU here (it needs an NVIDIA driver and the CUDA"
                            f" libraries: {install}); use --device auto or cpu")
