"""The chain: download -> prepare -> split -> train -> predict (-> report), each stage through the runner
(`pipeline.core.stage.run`). The only module that knows the stages' order; `make all` and the CLI's `all`
and `tune` start here.
"""

import time

from pipeline.competition.credentials import find_credentials
from pipeline.core import cache, config, runs, sent_log
from pipeline.core.console import Console, format_duration
from pipeline.core.errors import PipelineError
from pipeline.core.records import describe_gap
from pipeline.core.stage import run
from pipeline.stages import download, predict, prepare, split, train
from pipeline.stages import report as report_stage
from pipeline.training import settings
from pipeline.training.plan import check_models, model_count


def run_data_stages(console: Console, source: str, competition: str, values: dict, force: bool) -> dict:
    """download -> prepare -> split (the lock held by the caller); the download record."""
    downloaded = run(download.define, console, force, source=source, competition=competition, force_download=force)
    run(prepare.define, console, force)
    run(split.define, console, force, val_fraction=values["val_fraction"], seed=values["seed"], folds=values["folds"])
    return downloaded


SUBMISSIONS = config.how_to("`make submissions`", "`digit-recognizer submissions`")


def _what_kaggle_said(run_id: str, submission) -> str:
    """The end of `all`'s last line: how to send the submission, or what came of sending it (or the same file)."""
    run = runs.read_run(config.paths(), run_id)
    status = run.leaderboard.status if run.leaderboard else None
    if status is None:  # unsent as this run's, but the same bytes sent before (made again after `make clean`)
        sent = sent_log.sent_submissions(config.paths(), strict=False)
        earlier = sent_log.sends_of(sent, cache.file_digest(submission))
        if earlier and earlier[-1].get("status") == sent_log.SENDING:
            when = earlier[-1].get("date", "?")
            return f"its send on {when} was cut short and may have arrived: {SUBMISSIONS} lists it"
        if earlier:
            sent = earlier[-1]
            score = f", scored {sent.get('public_score')} public" if sent.get("status") == "COMPLETE" else ""
            return (f"the same file was sent on {sent.get('date', '?')} as {sent.get('file', '?')}{score};"
                    f" {config.how_to('`make submit FORCE=1`', '`digit-recognizer submit --force`')} sends it again")
    if status == "COMPLETE":
        gap = describe_gap(run)
        return f"sent and scored {run.leaderboard.public_score} public{f', {gap}' if gap else ''}"
    if status == "PENDING":
        return f"sent, not scored yet: {SUBMISSIONS} shows the score"
    if status == "ERROR":
        return f"sent, but Kaggle could not score it: {SUBMISSIONS} says why"
    return f"send it with {config.how_to('`make submit`', '`digit-recognizer submit`')}"


def credentials_set_up() -> bool:
    """Whether Kaggle credentials are found, for advice only: a broken token file fails no finished run."""
    try:
        return bool(find_credentials())
    except PipelineError:
        return False


def warn_of_a_run_without_tensorboard_logs(console: Console, train_record: dict) -> None:
    """--tensorboard beside a training up to date or restored, trained without it: no logs, which it said nothing of
    (logging is not part of the stage's key, so it alone never trains a run again)."""
    if not (train_record["extra"].get("run") or {}).get("tensorboard"):
        again = config.how_to("FORCE=1", "--force")
        console.warn(f"--tensorboard: run {train_record['extra']['run_id']} was trained before without TensorBoard"
                     f" logs, and logging alone never trains it again: add {again} to train it with them")


def check_models_before_the_split(values: dict, training) -> None:
    """The run's models, known here with the folds (training.plan.plan_parts: folds x members, + the model on all
    rows): a seed too high for them, or --alternate on one model, is refused before split replaces the current
    split (train refused them only after)."""
    models = model_count(values["folds"], training.members, training.final_model)
    check_models(models, training.seed, training.alternate_network())


def run_all(console: Console, source: str, competition: str, preset: str, options: dict, report: bool,
            force: bool, tensorboard: bool = False, engine=None) -> dict:
    """download -> prepare -> split -> train -> predict (-> report), each stage cached; the predict record."""
    started = time.perf_counter()
    values = settings.resolve_preset(preset, **options)
    training = settings.training_config(values)
    check_models_before_the_split(values, training)
    if options.get("final_weight") is not None:  # a prediction option, checked before anything trains
        config.check_final_weight(options["final_weight"], training.final_model, training_too=True)
    # The lock is held from the first stage to the last (each stage takes it again, for free): another
    # chain in this checkout waits, and never changes a stage's inputs between two of this chain's stages.
    with cache.exclusive_lock():
        downloaded = run_data_stages(console, source, competition, values, force)
        train_record = run(train.define, console, force, training=training, preset=preset, tensorboard=tensorboard,
                           engine=engine)
        if tensorboard:
            warn_of_a_run_without_tensorboard_logs(console, train_record)
        predicted = run(predict.define, console, force, tta=training.tta, final_weight=options.get("final_weight"))
        if report:
            run(report_stage.define, console, force)
        submission = cache.absolute_path(predicted["extra"]["submission"])
        done = f"done in {format_duration(time.perf_counter() - started)}: submission {submission}"
        if downloaded["extra"].get("source") == "sample":  # Kaggle cannot score the sample's predictions
            rows = predicted["extra"]["rows"]
            trial = f"{done}, from the bundled sample ({rows} test rows, a trial run that Kaggle cannot score)"
            if source == "sample" and credentials_set_up():  # asked for: set-up advice would be no help
                console.say(f"{trial}; for the competition's data, run the same command without"
                            f" {config.how_to('SOURCE=sample', '--source sample')}: Kaggle credentials are set up")
            else:
                console.say(f"{trial}; for the competition's data, set up Kaggle credentials (README, 'Kaggle"
                            f" credentials') or pass {config.how_to('SOURCE=', '--source ')}path/to/"
                            f"digit-recognizer.zip, then run {config.how_to('`make all`', '`digit-recognizer all`')}"
                            " again")
        elif config.kaggle_cannot_score(downloaded["extra"].get("source"), predicted["extra"]["rows"]):
            rows, expected = predicted["extra"]["rows"], config.COMPETITION_TEST_ROWS[config.COMPETITION]
            console.say(f"{done} ({rows} test rows, a trial run that Kaggle cannot score: the competition has"
                        f" {expected:,})")
        else:
            console.say(f"{done} ({_what_kaggle_said(train_record['extra']['run_id'], submission)})")
    return predicted
