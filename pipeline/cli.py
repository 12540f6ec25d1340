"""The typer shell: options, and one call per command. A PipelineError becomes one line and exit 1.

What each stage reads, writes and does lives in its own module (pipeline/stages/download.py ... report.py);
pipeline.core.stage runs them, pipeline.stages.chain runs them in order. Options left unset take the preset's
value (pipeline.core.config.PRESETS). Assembling options and turning errors into exit statuses: cli_support.
"""

import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
import typer.main

from pipeline import __version__
from pipeline.cli_support import checkout_commit, choice_option, engine_settings, one_of, run_app, training_knobs
from pipeline.competition import scores, submit
from pipeline.core import cache, clean, config, extras, runs, stage
from pipeline.core.console import Console
from pipeline.core.errors import PipelineError
from pipeline.report import writer
from pipeline.stages import chain, download, predict, prepare, report, split, train
from pipeline.tools import bench, blend, runs_table, tune
from pipeline.training import settings
from pipeline.training.device import DEVICES
from pipeline.training.engine import ENGINES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def _train_words(record: dict) -> tuple[str, str]:
    """(' --preset quick --epochs 2', ' PRESET=quick EPOCHS=2 FOLDS=3'): the options of train's recorded run that its
    preset does not give, as train's own, then as `all`'s (make's in a checkout), the split's included, so that the
    advice to train again names them (the run cache brings the run back)."""
    preset = record["extra"]["preset"]
    given = record["key"]["params"]
    values = settings.resolve_preset(preset)
    defaults = settings.training_config(values).as_dict()
    changed = {spec.name: given[spec.name] for spec in settings.knobs() if given.get(spec.name) != defaults[spec.name]}
    split = record["extra"].get("run", {}).get("split", {})
    split_options = [(option, variable, split[name]) for name, option, variable in tune.SPLIT_OPTIONS
                     if name in split and split[name] != values[name]]
    cli = settings.option_words(changed)
    make = [f"{spec.variable}={int(value) if spec.type is bool else f'{value:g}' if spec.type is float else value}"
            for spec in settings.knobs() if (value := changed.get(spec.name)) is not None]
    if preset != config.DEFAULT_PRESET:
        cli, make = [f"--preset {preset}", *cli], [f"PRESET={preset}", *make]
    everything = config.how_to([*make, *(f"{variable}={value:g}" for _, variable, value in split_options)],
                               [*cli, *(f"{option} {value:g}" for option, _, value in split_options)])
    return "".join(f" {word}" for word in cli), "".join(f" {word}" for word in everything)


stage.RERUN_WORDS["train"] = _train_words
scores.ON_PAGE_REFRESHED.append(report.remember_refreshed_page)  # submit's new score: the report stays up to date

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Kaggle digit-recognizer pipeline: download -> prepare -> split -> train -> predict -> report -> submit.",
)

DEFAULT = config.PRESETS[config.DEFAULT_PRESET]
# Options with a fixed set of values: plain text checked by `one_of`, whose message is one plain sentence
# (a Literal type's is pydantic's "Value error, ..."); --help names the choices in the option's text.
# The training options (--model, --epochs ... --tta) are TrainingConfig's fields: `training_knobs` adds them.
PresetName = EngineName = DeviceName = SortKey = str


FORCE = typer.Option(False, "--force", help="Run even if the cache says the outputs are up to date.")
SOURCE = typer.Option("auto", help="auto (kaggle when credentials are found, else sample), kaggle, sample, "
                                   "or a PATH to a competition zip or folder.")
COMPETITION = typer.Option(config.COMPETITION, help="Kaggle competition name.")
VAL_FRACTION = typer.Option(None, help=f"Share of the train images kept aside to measure on, with --folds 1"
                                         f" (default {DEFAULT['val_fraction']}).")
FOLDS = typer.Option(None, help="1: one holdout split; K > 1: K-fold cross-validation, one model per fold, the"
                                " estimate over every row (default: the preset's; best: 5).")
SPLIT_FOLDS = typer.Option(None, "--folds", help="1: one holdout split; K > 1: K-fold cross-validation, one model per"
                                               f" fold (default {DEFAULT['folds']}; the best preset trains on 5).")
