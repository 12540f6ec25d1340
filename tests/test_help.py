"""What --help and `make help` say: each preset's cost, flags without a type, whole choices, aligned columns."""

import re
import subprocess

import pytest

from conftest import PROJECT_ROOT, run_in_process
from pipeline.core import config

MAKE = ["make", "--no-print-directory", "-s"]


def test_no_flag_shows_a_type_in_any_help(tmp_path):
    for command in ([], ["all"], ["runs"], ["runs", "diff"], ["submit"], ["blend"]):
        result = run_in_process(tmp_path, *command, "--help", env={"COLUMNS": "200"})
        assert result.returncode == 0 and "<bool>" not in result.stdout, (command, result.stdout)


@pytest.mark.parametrize("command", ["all", "train", "tune"])
def test_help_gives_each_presets_cost_and_no_bool_type(tmp_path, command):
    for columns in ("80", "200"):
        result = run_in_process(tmp_path, command, "--help", env={"COLUMNS": columns})
        text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())  # the help's words, rewrapped
        assert "<bool>" not in text
        for cost in config.PRESET_COSTS.values():
            assert cost in text, cost
    assert "--preset NAME" in " ".join(result.stdout.split())  # a short metavar: no choice cut mid-word


def test_make_help_aligns_its_columns_and_gives_each_presets_cost():
    lines = subprocess.run([*MAKE, "help"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.splitlines()
    targets = [line for line in lines if line.startswith("  make ")]
    assert len({len(re.match(r"  make \S+ +", line).group()) for line in targets}) == 1, targets
    text = " ".join(" ".join(lines).split())  # its words, rewrapped
    for cost in config.PRESET_COSTS.values():  # the same words as --help, from the one place both read
        assert cost in text, cost


def test_a_wrong_preset_is_one_plain_sentence(tmp_path):
    result = run_in_process(tmp_path, "all", "--preset", "fast")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr  # no box, no usage lines
    assert result.stderr.startswith("error: Invalid value for '--preset': 'fast' is not one of default, quick, best,"
                                    " baseline (see `")  # the program's name: python -m pipeline, digit-recognizer
    assert result.stderr.endswith(" all --help`)\n")


@pytest.mark.parametrize("arguments, expected", [
    (["all", "--epoch", "3"], "No such option: --epoch"),
    (["trian"], "No such command 'trian'."),
    (["runs", "diff", "only-one"], "Missing argument 'second'."),
    (["all", "--seed", "abc"], "Invalid value for '--seed': 'abc' is not an integer (see"),
    (["split", "--val-fraction", "a tenth"], "Invalid value for '--val-fraction': 'a tenth' is not a number (see"),
    (["all", "--epochs"], "Option '--epochs' requires an argument."),
])
def test_a_usage_error_is_one_line_and_exit_status_2(tmp_path, arguments, expected):
    result = run_in_process(tmp_path, *arguments)
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything ran


def test_no_command_prints_the_help_and_exit_status_2(tmp_path):
    result = run_in_process(tmp_path)
    assert result.returncode == 2 and "Commands" in result.stdout and "error" not in result.stderr


def test_counts_are_singular_for_one():
    from pipeline.core.console import count

    assert count(1, "epoch") == "1 epoch" and count(2, "model") == "2 models"


def test_the_list_of_commands_breaks_a_description_only_at_the_width(tmp_path):
    """The line breaks of the docstrings were kept: `when they` then `share a split.` on a line of its own."""
    listed = run_in_process(tmp_path, "--help", env={"COLUMNS": "80"}).stdout
    assert "with an out-of-fold estimate when they share a split." in listed
    assert "within 100 columns; `runs diff A B` compares two." in listed
