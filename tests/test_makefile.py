"""The Makefile: only the command line's variables become options, each as typed or refused in one line."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from conftest import PROJECT_ROOT

from pipeline.cli import app
from pipeline.cli_support import quiet_anywhere

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def run_make(*args: str, env: dict | None = None, dry_run: bool = True) -> subprocess.CompletedProcess:
    """make ARGS in the checkout, never (re)building the virtual environment; -n: print the commands only."""
    environment = {**os.environ, **(env or {})}
    # A MAKEFLAGS of an outer `make test` would add its own command-line variables.
    environment.pop("MAKEFLAGS", None)
    command = ["make", "--no-print-directory", *(["-n"] if dry_run else []), "-o", ".venv/.installed",
               f"PYTHON={sys.executable}", *args]
    return subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120)


def pipeline_words(result: subprocess.CompletedProcess) -> list[str]:
    """The words of the pipeline command make ran (or would run)."""
    assert result.returncode == 0, result.stdout + result.stderr
    # A recipe continued over lines (a backslash at the end) is one shell command.
    lines = result.stdout.replace("\\\n", " ").splitlines()
    line = next(line for line in lines if "-m pipeline" in line)
    return shlex.split(line)


def option_value(words: list[str], option: str) -> str:
    return words[words.index(option) + 1]


@pytest.mark.parametrize("target", ["all", "help", "tune", "bench", "clean"])
def test_a_mistyped_variable_is_refused_in_one_line_naming_the_close_match(target):
    """Issue 18: `make all EPOCH=1` ended "up to date" with exit 0, EPOCH ignored."""
    result = run_make(target, "EPOCH=1")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "EPOCH" in result.stderr and "EPOCHS" in result.stderr, result.stderr
    assert "-m pipeline" not in result.stdout


def test_a_variable_with_no_close_match_is_still_refused():
    result = run_make("all", "NOTHING_LIKE_IT=1")
    assert result.returncode != 0 and "NOTHING_LIKE_IT" in result.stderr and "did you mean" not in result.stderr


def test_exported_names_are_not_options():
    """Issue 21: an exported RAY_ADDRESS made plain `make all` fail; an exported MODEL became --model."""
    words = pipeline_words(run_make("all", env={"RAY_ADDRESS": "127.0.0.1:1", "MODEL": "mlp", "EPOCHS": "1"}))
    assert "--ray-address" not in words and "--model" not in words and "--epochs" not in words
    words = pipeline_words(run_make("all", "MODEL=mlp", env={"MODEL": "small"}))
    assert option_value(words, "--model") == "mlp"


def test_a_dollar_in_a_value_reaches_the_cli_as_typed():
    """Issue 21: MESSAGE='cost $5' was sent as "cost "."""
    words = pipeline_words(run_make("submit", "MESSAGE=cost $5 for 'it'", "FILE=a $(b).csv"))
    assert option_value(words, "--message") == "cost $5 for 'it'"
    assert option_value(words, "--file") == "a $(b).csv"


def test_a_make_function_in_a_value_is_never_run(tmp_path):
    """Issue 21: RUN='$(shell touch pwned)' ran the command. A real run: the CLI gets the text and refuses it."""
    marker = tmp_path / "pwned"
    value = f"$(shell touch {marker})"
    result = run_make("report", f"RUN={value}", env={"PIPELINE_ROOT": str(tmp_path / "project")}, dry_run=False)
    assert not marker.exists()
    assert result.returncode != 0 and value in result.stderr, result.stderr
    assert not marker.exists()


def test_a_newline_in_a_value_is_refused_in_one_line():
    """Issue 21: a newline in MESSAGE broke the recipe into two shell commands."""
    result = run_make("submit", "MESSAGE=first line\nsecond line")
    assert result.returncode != 0 and "-m pipeline" not in result.stdout
    assert result.stderr.count("\n") == 1 and "MESSAGE" in result.stderr, result.stderr


@pytest.mark.parametrize("arguments", [("submit", "FILE=", "WAIT=0"), ("all", "PRESET=", "EPOCHS=2"),
                                       ("submit", "MESSAGE= ")])
def test_an_empty_value_is_refused_not_left_out(arguments):
    """`make submit FILE=` (FILE=$BEST with BEST unset) sent the last predicted file instead, without a word."""
    result = run_make(*arguments)
    name = next(argument.partition("=")[0] for argument in arguments
                if "=" in argument and not argument.partition("=")[2].strip())
    assert result.returncode != 0 and "-m pipeline" not in result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{name}= is empty: give it a value, or leave it out for the default" in result.stderr


def test_quiet_hides_make_s_echo_too(tmp_path):
    """`make all QUIET=1` printed make's echo of the command, padded with spaces, before the quiet CLI's nothing."""
    env = {"PIPELINE_ROOT": str(tmp_path)}
    loud = run_make("runs", env=env, dry_run=False)
    quiet = run_make("runs", "QUIET=1", env=env, dry_run=False)
    assert loud.returncode == 0 and quiet.returncode == 0, quiet.stderr
    echo = f"{sys.executable} -m pipeline"
    assert loud.stdout.startswith(echo) and echo not in quiet.stdout
    assert quiet.stdout.startswith("no runs yet")  # the table `runs` is for stays


def test_pipeline_root_on_the_command_line_says_it_is_the_environment_s():
    """`make all PIPELINE_ROOT=/x` was refused as an unknown variable, without a hint."""
    result = run_make("all", "PIPELINE_ROOT=/somewhere")
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert ("PIPELINE_ROOT is read from the environment, not the make command line: PIPELINE_ROOT=DIR make all"
            in result.stderr)


def command_options(name: str) -> set[str]:
    command = typer.main.get_command(app).commands[name]
    return {option for parameter in command.params for option in parameter.opts}


def test_tune_takes_the_training_options_that_apply():
    """Issue 18: `make tune EPOCHS=5` dropped EPOCHS."""
    words = pipeline_words(run_make("tune", "EPOCHS=5", "MODEL=small", "DROPOUT=0.3", "FOLDS=3", "DETERMINISTIC=1"))
    assert option_value(words, "--epochs") == "5" and option_value(words, "--model") == "small"
    assert option_value(words, "--dropout") == "0.3" and option_value(words, "--folds") == "3"
    assert "--deterministic" in words
    options = [word for word in words if word.startswith("--")]
    assert set(options) <= command_options("tune"), options


def test_bench_passes_its_presets_epochs_and_source():
    """Issue 18: `make bench` could not pass the options its command has."""
    words = pipeline_words(run_make("bench", "PRESETS=quick,baseline", "EPOCHS=1", "SOURCE=sample"))
    assert option_value(words, "--presets") == "quick,baseline" and option_value(words, "--epochs") == "1"
    assert option_value(words, "--source") == "sample"
    options = [word for word in words if word.startswith("--")]
    assert set(options) <= command_options("bench"), options


def test_the_test_target_states_the_measured_time():
    help_text = run_make("-s", "help", dry_run=False).stdout
    assert "about 7 minutes" not in help_text and "about 8 minutes" in help_text  # 7 min 16 s measured on 2 cores


def test_quiet_is_moved_to_the_front_from_anywhere_but_an_option_value():
    """Issue 18: --quiet worked only before the command."""
    command = typer.main.get_command(app)
    assert quiet_anywhere(command, ["all", "--preset", "quick", "--quiet"]) == ["--quiet", "all", "--preset", "quick"]
    assert quiet_anywhere(command, ["-q", "prepare"]) == ["-q", "prepare"]
    assert quiet_anywhere(command, ["submit", "--message", "--quiet"]) == ["submit", "--message", "--quiet"]
    assert quiet_anywhere(command, ["submit", "--", "--quiet"]) == ["submit", "--", "--quiet"]


def test_quiet_after_the_command_prints_nothing(tmp_path):
    from conftest import run_pipeline

    result = run_pipeline(tmp_path, "download", "--source", "sample", "--quiet")
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr
    assert (tmp_path / "data" / "raw" / "train.csv").is_file()


def test_the_line_that_reproduces_a_trial_repeats_the_options_given_to_tune():
    from pipeline.tools import tune

    settings = {"learning_rate": 0.002, "epochs": 5, "augmentation": 1.0, "dropout": 0.4, "width": 1.0}
    record = {"extra": {"estimate": {"accuracy": 0.9, "images": 240}, "run_id": "run"}}
    results = [{"trial": 1, "settings": settings, "record": record}]
    given = {"architecture": "small", "epochs": 5, "folds": 3, "deterministic": True}
    reproduce = tune.summary_lines(results, "quick", given)[1]
    assert "make all PRESET=quick MODEL=small FOLDS=3 DETERMINISTIC=1 LEARNING_RATE=0.002 EPOCHS=5" in reproduce
    assert "--preset quick --model small --folds 3 --deterministic --learning-rate 0.002" in reproduce
    # tuned on the user's own zip: rebuilt on it, not on the sample (review 58 K)
    on_own_data = tune.summary_lines(results, "quick", given, (" --source '/my data.zip'", " SOURCE='/my data.zip'"))
    assert "make all PRESET=quick SOURCE='/my data.zip' MODEL=small" in on_own_data[1]
    assert "all --preset quick --source '/my data.zip' --model small" in on_own_data[1]


def known_variables() -> list[str]:
    result = run_make("-p", "help")
    line = next(line for line in result.stdout.splitlines() if line.startswith("KNOWN := "))
    return line.removeprefix("KNOWN := ").split()


@pytest.mark.parametrize("variable, target, option", [("FORCE", "all", "--force"),
                                                     ("TENSORBOARD", "train", "--tensorboard"),
                                                     ("WIDE", "runs", "--wide"), ("QUIET", "runs", "--quiet")])
def test_an_on_only_switch_takes_the_words_of_every_switch_and_refuses_others(variable, target, option):
    """Review 58 N: FORCE=off, FALSE or any word but 0, no and false gave --force (every stage ran again, 20 minutes
    of training), TENSORBOARD=off gave --tensorboard; the two-way switches (DESKEW, TTA) refused those words."""
    for value in ("1", "yes", "true"):
        assert option in pipeline_words(run_make(target, f"{variable}={value}"))
    for value in ("0", "no", "false"):
        assert option not in pipeline_words(run_make(target, f"{variable}={value}"))
    for value in ("off", "False", "abc", "no 1"):  # review 58 R: any word of several counted
        refused = run_make(target, f"{variable}={value}")
        assert refused.returncode != 0 and f"{variable}={value}: expected 1 or 0 (yes/no, true/false)" in refused.stderr


@pytest.mark.parametrize("target, runs", [("blend", "two or more run ids"), ("runs-diff", "two run ids")])
def test_a_target_of_runs_without_runs_names_the_variable(target, runs):
    """Review 58 N: `make blend` without RUNS said the CLI's `Missing argument 'RUN RUN...'`, no make variable; review
    58 R: one run too, and an empty RUNS was told to leave it out for the default."""
    for given in ([], ["RUNS=20260101-000000-cnn"]):
        result = run_make(target, *given)
        assert result.returncode != 0 and f'make {target} needs RUNS="A B" ({runs} from `make runs`)' in result.stderr
    empty = run_make(target, "RUNS= ")
    assert empty.returncode != 0 and 'RUNS= is empty: give the run ids (RUNS="A B")' in empty.stderr


@pytest.mark.parametrize("variable", ["GPU", "TENSORBOARD"])
def test_venv_s_extras_refuse_a_word_that_is_no_switch(variable):
    """Review 58 (diff): `make venv GPU=on` installed a CPU-only TensorFlow without a word; TENSORBOARD=on likewise."""
    refused = run_make("venv", f"{variable}=on")
    assert refused.returncode != 0 and f"{variable}=on: expected 1 or 0 (yes/no, true/false)" in refused.stderr


def test_bench_given_preset_points_to_presets():
    """Review 58 K: README's PRESET= everywhere makes `make bench PRESET=quick` the natural mistake; it got no hint."""
    result = run_make("bench", "PRESET=quick")
    assert result.returncode != 0 and "make bench does not take PRESET (an option of all, train, tune); bench takes"\
        " PRESETS=quick,default; `make help`" in result.stderr, result.stderr


