"""Issue 18, one home per knob: a training option is one field of TrainingConfig (with its preset value), and
the CLI options of train, all, bench and tune, make's variables and `make help`'s list agree with the fields."""

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import typer.main
from conftest import PROJECT_ROOT
from typer.testing import CliRunner

from pipeline import cli
from pipeline.core import config
from pipeline.training import settings
from pipeline.training.settings import KNOB, TrainingConfig

SPECS = settings.knobs()
NOT_FOR_TUNE = {"final_model", "pseudo_label", "pseudo_tune", "tta"}
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, cwd=PROJECT_ROOT, makefile: str | None = None) -> subprocess.CompletedProcess:
    """make ARGS, never (re)building the virtual environment (-o its stamps)."""
    environment = {name: value for name, value in os.environ.items() if name != "MAKEFLAGS"}
    command = ["make", "--no-print-directory", *(["-f", makefile] if makefile else []), "-o", ".venv/.installed",
               "-o", ".venv/.installed-ray", f"PYTHON={sys.executable}", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)


def make_knobs(**kwargs) -> list[str]:
    """The Makefile's KNOBS, as it read them from settings.py."""
    result = make("-pn", "help", **kwargs)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("KNOBS := "))
    return line.removeprefix("KNOBS := ").split()


def pipeline_words(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.replace("\\\n", " ").splitlines() if "-m pipeline" in line)
    return shlex.split(line)


def command_options(name: str) -> set[str]:
    command = typer.main.get_command(cli.app).commands[name]
    return {option for parameter in command.params for option in [*parameter.opts, *parameter.secondary_opts]}


def knob_options(spec) -> set[str]:
    return {f"--{spec.option}", f"--no-{spec.option}"} if spec.type is bool else {f"--{spec.option}"}


def sample_value(spec) -> str:
    """A value make passes on for the knob (a bool: 0, so the CLI word is --no-NAME)."""
    return {bool: "0", int: "3", float: "0.25"}.get(spec.type) or (spec.knob.choices or ("x",))[-1]


def test_every_field_is_a_knob_without_a_default_and_every_preset_gives_it_a_value():
    for item in dataclasses.fields(TrainingConfig):
        assert KNOB in item.metadata, item.name
        assert item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING, item.name
        assert item.type in (int, float, str, bool), item.name
    split_and_predict_keys = {"val_fraction", "folds", "final_weight"}
    for name, preset in config.PRESETS.items():
        assert set(preset) == {spec.name for spec in SPECS} | split_and_predict_keys, name
        for spec in SPECS:
            assert isinstance(preset[spec.name], spec.type) or (spec.type is float and type(preset[spec.name]) is int)
            assert not spec.knob.choices or preset[spec.name] in spec.knob.choices, (name, spec.name)
    assert {spec.name for spec in SPECS if not spec.knob.tune} == NOT_FOR_TUNE
    assert next(spec for spec in SPECS if spec.name == "architecture").option == "model"


@pytest.mark.parametrize("command", ["train", "all", "bench", "tune"])
def test_each_command_takes_the_knobs_that_apply_to_it(command):
    options = command_options(command)
    for spec in SPECS:
        applies = spec.knob.tune or command != "tune"
        assert knob_options(spec) <= options if applies else not knob_options(spec) & options, (command, spec.name)


def test_a_knobs_cli_option_reaches_the_command_as_its_field(monkeypatch):
    """Every knob through typer: its option on the command line is the field's value the command gets."""
    from pipeline.tools import bench

    got = {}
    monkeypatch.setattr(cli.chain, "run_all", lambda console, source, competition, preset, options, *rest:
                        got.update(all=options))
    monkeypatch.setattr(bench, "run_bench", lambda console, source, presets, options: got.update(bench=options))
    words, expected = [], {}
    for spec in SPECS:
        value = sample_value(spec)
        words += [f"--no-{spec.option}"] if spec.type is bool else [f"--{spec.option}", value]
        expected[spec.name] = False if spec.type is bool else spec.type(value)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["all", *words])
    assert result.exit_code == 0, result.output
    assert {name: got["all"][name] for name in expected} == expected
    assert got["all"]["val_fraction"] is None and got["all"]["folds"] is None
    result = runner.invoke(cli.app, ["all"])
    assert result.exit_code == 0 and all(got["all"][name] is None for name in expected), result.output
    result = runner.invoke(cli.app, ["bench", "--presets", "quick", "--epochs", "1", "--no-final-model"])
    assert result.exit_code == 0, result.output
    assert got["bench"] == ["--epochs", "1", "--no-final-model"]


@needs_make
def test_the_makefile_reads_the_knobs_as_the_fields_declare_them():
    expected = [f"{spec.variable}:{spec.option}:{spec.type.__name__}:{int(spec.knob.tune)}" for spec in SPECS]
    assert make_knobs() == expected
    assert all(spec.variable == spec.option.replace("-", "_").upper() for spec in SPECS)


