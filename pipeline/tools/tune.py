"""Hyper-parameter search over the recipe's levers, as training runs on the Ray engine.

Trial 1 is the preset itself, the one to beat; the others draw learning rate, epochs, augmentation,
dropout and width around it (`sample_trials`, seeded, so a search repeats). Each trial is a full
train run of the current split, scored by its honest estimate (pipeline.core.estimate), listed by
`pipeline runs`, and kept in the run cache: `make all` with the printed options (and FINAL_MODEL=0)
restores the trial's models instead of training them again. Trials train side by side, each
driving its own models through pipeline.training.engine, at most `workers` models at once on the cluster.

The best of several trials scored on one estimate is optimistic (it was selected on that
estimate): the search says so, and its winner is worth confirming with cross-validation folds.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from pipeline.core import config, runs, stage
from pipeline.core.console import count, format_table
from pipeline.core.errors import PipelineError, TrainingDiverged
from pipeline.core.estimate import Estimate, describe
from pipeline.core.records import TuneMark
from pipeline.stages import train
from pipeline.training.engine import STOPPING, cluster_plan, ray_session
from pipeline.training.plan import WARMUP_EPOCHS
from pipeline.training.settings import TrainingConfig, has_dropout_layer, knobs, training_config

# The levers, each drawn around the preset's value.
AUGMENTATIONS = (0.0, 0.5, 1.0, 1.5)
DROPOUTS = (0.2, 0.3, 0.4, 0.5)
WIDTHS = (0.75, 1.0, 1.5)
EPOCH_FACTORS = (2 / 3, 1.0, 4 / 3)
LEARNING_RATE_OCTAVES = (-1.5, 1.0)  # log2 range around the preset's peak learning rate

# The levers (TrainingConfig's names), for the line that reproduces a trial: (the name, the CLI's option, make's
# variable), as pipeline.training.settings.knobs names them.
LEVERS = ("learning_rate", "epochs", "augmentation", "dropout", "width")
OPTIONS = tuple((spec.name, f"--{spec.option}", spec.variable) for name in LEVERS for spec in knobs()
                if spec.name == name)
# The split's options tune takes besides the training options (which fixed_options names from their knobs).
SPLIT_OPTIONS = (("folds", "--folds", "FOLDS"), ("val_fraction", "--val-fraction", "VAL_FRACTION"))


# Each trial is a training run: far more would take months, and drawing distinct settings slows as count squared.
MOST_TRIALS = 1000


def check_search(count: int, seed: int) -> None:
    """--trials and --search-seed, before any stage runs."""
    if not 1 <= count <= MOST_TRIALS:
        raise PipelineError(f"--trials {count}: expected 1 to {MOST_TRIALS}")
    if seed < 0:
        raise PipelineError(f"--search-seed {seed}: expected an integer 0 or more")


def sample_trials(base: dict, count: int, seed: int, valid=lambda trial: True) -> list[dict]:
    """count distinct settings of the levers: the preset's own first, then random draws around it, each one that
    valid(trial) accepts (a peak learning rate drawn past 1 stopped the search half way, on a value nobody typed).
    Dropout is no lever of a run without a dropout layer: trials differing in it alone would be the same models."""
    check_search(count, seed)
    names = [name for name, _, _ in OPTIONS if name != "dropout" or has_dropout_layer(base)]
    trials = [{name: base[name] for name in names}]
    rng = np.random.default_rng(seed)
    for _ in range(1000 * count):
        if len(trials) == count:
            break
        trial = {
            "learning_rate": float(f"{base['learning_rate'] * 2 ** rng.uniform(*LEARNING_RATE_OCTAVES):.2g}"),
            # not into the warm-up alone (train warns of 1-2 epochs), unless the preset's own epochs are there
            "epochs": max(min(base["epochs"], WARMUP_EPOCHS + 1),
                          round(base["epochs"] * float(rng.choice(EPOCH_FACTORS)))),
            "augmentation": float(rng.choice(AUGMENTATIONS)),
            "dropout": float(rng.choice(DROPOUTS)),
            "width": float(rng.choice(WIDTHS)),
        }
        trial = {name: value for name, value in trial.items() if name in names}
        if trial not in trials and valid(trial):
            trials.append(trial)
    return trials


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def cli_options(trial: dict) -> str:
    return " ".join(f"{option} {_value(trial[name])}" for name, option, _ in OPTIONS if name in trial)


def make_options(trial: dict) -> str:
    return " ".join(f"{variable}={_value(trial[name])}" for name, _, variable in OPTIONS if name in trial)


def _passes_check(base: TrainingConfig, trial: dict) -> bool:
    try:
        replace(base, **trial).check()
    except PipelineError:
        return False
    return True


def search(paths, console, preset: str, values: dict, trials: int, seed: int, engine,
           given: dict | None = None) -> list[dict]:
    """Train every trial (in parallel on the engine); [{"trial", "settings", "record"}] best estimate first. given:
    the options given, which trial 1 (the preset) has too."""
    # Trials are for comparing: no model on all rows, no pseudo-labels (the printed options add them back).
    base = replace(training_config(values), final_model=False, pseudo_label=False)
    settings = sample_trials(values, trials, seed, lambda trial: _passes_check(base, trial))
    definitions = [train.define(paths, console, training=replace(base, **trial), preset=preset, engine=engine)
                   for trial in settings]

    def run_trial(number: int) -> dict:
        console.say(f"tune: trial {number + 1} of {len(settings)}: {cli_options(settings[number])}")
        try:
            record = stage.run_detached(definitions[number], console)
        except TrainingDiverged as error:  # a learning rate too high for its settings: the others go on
            console.say(f"tune: trial {number + 1} diverged: {error}")
            return {"trial": number + 1, "settings": settings[number], "record": None}
        if runs.run_path(paths, record["extra"]["run_id"]).is_file():  # `runs` marks it as a trial
            runs.write_tune_mark(paths, record["extra"]["run_id"], TuneMark(number + 1, len(settings), seed))
        return {"trial": number + 1, "settings": settings[number], "record": record}

    if all(map(stage.kept_result, definitions)):  # nothing to train: Ray's start-up would be 10-30 s for nothing
        console.say(f"tune: {count(len(settings), 'trial')} of preset {preset}, every one kept from an earlier"
                    " search (Ray not started)")
        return ranked([run_trial(number) for number in range(len(settings))], values["learning_rate"])
    console.say("tune: starting Ray (its start-up takes 10-30 s)")
    with ray_session(engine):
        at_once, _, described = cluster_plan(engine.workers, engine.device)
        console.say(f"tune: {count(len(settings), 'trial')} of preset {preset} on Ray ({described}),"
                    f" {count(at_once, 'model')} at once;"
                    f" trial 1 is the preset{' with the options given' if given else ' itself'}")
        STOPPING.clear()
        pool = ThreadPoolExecutor(max_workers=at_once)
        try:
            results = list(pool.map(run_trial, range(len(settings))))
        except BaseException:  # Ctrl-C, or a trial failed: the others' tasks end now, not when their models are
            # trained (they resume from their checkpoints next time)
            STOPPING.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return ranked(results, values["learning_rate"])


def ranked(results: list[dict], learning_rate: float) -> list[dict]:
    """The trials best estimate first (one that diverged last); none left to rank is an error."""
    if all(result["record"] is None for result in results):
        raise PipelineError(f"every trial diverged (its loss became NaN or infinite): try a lower --learning-rate"
                            f" than {learning_rate:g}, which the draws are centred on")
    return sorted(results, key=lambda result: (-accuracy_of(result), result["trial"]))


def estimate_of(result: dict) -> Estimate | None:
    """A trial's estimate, as train recorded it in its stage record; None for a trial that diverged."""
    return Estimate.from_json(result["record"]["extra"].get("estimate")) if result["record"] else None