def test_each_target_takes_exactly_the_variables_that_change_its_commands(tmp_path):
    """`make train FINAL_WEIGHT=3` trained without a word about the weight, which only all and predict take.
    A copy of the Makefile without the refusal tells which variables change each target's commands (-B: every
    stamp's too, however this checkout's are); the Makefile must take those and refuse every other, in one line."""
    text = (PROJECT_ROOT / "Makefile").read_text()
    refusal = next(line for line in text.splitlines() if line.startswith("$(error make $(GOALS) does not take"))
    unchecked = tmp_path / "Makefile"
    required = next(line for line in text.splitlines() if line.startswith("need_runs = "))  # RUNS, as a refusal
    unchecked.write_text(text.replace(refusal, "").replace(required, "need_runs ="))
    variables = [name for name in known_variables() if name not in ("PYTHON", "VENV")]  # they go with every target
    phony = next(line for line in text.splitlines() if line.startswith(".PHONY:")).split()[1:]
    targets = [target for target in phony if target != "help"]  # help takes any variable, and prints the same
    assert {"all", "train", "predict", "venv", "clean"} <= set(targets)
    value = {"ENGINE": "ray", "RUNS": "a b"}  # "1" is a value for every other: a switch's, a count's, a name's

    def dry_run(makefile: str, target: str, *names: str) -> subprocess.CompletedProcess:
        return run_make("-B", "-f", makefile, target, *(f"{name}={value.get(name, '1')}" for name in names))

    for target in targets:
        plain = dry_run(str(unchecked), target)
        assert plain.returncode == 0, (target, plain.stderr)
        changing = {name for name in variables if dry_run(str(unchecked), target, name).stdout != plain.stdout}
        everything = dry_run("Makefile", target, *variables)
        refused = set(re.findall(r"([A-Z_]+) \(an option of", everything.stderr))
        assert refused == set(variables) - changing, (target, sorted(refused ^ (set(variables) - changing)))
        assert everything.returncode != 0 and everything.stderr.count("\n") == 1, everything.stderr
        assert f"make {target} does not take " in everything.stderr, everything.stderr
        together = changing - {"BENCH_SOURCE"}  # SOURCE under another name: refused beside it, below
        taken = dry_run("Makefile", target, *sorted(together))
        assert taken.returncode == 0, (target, taken.stderr)
    assert "FINAL_WEIGHT (an option of all, predict)" in dry_run("Makefile", "train", "FINAL_WEIGHT").stderr
    both = dry_run("Makefile", "bench", "SOURCE", "BENCH_SOURCE")  # the second was passed last, and won silently
    assert both.returncode != 0 and "make bench: SOURCE and BENCH_SOURCE name the same option; give one" in both.stderr