SPLIT_SEED = typer.Option(None, "--seed", help=f"Seed of the split: which rows are kept aside, or which fold each row"
                                               f" is in (default {DEFAULT['seed']}).")
PRESET = typer.Option(config.DEFAULT_PRESET, metavar="NAME", callback=one_of(*config.PRESETS),
                      help=f"{'|'.join(config.PRESETS)}: {'; '.join(config.PRESET_COSTS.values())}.")
ENGINE = choice_option("local", ENGINES, "local: the models train one after another in this process; ray: each"
                                         " model a Ray task, several at once, on this machine or the cluster at"
                                         " --ray-address.")
WORKERS = typer.Option(None, help="With --engine ray: models training at once (default: one per GPU, else one per"
                                  " machine); each gets its share of the CPUs.")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="With --engine ray: a running Ray cluster (host:6379); default:"
                                                       " $RAY_ADDRESS, else a local instance started for the run.")
# tune always runs on Ray: its own words, without "With --engine ray" (tune has no --engine)
TUNE_WORKERS = typer.Option(None, "--workers", help="Trials training at once (default: one per GPU, else one per"
                                                    " machine); each gets its share of the CPUs.")
TUNE_RAY_ADDRESS = typer.Option(None, "--ray-address", help="A running Ray cluster (host:6379); default: $RAY_ADDRESS,"
                                                            " else a local instance started for the search.")
DEVICE = choice_option("auto", DEVICES, "auto: every GPU TensorFlow finds, else the CPU; cpu: never a GPU; gpu: fail at"
                                    " once where there is none.")
TTA = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (default: as the trained preset says).")
FINAL_WEIGHT = typer.Option(None, "--final-weight", help="The model on all rows counts this many times in the"
                            " submission's average of the models, each other one once; 1 equal (default: the trained"
                            f" run's preset's, {DEFAULT['final_weight']:g} in {config.DEFAULT_PRESET}). Changing it"
                            " predicts again, it never trains.")
TENSORBOARD = typer.Option(False, "--tensorboard", help="Also write TensorBoard logs of the training to"
                           " data/tensorboard/ (view them: tensorboard --logdir data/tensorboard).")


def show_version(value: bool) -> None:
    if value:  # in a checkout with its commit too: the CHANGELOG's upgrade notes name the commits they hold from
        commit = checkout_commit()
        typer.echo(f"digit-recognizer {__version__}{f' (checkout at commit {commit})' if commit else ''}")
        raise typer.Exit()


@app.callback()
def main_options(context: typer.Context,
                 quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors and warnings."),
                 version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                              help="Print the version and exit.")):
    context.obj = Console(quiet=quiet)


def check_split_options(preset: str, val_fraction: float | None, folds: int | None) -> None:
    """The split's options, before any stage runs (a wrong one was refused only after download and prepare); and
    --val-fraction, the holdout split's share, refused beside folds, which hold out a K-th each: it would be ignored."""
    folds = config.PRESETS[preset]["folds"] if folds is None else folds
    split.check_options(config.PRESETS[preset]["val_fraction"] if val_fraction is None else val_fraction, folds)
    if val_fraction is not None and folds > 1:
        raise PipelineError(f"--val-fraction {val_fraction:g}: the share of a holdout split (--folds 1); with"
                            f" --folds {folds} each fold holds out 1/{folds} of the rows")


@app.command("download")
def download_command(context: typer.Context, source: str = SOURCE, competition: str = COMPETITION,
                     force: bool = FORCE):
    """Fetch train.csv and test.csv into data/raw/."""
    stage.run(download.define, context.obj, force, source=source, competition=competition, force_download=force)


@app.command("prepare")
def prepare_command(context: typer.Context, force: bool = FORCE):
    """Validate the CSVs; write (N, 28, 28, 1) arrays scaled to [0, 1] to data/prepared/."""
    stage.run(prepare.define, context.obj, force)


