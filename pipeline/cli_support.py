"""What the typer shell (pipeline.cli) needs besides its options: the training options (one typer option per
TrainingConfig field, `training_knobs`), options of a fixed set of values, the engine checked, --quiet taken from
anywhere on the command line, and the run of the app, where a PipelineError (or a full disk, or Ctrl-C) becomes one
line and an exit status, never a traceback.
"""

import functools
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import typer
import typer.main
from filelock import FileLock, Timeout

from pipeline.core import config, stage
from pipeline.core.console import import_tensorflow_quietly
from pipeline.core.errors import Interrupted, PipelineError, write_error
from pipeline.training import settings
from pipeline.training.device import use_device
from pipeline.training.engine import Engine


def one_of(*choices: str):
    """An option's callback refusing any value but choices (None: not given)."""
    def check(value):
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def choice_option(default, choices, help: str, *names: str):
    return typer.Option(default, *names, metavar="NAME", callback=one_of(*choices),
                        help=f"{'|'.join(choices)}: {help}")


def knob_option(spec: settings.KnobSpec):
    """The typer option of one training option: None (not given) keeps the preset's value."""
    value = config.PRESETS[config.DEFAULT_PRESET][spec.name]
    shown = ("on" if value else "off") if spec.type is bool else f"{value:g}" if spec.type is float else value
    help = f"{spec.knob.help} (default: the preset's; {shown} in the {config.DEFAULT_PRESET} preset)."
    if spec.knob.choices:
        return choice_option(None, spec.knob.choices, help, f"--{spec.option}")
    if spec.type is bool:
        return typer.Option(None, f"--{spec.option}/--no-{spec.option}", help=help)
    return typer.Option(None, f"--{spec.option}", help=help)


def training_knobs(for_tune: bool = False):
    """A command's decorator: its parameter `knobs` becomes one typer option per training option
    (pipeline.training.settings.TrainingConfig's fields; for_tune: those that apply to tune), in its place,
    and the command receives them as one dict, field name -> value given (None: not given)."""
    specs = [spec for spec in settings.knobs() if spec.knob.tune or not for_tune]

    def decorate(command):
        signature = inspect.signature(command)
        parameters = []
        for parameter in signature.parameters.values():
            if parameter.name != "knobs":
                parameters.append(parameter)
                continue
            parameters += [inspect.Parameter(spec.parameter, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                             default=knob_option(spec), annotation=Optional[spec.type])
                           for spec in specs]

        @functools.wraps(command)
        def with_knobs(*args, **kwargs):
            knobs = {spec.name: kwargs.pop(spec.parameter) for spec in specs}
            return command(*args, knobs=knobs, **kwargs)

        with_knobs.__signature__ = signature.replace(parameters=parameters)
        with_knobs.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return with_knobs
    return decorate


def engine_settings(name: str, workers: int | None, address: str | None, device: str = "auto") -> Engine:
    """Where the models train; a GPU asked for on this machine is looked for now, before any stage runs."""
    if address is not None and not address.strip():  # Engine takes it for none: the local engine said nothing
        raise PipelineError(f"--ray-address {address!r}: expected a Ray cluster's address, e.g. 10.0.0.5:6379 (leave"
                            " it out for a local Ray instance)")
    engine = Engine(name, workers, address, device)
    engine.check()
    if name == "local" and device == "gpu":
        import_tensorflow_quietly()
        use_device(device)
    return engine