def a_data_folder(root):
    """data/ as a user has it: the pipeline's outputs, the sent log, the sample and a zip and folder of their own."""
    data = root / "data"
    for folder in ("raw", "prepared", "split", "models/run", ".cache/store/objects", "reports", "sample", "mine"):
        (data / folder).mkdir(parents=True)
    for name in ("submissions_sent.json", "digit-recognizer.zip", ".pipeline.lock", ".tmp-1-2-x.json"):
        (data / name).write_text("x")
    return data


def stand_in_checkout(checkout: Path) -> Path:
    """What the Makefile and its clean targets read, so that a wrong rm cannot reach this checkout."""
    for name in ("Makefile", "pipeline/__init__.py", "pipeline/core/__init__.py", "pipeline/core/clean.py",
                 "pipeline/training/settings.py"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, checkout / name)
    return checkout


def test_clean_refuses_while_a_command_runs_and_never_removes_the_lock(tmp_path):
    """`make clean` during a run deleted data/ under it, and the lock file it held: a second `make all` then
    started at once beside the first."""
    from filelock import FileLock

    checkout = stand_in_checkout(tmp_path / "checkout")
    data = a_data_folder(checkout)
    env = {name: value for name, value in os.environ.items() if name not in ("MAKEFLAGS", "PIPELINE_ROOT")}
    with FileLock(data / ".pipeline.lock"):  # as a running command holds it (pipeline.core.cache.exclusive_lock)
        for target in ("clean", "clean-cache"):
            refused = subprocess.run(["make", "--no-print-directory", "-s", target], cwd=checkout, env=env,
                                     capture_output=True, text=True, timeout=60)
            assert refused.returncode != 0
            assert f"error: a pipeline command is running in {checkout}" in refused.stderr, refused.stderr
    assert (data / "models" / "run").is_dir() and (data / ".cache" / "store").is_dir()
    cleaned = subprocess.run(["make", "--no-print-directory", "clean"], cwd=checkout, env=env, capture_output=True,
                             text=True, timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert (data / ".pipeline.lock").is_file() and not (data / "models").exists()


def test_clean_removes_nothing_from_a_data_folder_the_pipeline_did_not_write(tmp_path, capsys):
    """`digit-recognizer clean`, run from a home folder, would have removed ~/data/models and ~/data/raw of anything."""
    from pipeline.core import clean

    mine = tmp_path / "data" / "models" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    assert clean.main([str(tmp_path / "data")]) == 0
    assert mine.read_text() == "mine" and "nothing removed" in capsys.readouterr().out


def test_clean_where_the_filesystem_has_no_flock_leaves_no_lock_file_behind(tmp_path, monkeypatch):
    """There filelock's lock is the file itself: the empty lock file clean made read as held for ever, and clean
    said a command was running when none was."""
    import errno
    import fcntl

    from pipeline.core import clean

    def no_flock(*arguments):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    data = a_data_folder(tmp_path)
    (data / ".pipeline.lock").unlink()
    assert clean.main([str(data)]) == 0
    assert sorted(path.name for path in data.iterdir()) == ["digit-recognizer.zip", "mine", "sample",
                                                            "submissions_sent.json"]
    (data / ".pipeline.lock").write_text("")  # a command's lock there: it runs
    (data / "models").mkdir()
    (data / ".cache").mkdir()
    assert clean.main([str(data)]) == 1 and (data / "models").is_dir()


def test_make_f_from_another_folder_says_to_run_make_c(tmp_path):
    """Review 57 E: `make -f checkout/Makefile help` from another folder said "no training options found (is awk
    installed?)"."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-f", str(PROJECT_ROOT / "Makefile"), "help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "awk" not in result.stderr
    assert f"{tmp_path} is not the checkout: run make -C {PROJECT_ROOT} instead" in result.stderr


def test_clean_that_cannot_remove_a_file_says_which_in_one_line(tmp_path, monkeypatch, capsys):
    """Review 57 E: a file clean could not remove (another user's, a read-only mount) ended `make clean` in a
    traceback, and the CLI's clean said `run.json: cannot write`, naming no folder."""
    import errno

    from pipeline.core import clean

    data = a_data_folder(tmp_path)
    stuck = data / "models" / "run" / "run.json"
    stuck.write_text("{}")
    real_unlink = os.unlink

    def unlink(name, *arguments, **options):
        if os.fspath(name) == "run.json":
            raise PermissionError(errno.EPERM, "Operation not permitted", name)
        return real_unlink(name, *arguments, **options)

    monkeypatch.setattr(os, "unlink", unlink)
    assert clean.main([str(data)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"error: {stuck}: cannot remove (Operation not permitted)")
    assert stuck.is_file() and (data / "mine").exists()


def test_clean_of_a_quoted_tilde_root_cleans_the_home_folders(tmp_path, monkeypatch, capsys):
    """Review 57 I: with PIPELINE_ROOT='~/pr', `all` wrote under the home folder and `make clean` looked for a folder
    named ~ (nothing removed, exit 0)."""
    from pipeline.core import clean

    monkeypatch.setenv("HOME", str(tmp_path))
    data = a_data_folder(tmp_path / "pr")
    assert clean.main(["~/pr/data"]) == 0
    assert not (data / "models").exists() and "removed what the pipeline wrote" in capsys.readouterr().out


def test_clean_leaves_a_link_to_another_disk_and_says_so(tmp_path, capsys):
    """Review 57 E: `make clean` with data/models a link said it removed models; the link went, the runs stayed."""
    from pipeline.core import clean

    data = a_data_folder(tmp_path)
    shutil.rmtree(data / "models")
    disk = tmp_path / "other-disk" / "models"
    (disk / "run").mkdir(parents=True)
    (data / "models").symlink_to(disk)
    assert clean.main([str(data)]) == 0
    said = capsys.readouterr().out
    assert f"not models: a link to {disk}, left as it is with what it holds" in said
    # the link too (review of the diff): without it, the next run would write its models to this disk instead
    assert (disk / "run").is_dir() and (data / "models").is_symlink() and not (data / "raw").exists()


@pytest.mark.parametrize("where", ["the checkout", "PIPELINE_ROOT"])
def test_clean_removes_what_the_pipeline_wrote_and_nothing_else(tmp_path, where):
    """`make clean` removed all of data/ but the sample: a user's zip, and the log that keeps a file from being sent
    to Kaggle twice. With PIPELINE_ROOT it cleaned the checkout's data/ instead of that root's."""
    checkout = stand_in_checkout(tmp_path / "checkout")
    root = checkout if where == "the checkout" else tmp_path / "elsewhere"
    data = a_data_folder(root)
    checkout_data = None if root == checkout else a_data_folder(checkout)
    env = {**os.environ, **({"PIPELINE_ROOT": str(root)} if root != checkout else {})}
    env.pop("MAKEFLAGS", None)
    if root == checkout:
        env.pop("PIPELINE_ROOT", None)
    for target in ("clean-cache", "clean"):
        result = subprocess.run(["make", "--no-print-directory", target], cwd=checkout, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        if target == "clean-cache":
            assert not (data / ".cache" / "store").exists() and (data / "models" / "run").is_dir()
    assert sorted(path.name for path in data.iterdir()) == [".pipeline.lock", "digit-recognizer.zip", "mine", "sample",
                                                            "submissions_sent.json"]
    if checkout_data is not None:  # the checkout's own data/ untouched
        assert (checkout_data / "models" / "run").is_dir() and (checkout_data / ".cache" / "store").is_dir()