@app.command("split")
def split_command(context: typer.Context, val_fraction: Optional[float] = VAL_FRACTION,
                  folds: Optional[int] = SPLIT_FOLDS, seed: Optional[int] = SPLIT_SEED, force: bool = FORCE):
    """Stratified, seeded holdout split (or K cross-validation folds) of the prepared train images."""
    check_split_options(config.DEFAULT_PRESET, val_fraction, folds)
    values = settings.resolve_preset(config.DEFAULT_PRESET, val_fraction=val_fraction, folds=folds, seed=seed)
    stage.run(split.define, context.obj, force, val_fraction=values["val_fraction"], seed=values["seed"],
              folds=values["folds"])


@app.command("train")
@training_knobs()
def train_command(
    context: typer.Context, preset: PresetName = PRESET, knobs: dict = None, tensorboard: bool = TENSORBOARD,
    engine: EngineName = ENGINE, workers: Optional[int] = WORKERS, ray_address: Optional[str] = RAY_ADDRESS,
    device: DeviceName = DEVICE, force: bool = FORCE,
):
    """Train the models of the split (holdout or folds) and estimate their accuracy; resumes where it stopped."""
    if tensorboard:
        extras.require("tensorboard", "--tensorboard")
    warn_of_a_split_not_the_presets(context.obj, preset)
    record = stage.run(train.define, context.obj, force, preset=preset,
                       training=settings.training_config(settings.resolve_preset(preset, **knobs)),
                       tensorboard=tensorboard, engine=engine_settings(engine, workers, ray_address, device))
    if tensorboard:
        chain.warn_of_a_run_without_tensorboard_logs(context.obj, record)


def warn_of_a_split_not_the_presets(console: Console, preset: str) -> None:
    """`split` makes the default preset's holdout unless told: `train --preset best` then trained two models
    on it, not best's five folds, without a word."""
    folds = ((cache.load_record("split") or {}).get("key") or {}).get("params", {}).get("folds")
    own = config.PRESETS[preset]["folds"]
    if isinstance(folds, int) and folds != own:
        def kind(count: int) -> str:
            return "a holdout" if count == 1 else f"{count} folds"

        again = config.how_to(f"`make split FOLDS={own}`", f"`digit-recognizer split --folds {own}`")
        console.warn(f"the split is {kind(folds)}; the {preset} preset trains on {kind(own)}: training on the split"
                     f" as it is (for the preset's own, {again} first)")


@app.command("predict")
def predict_command(context: typer.Context, tta: Optional[bool] = TTA, final_weight: Optional[float] = FINAL_WEIGHT,
                    force: bool = FORCE):
    """Write submissions/<run>.csv for the latest trained model (never overwrites one)."""
    record = stage.run(predict.define, context.obj, force, tta=tta, final_weight=final_weight)
    run_id = record["key"]["params"]["run_id"]
    if writer.page_follows_submission(config.paths(), run_id):  # it named the run's earlier file, and its score
        context.obj.say(f"predict: the report page names this submission now, {config.paths().report_index(run_id)}")


@app.command("report")
def report_command(context: typer.Context,
                   run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest trained run)."),
                   force: bool = FORCE):
    """Pictures and one HTML page for the trained run, in data/reports/<run>/."""
    stage.run(report.define, context.obj, force, run_id=run)


runs_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
SORT = choice_option("estimate", runs.SORT_KEYS, "best estimate first, best public score first, or newest first.")
app.add_typer(runs_app, name="runs")


@runs_app.callback()
def runs_command(
    context: typer.Context,
    wide: bool = typer.Option(False, "--wide",
                              help="Every column (seed, recipe, source, date, interval, timings, submission, how"
                                   " it was predicted)."),
    everything: bool = typer.Option(False, "--all", help="Also the runs on the bundled sample when there are"
                                                         " full-size runs."),
    sort: SortKey = SORT,
):
    """Every training run and blend, best estimated accuracy first, within 100 columns; `runs diff A B` compares
    two."""
    if context.invoked_subcommand is None:
        print(runs_table.show_runs(config.paths(), wide, everything, sort, footer=not context.obj.quiet))