def checkout_commit() -> str | None:
    """'5f4d106, 2026-12-07': the commit of the checkout the package runs from; None for an installed package, or
    where git is missing or the folder is no git checkout."""
    if not config.IN_CHECKOUT:
        return None
    try:
        result = subprocess.run(["git", "-C", str(config.PACKAGE_DIR.parent), "log", "-1", "--format=%h, %cs"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def quiet_anywhere(app_command, arguments: list[str]) -> list[str]:
    """The arguments with --quiet (-q) moved to the front: it is the app's option, but users put it after the
    command too (`all --quiet`). A word that is the value of an option (`--message --quiet`) stays.
    app_command: the app's click command (typer.main.get_command(app))."""
    commands = app_command.commands
    command = next((commands[word] for word in arguments if word in commands), None)
    takes_value = {name for parameter in (command.params if command else [])
                   if parameter.param_type_name == "option" and not parameter.is_flag for name in parameter.opts}
    moved, kept, skip_next = [], [], False
    for index, word in enumerate(arguments):
        if word == "--":
            kept.extend(arguments[index:])
            break
        if skip_next:
            kept.append(word)
            skip_next = False
        elif word in ("--quiet", "-q"):
            moved.append(word)
        else:
            kept.append(word)
            skip_next = word in takes_value
    return moved + kept


def without_flag_types(command) -> None:
    """Flags are plain: no "<bool>" beside --help, --install-completion and the like, which typer adds itself."""
    from types import SimpleNamespace

    help_option = command.get_help_option(SimpleNamespace(help_option_names=["--help"]))
    for parameter in [*command.params, *([help_option] if help_option else [])]:
        if getattr(parameter, "is_flag", False):
            parameter.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        without_flag_types(subcommand)


# The largest integer any option takes, either way: seeds stop at 2**31 - 1 (NumPy's and TensorFlow's), and no count
# of epochs, rows a batch, models, folds or trials comes near it. A larger one failed in TensorFlow, with a traceback.
LARGEST_INTEGER = 2**31 - 1


def bounded_integers(command) -> None:
    """Every integer option (of the command and its subcommands) refuses a value beyond LARGEST_INTEGER as a usage
    error. One without a callback of its own: none has one."""
    for parameter in command.params:
        descriptor = getattr(parameter, "type_descriptor", None)  # typer's: the annotation it converts to
        if descriptor is not None and descriptor.annotation in (int, Optional[int]) and parameter.callback is None:
            parameter.callback = _within_largest_integer
    for subcommand in getattr(command, "commands", {}).values():
        bounded_integers(subcommand)


def _within_largest_integer(context, parameter, value):
    if value is not None and abs(value) > LARGEST_INTEGER:
        raise typer.BadParameter(f"{value} is beyond what any option takes (-{LARGEST_INTEGER} to {LARGEST_INTEGER})")
    return value


# What a value typed for an option should have been, by pydantic's error type (typer 0.29 converts with pydantic).
EXPECTED_BY_ERROR = {"int_parsing": "an integer", "int_from_float": "an integer", "float_parsing": "a number"}


def value_reason(error: typer.TyperException) -> str | None:
    """A value typer could not convert, said with the value typed and what was expected ('abc' is not an
    integer), instead of pydantic's sentence, which leaves the value out. None: not such an error."""
    cause = error.__cause__
    if not callable(getattr(cause, "errors", None)) or not cause.errors():
        return None
    first = cause.errors()[0]
    expected = EXPECTED_BY_ERROR.get(first.get("type"))
    reason = f"is not {expected}" if expected else first.get("msg", "").lower()
    return f"{first.get('input')!r} {reason}"


def usage_line(error: typer.TyperException) -> str:
    """A mistyped command, option or value in one line, as the pipeline's own errors are (typer's box took six):
    click's message, then the help that lists what the command takes."""
    reason = value_reason(error)
    if reason is not None:
        error.message = reason  # click's BadParameter puts "Invalid value for '--seed': " before it
    message = " ".join(error.format_message().split())
    context = getattr(error, "ctx", None)  # a usage error's; other click errors have none
    return f"{message} (see `{context.command_path} --help`)" if context else message


def help_in_paragraphs(command) -> None:
    """Each command's help as paragraphs: the line breaks of its docstring broke its line in `--help`'s list."""
    for subcommand in getattr(command, "commands", {}).values():
        if subcommand.help:
            subcommand.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in subcommand.help.split("\n\n"))


def run_app(app: typer.Typer) -> None:
    """Run the typer app on sys.argv: a PipelineError is one line on stderr and exit status 1, never a traceback;
    a usage error (a mistyped command, option or value) one line and exit status 2, as click's own."""
    completion = next((arg for arg in sys.argv[1:] if arg.startswith(("--install-completion", "--show-completion"))),
                      None)
    if completion and Path(sys.argv[0]).name == "__main__.py":  # `python -m pipeline`: no command for a shell to
        # complete; the script typer writes would take over completion of every `python` line
        typer.echo(f"error: {completion.split('=')[0]}: shell completion is the installed command's,"
                   " `digit-recognizer --install-completion` (pip install -e .), not python -m pipeline's", err=True)
        sys.exit(2)
    for stream in (sys.stdout, sys.stderr):  # a path the output's encoding cannot show (ascii, cp1252): escaped,
        if hasattr(stream, "reconfigure"):    # not a UnicodeEncodeError traceback after the stage's work was done
            stream.reconfigure(errors="backslashreplace")
    # docker stop, timeout, a batch system's end: as a Ctrl-C, the line that says what to do next instead of none
    # (exit 143), and in training the batch finished first. Not where SIGINT is ignored (a script's background job:
    # raising it would do nothing, and SIGTERM would no longer stop the command), nor off the main thread.
    terminate = signal.getsignal(signal.SIGTERM)
    as_ctrl_c = (terminate is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.default_int_handler
                 and threading.current_thread() is threading.main_thread())
    # A closed terminal or a dropped SSH session (SIGHUP) too, unless it is ignored (nohup).
    hangup = getattr(signal, "SIGHUP", None)  # none on Windows
    hang_up = hangup is not None and signal.getsignal(hangup) is signal.SIG_DFL
    if as_ctrl_c:
        for number in (signal.SIGTERM, *([hangup] if hang_up else [])):
            signal.signal(number, lambda number, frame: signal.raise_signal(signal.SIGINT))
    try:
        private_temporary_folder()
        stage.new_command()
        command = typer.main.get_command(app)  # what app() runs (its pretty exceptions are off)
        without_flag_types(command)
        help_in_paragraphs(command)
        bounded_integers(command)
        # Not standalone: click's errors come here instead of being printed its way. main returns the status of
        # an exit (--help, --version: 0; Ctrl-C: 130), or the command's own value (None).
        status = command.main(args=quiet_anywhere(command, sys.argv[1:]), standalone_mode=False)
        sys.exit(status if isinstance(status, int) else 0)
    except typer.TyperException as error:  # click's (typer's copy): usage errors exit 2, others 1
        if error.format_message():  # empty for no command at all: typer has printed the help
            typer.echo(f"error: {usage_line(error)}", err=True)
        sys.exit(error.exit_code)
    except typer.Abort:  # end of input at a prompt
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except PipelineError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
    except OSError as error:  # a full disk or a read-only folder met outside the atomic writes
        one_line = write_error(error)
        if one_line is None:
            raise
        typer.echo(f"error: {one_line}", err=True)
        sys.exit(1)
    except Interrupted as stop:  # Ctrl-C where the command says what to do next
        leave_interrupted(str(stop))
    except SystemExit as stop:
        if stop.code == 130:  # typer's exit for Ctrl-C (KeyboardInterrupt), silent by itself
            trains = next((word for word in sys.argv[1:] if not word.startswith("-")), None) in TRAINING_COMMANDS
            leave_interrupted("nothing half-written was kept; run the same command again to go on"
                              + (" (training resumes from its last completed epoch)" if trains else ""))
        raise
    finally:
        remove_private_temporary_folder()
        if as_ctrl_c:  # a test's own process runs commands in it
            signal.signal(signal.SIGTERM, terminate)
            if hang_up:
                signal.signal(hangup, signal.SIG_DFL)


_REPLACED_TEMPORARY_FOLDER = []  # tempfile.tempdir as it was before the command's own folder
_IN_USE = []  # the lock a command holds in its folder while it runs: a killed command's lock is free
IN_USE_NAME = ".in-use"
LEFT_FOLDER_AGE_S = 60  # younger folders are skipped: their command may not hold its lock yet


def private_temporary_folder() -> None:
    """The command's temporary files in a folder of its own, removed when it ends. TensorFlow writes a .py file
    for every function autograph converts (the augmentations) and removes it only at the interpreter's exit, which
    Ctrl-C's quick exit below skips: hundreds piled up in /tmp. Where no folder can be made, the system's is used.
    A killed command (SIGKILL, the OOM killer) cannot remove its folder: the next command does."""
    remove_folders_of_killed_commands(Path(tempfile.gettempdir()))
    try:
        folder = tempfile.mkdtemp(prefix="digit-recognizer-")
        lock = FileLock(Path(folder) / IN_USE_NAME)
        lock.acquire(timeout=0)
    except (OSError, Timeout):
        return
    _IN_USE.append(lock)
    _REPLACED_TEMPORARY_FOLDER.append(tempfile.tempdir)
    tempfile.tempdir = folder


def remove_folders_of_killed_commands(system_folder: Path) -> None:
    """digit-recognizer-* folders whose lock no command holds: their command was killed. Only folders with the
    lock file: an older version's, without one, may still be in use."""
    try:
        candidates = [lock_file for lock_file in system_folder.glob(f"digit-recognizer-*/{IN_USE_NAME}")
                      if time.time() - lock_file.parent.stat().st_mtime > LEFT_FOLDER_AGE_S]
    except OSError:
        return
    for lock_file in candidates:
        lock = FileLock(lock_file)
        try:
            lock.acquire(timeout=0)
        except (OSError, Timeout):  # its command is running (or the folder is another user's)
            continue
        lock.release()
        shutil.rmtree(lock_file.parent, ignore_errors=True)


def remove_private_temporary_folder() -> None:
    folder = tempfile.tempdir
    if folder and Path(folder).name.startswith("digit-recognizer-") and _REPLACED_TEMPORARY_FOLDER:
        tempfile.tempdir = _REPLACED_TEMPORARY_FOLDER.pop()  # as it was, for whatever runs after (a test's process)
        if _IN_USE:
            _IN_USE.pop().release()
        shutil.rmtree(folder, ignore_errors=True)


# The commands whose training resumes, as their Ctrl-C line says (report's or download's said it too; bench starts
# each of its runs from nothing, in a folder of its own).
TRAINING_COMMANDS = {"train", "all", "tune"}


def leave_interrupted(advice: str) -> None:
    if threading.current_thread() is threading.main_thread():  # a second Ctrl-C (a held key repeats every
        signal.signal(signal.SIGINT, signal.SIG_IGN)            # 30 ms) raised a traceback from this exit path
    try:
        typer.echo(f"interrupted: {advice}", err=True)
    except OSError:  # the terminal is gone (SIGHUP): nothing to say it on
        pass
    remove_private_temporary_folder()
    # Every `finally` has run by now; leave without the interpreter's teardown, where TensorFlow's
    # half-traced functions can print a traceback of their own ("Exception ignored in ...").
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a pipe whose reader is gone (`| tee` with the terminal closed)
            pass
    os._exit(130)