def accuracy_of(result: dict) -> float:
    estimate = estimate_of(result)
    return estimate.accuracy if estimate else 0.0


def format_results(results: list[dict]) -> str:
    rows = [[str(result["trial"]), describe(estimate_of(result), missing="diverged"),
             result["record"]["extra"]["run_id"] if result["record"] else "-", cli_options(result["settings"])]
            for result in results]
    return format_table(["trial", "estimate", "run", "options"], rows)


def fixed_options(given: dict) -> tuple[str, str]:
    """The options given to tune besides its levers, as (make variables, CLI options): the training options in
    TrainingConfig's order, then the split's, then the switches (--deterministic, DETERMINISTIC=1)."""
    specs = [spec for spec in knobs() if spec.knob.tune and spec.name not in LEVERS]
    valued = [(spec.name, f"--{spec.option}", spec.variable) for spec in specs if spec.type is not bool]
    pairs = [(f"{variable}={_value(given[name])}", f"{option} {_value(given[name])}")
             for name, option, variable in (*valued, *SPLIT_OPTIONS) if given.get(name) is not None]
    pairs += [(f"{spec.variable}={int(given[spec.name])}", f"--{'' if given[spec.name] else 'no-'}{spec.option}")
              for spec in specs if spec.type is bool and given.get(spec.name) is not None]
    return "".join(f" {make}" for make, _ in pairs), "".join(f" {cli}" for _, cli in pairs)


def summary_lines(results: list[dict], preset: str, given: dict | None = None,
                  source: tuple[str, str] = ("", "")) -> list[str]:
    """source: the data's (CLI, make) options, core.stage.download_options(): the winner rebuilt on other data
    (the sample, or Kaggle's instead of the user's zip) was no reproduction."""
    best = results[0]
    make_fixed, cli_fixed = fixed_options(given or {})
    make_fixed, cli_fixed = source[1] + make_fixed, source[0] + cli_fixed
    reference = next(result for result in results if result["trial"] == 1)
    accuracy = accuracy_of(best)
    gain = accuracy - accuracy_of(reference)
    images = estimate_of(best).images if estimate_of(best) else 0
    # trial 1: the preset, as the options given changed it (`--width 0.5` is the user's, not the preset's)
    own = "the preset's settings with the options given" if given else "the preset's own settings"
    lines = [f"tune: best trial {best['trial']}: {cli_options(best['settings'])}"
             + (f" ({own})" if best is reference
                else f" ({own} diverged)" if reference["record"] is None
                else f" ({gain * 100:+.2f} points over {own})"),
             "tune: reproduce it: " + config.how_to(
                 f"make all PRESET={preset}{make_fixed} {make_options(best['settings'])}   (or python -m pipeline"
                 f" all --preset {preset}{cli_fixed} {cli_options(best['settings'])})",
                 f"digit-recognizer all --preset {preset}{cli_fixed} {cli_options(best['settings'])}")
             # trials train no model on all rows: without it, the trial's own models come back from the run cache
             + (config.how_to("; add FINAL_MODEL=0", "; add --no-final-model")
                + " to restore the trial's models from the run cache instead of training them"
                if config.PRESETS[preset]["final_model"] and (given or {}).get("final_model") is not False else "")]
    if len(results) > 1:
        # One standard error of a difference of two accuracies near `accuracy` on these images.
        noise = math.sqrt(2 * accuracy * (1 - accuracy) / max(images, 1)) * 100
        lines.append(f"tune: the best of {len(results)} trials on one estimate is optimistic (picked on it);"
                     f" differences under about {2 * noise:.2f} points are noise here: confirm with FOLDS=5"
                     " before trusting it")
    return lines