@runs_app.command("diff")
def runs_diff_command(first: str = typer.Argument(..., help="A run id (from `runs`)."),
                      second: str = typer.Argument(..., help="Another run id.")):
    """The parameters, data, estimate and score in which two runs differ."""
    print(runs_table.show_difference(config.paths(), first, second))


@app.command("blend")
def blend_command(
    context: typer.Context,
    run_ids: list[str] = typer.Argument(..., metavar="RUN RUN...", help="Runs to blend (ids from `runs`)."),
    weights: Optional[str] = typer.Option(None, help="One weight per run, in order, e.g. 2,1 (default: equal)."),
):
    """Average runs' test probabilities into a new submission and run, with an out-of-fold estimate when they
    share a split."""
    blended = blend.blend(config.paths(), context.obj, run_ids, weights)
    stage.run(report.define, context.obj, False, run_id=blended.id)
    if blended.source == "sample":  # submit refuses the sample's predictions
        context.obj.say("blend: of runs on the bundled sample, a trial that Kaggle cannot score")
    else:  # a plain `make submit` sends what the last chain produced, not the blend
        context.obj.say(config.how_to(f"blend: send it with `make submit RUN={blended.id}` (`python -m pipeline"
                                      f" submit --run {blended.id}`)",
                                      f"blend: send it with `digit-recognizer submit --run {blended.id}`"))


