"""What the typer shell (pipeline.cli) needs besides its options: the training options assembled as the
preset's names, the engine checked, --quiet taken from anywhere on the command line, and the run of the app,
where a PipelineError (or a full disk, or Ctrl-C) becomes one line and an exit status, never a traceback.
"""

import os
import sys

import typer
import typer.main

from pipeline.core.console import import_tensorflow_quietly
from pipeline.core.errors import Interrupted, PipelineError, write_error
from pipeline.training.device import use_device
from pipeline.training.engine import Engine


def training_options(model, epochs, batch_size, learning_rate, seed, members, precision, deterministic, strategy,
                     final_model, tta, pseudo_label=None, augmentation=None, dropout=None, width=None,
                     elastic=None) -> dict:
    """The training options as the preset's names; None: not given, the preset's value stays."""
    return dict(architecture=model, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                members=members, precision=precision, deterministic=deterministic or None, strategy=strategy,
                final_model=final_model, tta=tta, pseudo_label=pseudo_label, augmentation=augmentation,
                dropout=dropout, width=width, elastic=elastic)


def engine_settings(name: str, workers: int | None, address: str | None, device: str = "auto") -> Engine:
    """Where the models train; a GPU asked for on this machine is looked for now, before any stage runs."""
    engine = Engine(name, workers, address, device)
    engine.check()
    if name == "local" and device == "gpu":
        import_tensorflow_quietly()
        use_device(device)
    return engine


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


def run_app(app: typer.Typer) -> None:
    """Run the typer app on sys.argv: a PipelineError is one line on stderr and exit status 1, never a traceback."""
    try:
        command = typer.main.get_command(app)  # what app() runs (its pretty exceptions are off)
        without_flag_types(command)
        command(args=quiet_anywhere(command, sys.argv[1:]))  # click itself reports usage errors (exit 2)
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
            leave_interrupted("nothing half-written was kept; run the same command again to go on "
                              "(training resumes from its last completed epoch)")
        raise


def leave_interrupted(advice: str) -> None:
    typer.echo(f"interrupted: {advice}", err=True)
    # Every `finally` has run by now; leave without the interpreter's teardown, where TensorFlow's
    # half-traced functions can print a traceback of their own ("Exception ignored in ...").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