@needs_make
def test_the_makefile_reads_a_declaration_over_several_lines(tmp_path):
    """The format the Makefile's awk reads: from `    name: type = knob(` to the line ending in `)`."""
    settings_file = tmp_path / "pipeline" / "training" / "settings.py"
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(
        'def knob(help, **keywords):\n'
        '    """Not a declaration: knob("x", option="y")."""\n\n\n'
        'class TrainingConfig:\n'
        '    first_one: float = knob("A help text (with parentheses)")\n'
        '    second: bool = knob("A help text that goes on"\n'
        '                        " over two lines (see)", tune=False,\n'
        '                        option="the-second")\n'
        '    third: str = knob("choices", choices=config.X)\n')
    assert make_knobs(cwd=tmp_path, makefile=str(PROJECT_ROOT / "Makefile")) == [
        "FIRST_ONE:first-one:float:1", "THE_SECOND:the-second:bool:0", "THIRD:third:str:1"]


@needs_make
def test_make_help_lists_every_knob_and_which_tune_leaves_out():
    result = make("-s", "help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for spec in SPECS:
        assert f"{spec.variable}=" in text, spec.variable
    assert "the training options but FINAL_MODEL PSEUDO_LABEL PSEUDO_TUNE TTA" in text


@needs_make
@pytest.mark.parametrize("target", ["all", "train", "bench", "tune"])
def test_make_passes_every_knob_that_applies_to_its_command(target):
    applies = [spec for spec in SPECS if spec.knob.tune or target != "tune"]
    words = pipeline_words(make("-n", target, *(f"{spec.variable}={sample_value(spec)}" for spec in applies)))
    assert words[words.index("pipeline") + 1] == target
    for spec in applies:
        expected = f"--no-{spec.option}" if spec.type is bool else f"--{spec.option}"
        assert expected in words, (target, spec.variable, words)
        if spec.type is not bool:
            assert words[words.index(expected) + 1] == sample_value(spec)
    assert {word for word in words if word.startswith("--")} <= command_options(target), words
    for spec in set(SPECS) - set(applies):  # tune's trials never train a model on all rows nor predict the test rows
        result = make("-n", target, f"{spec.variable}={sample_value(spec)}")
        assert result.returncode != 0 and f"make tune does not take {spec.variable} (" in result.stderr, result.stderr


@needs_make
def test_make_tune_and_bench_pass_their_values_and_a_mistyped_knob_is_refused():
    words = pipeline_words(make("-n", "tune", "EPOCHS=5"))
    assert words[words.index("--epochs") + 1] == "5"
    words = pipeline_words(make("-n", "bench", "PRESETS=quick", "EPOCHS=1", "TTA=1"))
    assert words[words.index("--presets") + 1] == "quick" and words[words.index("--epochs") + 1] == "1"
    assert "--tta" in words
    for target in ("all", "tune", "bench"):
        result = make("-n", target, "EPOCH=1")
        assert result.returncode != 0 and "EPOCHS" in result.stderr and "-m pipeline" not in result.stdout


@needs_make
def test_make_passes_final_weight_to_all_and_predict_and_train_has_no_such_option():
    """The model on all rows' weight is predict's option (all passes it on), not a training one."""
    for target in ("all", "predict"):
        words = pipeline_words(make("-n", target, "FINAL_WEIGHT=3"))
        assert words[words.index("--final-weight") + 1] == "3" and "--final-weight" in command_options(target)
    assert "--final-weight" not in command_options("train") | command_options("bench")


@needs_make
def test_a_switch_with_another_value_than_1_or_0_is_refused_in_one_line():
    """TTA=on gave neither --tta nor --no-tta, without a word."""
    result = make("-n", "all", "TTA=on")
    assert result.returncode != 0 and "-m pipeline" not in result.stdout
    assert result.stderr.count("\n") == 1 and "TTA=on: expected 1 or 0" in result.stderr, result.stderr
    words = pipeline_words(make("-n", "all", "TTA=yes", "DETERMINISTIC=false"))
    assert "--tta" in words and "--no-deterministic" in words


def test_no_final_model_turns_off_the_presets_pseudo_labels_but_not_an_explicit_one():
    from pipeline.core.errors import PipelineError

    assert settings.resolve_preset("default")["pseudo_label"] is True
    without_final = settings.resolve_preset("default", final_model=False)
    assert without_final["pseudo_label"] is False and settings.training_config(without_final).final_model is False
    with pytest.raises(PipelineError, match="add --final-model"):
        settings.training_config(settings.resolve_preset("default", final_model=False, pseudo_label=True))


def test_pseudo_tune_is_at_most_ten_epochs_and_off_in_every_preset():
    from pipeline.core.errors import PipelineError

    with pytest.raises(PipelineError, match=r"^--pseudo-tune 11: expected 0 \(none\) to 10 epochs, e.g. 3$"):
        settings.training_config(settings.resolve_preset("default", pseudo_tune=11))
    assert settings.training_config(settings.resolve_preset("default", pseudo_tune=3)).pseudo_tune == 3
    assert all(values["pseudo_tune"] == 0 for values in config.PRESETS.values())