@app.command("submit")
def submit_command(
    context: typer.Context,
    file: Optional[Path] = typer.Option(None, "--file", help="Submission CSV (default: the one the last predict wrote,"
                                       " or restored)."),
    run: Optional[str] = typer.Option(None, "--run", help="Submit this run's predictions."),
    message: Optional[str] = typer.Option(None, help="Submission message (default: names the run)."),
    competition: str = COMPETITION,
    force: bool = typer.Option(False, "--force", help="Send even if this exact file was sent before."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for Kaggle's score and record it with the run."),
    timeout: float = typer.Option(scores.DEFAULT_TIMEOUT_S, "--timeout", help="Seconds to wait for the score at"
                                  " most; a submission still pending then is scored later (`submissions`)."),
):
    """Check a submission, send it to Kaggle with the official client, and wait for its score."""
    submit.send(config.paths(), context.obj, file, run, message, competition, force, wait, timeout)


@app.command("submissions")
def submissions_command(context: typer.Context, competition: str = COMPETITION):
    """The competition's submissions with their scores, matched to the runs sent from here; records new scores."""
    print(scores.show_submissions(config.paths(), competition, footer=not context.obj.quiet))


@app.command("clean")
def clean_command(context: typer.Context, cache_only: bool = typer.Option(
        False, "--cache", help="Only the run cache's store (data/.cache/store); current outputs stay.")):
    """Remove the folders the pipeline writes under data/ (raw, prepared, split, models, reports, bench, tensorboard,
    .cache: whole); the sent log, submissions/ and your files beside them stay. Refused while a command runs there."""
    quiet = ["--quiet"] if context.obj.quiet else []
    raise typer.Exit(clean.main([str(config.paths().data), *(["--cache"] if cache_only else []), *quiet]))


@app.command("bench")
@training_knobs()
def bench_command(
    context: typer.Context,
    source: Optional[str] = typer.Option(None, help="Data to run on: sample, or a PATH to a competition zip or folder"
                                         " (default: the zip `download --source kaggle` cached in data/raw/,"
                                         " else sample)."),
    presets: str = typer.Option("baseline,default", help="Comma-separated presets to compare."),
    knobs: dict = None,
):
    """Run presets side by side from nothing to a submission; print and save one table. A training option given
    changes every preset's (--epochs 3: a quick look)."""
    refused, names = {}, bench.bench_presets(presets)  # every preset's options, before the first runs for minutes
    for preset in names:
        try:
            values = settings.resolve_preset(preset, **knobs)
            chain.check_models_before_the_split(values, settings.training_config(values))  # --alternate on one model
        except PipelineError as error:
            refused[preset] = str(error)
    if refused:
        preset, message = next(iter(refused.items()))
        if len(refused) == len(names):  # a bad value: the same for every preset
            raise PipelineError(message)
        # an option that some presets cannot take (--dropout and the default list's baseline, an mlp): name them
        raise PipelineError(f"preset {preset}: {message}; or leave {', '.join(refused)} out of"
                            f" {config.how_to('PRESETS=', '--presets ')}")
    bench.run_bench(context.obj, source, presets, settings.option_words(knobs))


@app.command("tune")
@training_knobs(for_tune=True)
def tune_command(
    context: typer.Context, source: str = SOURCE, competition: str = COMPETITION, preset: PresetName = PRESET,
    trials: int = typer.Option(8, help="Settings to try; the first is the preset's own, with the options given."),
    workers: Optional[int] = TUNE_WORKERS, ray_address: Optional[str] = TUNE_RAY_ADDRESS, device: DeviceName = DEVICE,
    search_seed: int = typer.Option(0, "--search-seed",
                                    help="Seed of the settings drawn (the same seed, the same trials)."),
    val_fraction: Optional[float] = VAL_FRACTION, folds: Optional[int] = FOLDS, knobs: dict = None,
    force: bool = FORCE,
):
    """Search learning rate, epochs, augmentation, dropout and width on Ray around the preset's recipe (changed by
    the options given); each trial a run; print the best options."""
    extras.require("ray", "tune")
    check_split_options(preset, val_fraction, folds)
    # The trials turn off the model on all rows and TTA: those options are not tune's.
    given = {name: value for name, value in {**knobs, "val_fraction": val_fraction, "folds": folds}.items()
             if value is not None}
    values = settings.resolve_preset(preset, **given)
    tune.check_search(trials, search_seed)  # these and the training options before the data stages run
    trial = replace(settings.training_config(values), final_model=False)
    if trial.alternate != "none" and values["folds"] == 1 and trial.members == 1:  # plan's advice is all's
        raise PipelineError(f"--alternate {trial.alternate}: tune's trials each train one model on a holdout split (no"
                            f" model on all rows), so none would be a {trial.alternate}; add --folds 2 or more or"
                            " --members 2, or --alternate none")
    chain.check_models_before_the_split(values, trial)
    engine = engine_settings("ray", workers, ray_address, device)
    console = context.obj
    with cache.exclusive_lock():  # the split stays as the trials read it
        chain.run_data_stages(console, source, competition, values, force)
        results = tune.search(config.paths(), console, preset, values, trials, search_seed, engine, given)
    print(tune.format_results(results))
    for line in tune.summary_lines(results, preset, given, _tuned_on()):
        console.say(line)


def _tuned_on() -> tuple[str, str]:
    """The data's options for tune's reproduce line: the sample named where credentials would make `all` download
    the competition's files instead (stage.download_options names only other sources)."""
    named = stage.download_options()
    sample = ((cache.load_record("download") or {}).get("extra") or {}).get("source") == "sample"
    return (" --source sample", " SOURCE=sample") if named == ("", "") and sample and chain.credentials_set_up() \
        else named


@app.command("all")
@training_knobs()
def all_command(
    context: typer.Context, source: str = SOURCE, competition: str = COMPETITION,
    val_fraction: Optional[float] = VAL_FRACTION, folds: Optional[int] = FOLDS, preset: PresetName = PRESET,
    knobs: dict = None, final_weight: Optional[float] = FINAL_WEIGHT, tensorboard: bool = TENSORBOARD,
    engine: EngineName = ENGINE, workers: Optional[int] = WORKERS, ray_address: Optional[str] = RAY_ADDRESS,
    device: DeviceName = DEVICE,
    report: bool = typer.Option(True, "--report/--no-report", help="Also write the run's report."),
    force: bool = FORCE,
):
    """download -> prepare -> split -> train -> predict (-> report), each stage cached."""
    check_split_options(preset, val_fraction, folds)
    if tensorboard:
        extras.require("tensorboard", "--tensorboard")
    chain.run_all(context.obj, source, competition, preset,
                  {**knobs, "val_fraction": val_fraction, "folds": folds, "final_weight": final_weight}, report,
                  force, tensorboard, engine_settings(engine, workers, ray_address, device))


def main() -> None:
    """Entry point: a PipelineError is one line on stderr and exit status 1, never a traceback."""
    run_app(app)
