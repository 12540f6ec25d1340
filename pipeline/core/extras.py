"""The optional parts of the install (pyproject's extras): Ray for --engine ray and tune, TensorBoard
for --tensorboard. A plain install leaves them out; asking for one that is missing is one line that
says what to install, before any stage runs."""

import importlib.util

from pipeline.core.errors import PipelineError

# extra -> (the module it provides, the make command that installs it in a checkout)
EXTRAS = {
    "ray": ("ray", "make venv ENGINE=ray"),
    "tensorboard": ("tensorboard", "make venv TENSORBOARD=1"),
}


def is_installed(extra: str) -> bool:
    module, _ = EXTRAS[extra]
    return importlib.util.find_spec(module) is not None  # looks, without importing it (Ray takes seconds)


def require(extra: str, needed_by: str) -> None:
    if not is_installed(extra):
        _, make_command = EXTRAS[extra]
        raise PipelineError(f"{needed_by} needs {extra}, an optional extra that is not installed: "
                            f"pip install 'digit-recognizer-pipeline[{extra}]' (in a checkout: {make_command})")
