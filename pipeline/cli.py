"""The typer shell: finds files, checks the stage cache, prints, and turns errors into one line.

Each stage command skips itself when the cache says nothing changed (pipeline.cache). Heavy
libraries (TensorFlow, pandas, the kaggle client) are imported inside the stages that need them,
so a run where everything is up to date takes about a second.
"""

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from pipeline import cache, config
from pipeline.errors import PipelineError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Kaggle digit-recognizer pipeline: download -> prepare -> split -> train -> predict -> submit.",
)

_quiet = False


def keras_verbosity() -> int:
    """Keras progress bars on a terminal, one line per epoch in a log, nothing with --quiet."""
    if _quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def say(message: str) -> None:
    if not _quiet:
        typer.echo(message)


@app.callback()
def main_options(quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")):
    global _quiet
    _quiet = quiet


def _run_stage(stage: cache.Stage, force: bool, work, describe) -> dict:
    """Skip the stage if its record still matches, else run `work` and record what it wrote.

    work() -> (outputs, extra); describe(record) -> the one line saying what the stage produced.
    """
    with cache.exclusive_lock():
        record = None if force else cache.up_to_date(stage)
        if record is not None:
            say(f"{stage.name}: up to date, {describe(record)}")
            return record
        started = time.perf_counter()
        outputs, extra = work()
        extra["seconds"] = round(time.perf_counter() - started, 2)
        record = cache.save_record(stage, outputs, extra)
        say(f"{stage.name}: {describe(record)} in {_seconds(extra['seconds'])}")
        return record


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{int(value) // 60} min {int(value) % 60:02d} s"


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (oneDNN, CUDA probing) kept off the terminal.

    That chatter is written straight to file descriptor 2 before any Python logging exists, so it
    is caught there; if the import fails, what was caught is shown after all.
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved_stderr, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


def _require_record(stage_name: str, hint: str) -> dict:
    record = cache.load_record(stage_name)
    if record is None or not cache.outputs_intact(record):
        raise PipelineError(f"no {stage_name} output yet, or it changed since: run `{hint}` first")
    return record


# ----------------------------------------------------------------------------------------- download

SOURCE_HELP = "auto (kaggle when credentials are found, else sample), kaggle, sample, or a PATH to a competition zip or folder."


def run_download(source: str, competition: str, force: bool) -> dict:
    from pipeline import download

    credentials = None
    if source in ("auto", "kaggle"):
        from pipeline import kaggle_api

        credentials = kaggle_api.find_credentials()
    kind, path = download.resolve_source(source, credentials)
    if source == "auto":
        say(f"download: Kaggle credentials found ({credentials}); using the competition {competition}"
            if credentials else
            "download: no Kaggle credentials found, using the bundled sample (see README, 'Kaggle credentials')")
    if kind == "kaggle":
        for warning in kaggle_api.credential_warnings():
            typer.echo(f"warning: {warning}", err=True)
        params, inputs = {"source": "kaggle", "competition": competition}, []
    else:
        params = {"source": kind, "path": str(path)}
        inputs = [path] if kind != "folder" else [path / name for name in download.REQUIRED_FILES]

    def work():
        config.RAW_DIR.mkdir(parents=True, exist_ok=True)
        if kind == "kaggle":
            archive = kaggle_api.download_competition(competition, config.RAW_DIR, force=force)
            written = download.extract_competition_files(archive, config.RAW_DIR)
        elif kind == "folder":
            written = download.copy_competition_folder(path, config.RAW_DIR)
        else:
            written = download.extract_competition_files(path, config.RAW_DIR)
        download.remove_stale_optional_files(config.RAW_DIR, written)
        return written, {"source": kind if kind != "kaggle" else f"kaggle:{competition}",
                         "source_path": str(path) if path else None}

    stage = cache.Stage("download", params, inputs, cache.code_digest("download"))
    return _run_stage(stage, force, work, lambda record: f"{', '.join(Path(p).name for p in record['outputs'])} in {config.RAW_DIR}")


# ----------------------------------------------------------------------------------------- prepare

PREPARED = {
    "train_images": config.PREPARED_DIR / "train_images.npy",
    "train_labels": config.PREPARED_DIR / "train_labels.npy",
    "test_images": config.PREPARED_DIR / "test_images.npy",
}


def _save_array(path: Path, array) -> Path:
    import numpy as np

    with cache.atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            np.save(stream, array)
    return path


def run_prepare(force: bool) -> dict:
    raw_train, raw_test = config.RAW_DIR / "train.csv", config.RAW_DIR / "test.csv"
    for path in (raw_train, raw_test):
        if not path.is_file():
            raise PipelineError(f"{path}: file not found (run `python -m pipeline download` first)")

    def work():
        from pipeline import prepare

        train_pixels, train_labels = prepare.read_digits_csv(raw_train, with_labels=True)
        test_pixels, _ = prepare.read_digits_csv(raw_test, with_labels=False)
        outputs = [
            _save_array(PREPARED["train_images"], prepare.to_images(train_pixels)),
            _save_array(PREPARED["train_labels"], train_labels),
            _save_array(PREPARED["test_images"], prepare.to_images(test_pixels)),
        ]
        return outputs, {"train_rows": len(train_labels), "test_rows": len(test_pixels),
                         "class_counts": prepare.class_counts(train_labels)}

    def describe(record):
        extra = record["extra"]
        counts = " ".join(f"{digit}:{count}" for digit, count in enumerate(extra["class_counts"]))
        return (f"{extra['train_rows']} train and {extra['test_rows']} test images (28x28, scaled to [0, 1]);"
                f" class counts {counts}")

    stage = cache.Stage("prepare", {}, [raw_train, raw_test], cache.code_digest("prepare"))
    return _run_stage(stage, force, work, describe)


# ----------------------------------------------------------------------------------------- split

SPLIT_FILE = config.SPLIT_DIR / "split.npz"


def run_split(val_fraction: float, seed: int, force: bool) -> dict:
    _require_record("prepare", "python -m pipeline prepare")

    def work():
        import numpy as np

        from pipeline.split import stratified_split

        labels = np.load(PREPARED["train_labels"])
        train_indices, val_indices = stratified_split(labels, val_fraction, seed)
        with cache.atomic_path(SPLIT_FILE) as temporary:
            with open(temporary, "wb") as stream:
                np.savez(stream, train=train_indices, validation=val_indices)
        return [SPLIT_FILE], {"train_size": len(train_indices), "val_size": len(val_indices)}

    stage = cache.Stage("split", {"val_fraction": val_fraction, "seed": seed},
                        [PREPARED["train_labels"]], cache.code_digest("split"))
    return _run_stage(stage, force, work, lambda r: (
        f"{r['extra']['train_size']} train / {r['extra']['val_size']} validation images, stratified, seed {seed}"))


# ----------------------------------------------------------------------------------------- train

def resolve_training_config(preset: str, **overrides):
    from pipeline.train import TrainingConfig

    if preset not in config.PRESETS:
        raise PipelineError(f"--preset {preset}: expected one of {', '.join(config.PRESETS)}")
    values = {name: value for name, value in config.PRESETS[preset].items() if name != "tta"}
    values.update({name: value for name, value in overrides.items() if value is not None})
    training = TrainingConfig(**values)
    training.check()
    return training


def _load_split_arrays():
    import numpy as np

    images = np.load(PREPARED["train_images"], mmap_mode="r")
    labels = np.load(PREPARED["train_labels"])
    split = np.load(SPLIT_FILE)
    train_indices, val_indices = split["train"], split["validation"]
    return images[train_indices], labels[train_indices], images[val_indices], labels[val_indices]


def _upstream_summary() -> dict:
    records = {name: cache.load_record(name) for name in ("download", "prepare", "split")}
    return {
        "source": (records["download"] or {}).get("extra", {}).get("source"),
        "durations_s": {name: record["extra"].get("seconds") for name, record in records.items() if record},
    }


def run_train(training, preset: str, force: bool, verbose: int = 1) -> dict:
    if training.architecture not in config.ARCHITECTURES:
        raise PipelineError(f"--model {training.architecture}: expected one of {', '.join(config.ARCHITECTURES)}")
    _require_record("split", "python -m pipeline split")
    inputs = [PREPARED["train_images"], PREPARED["train_labels"], SPLIT_FILE]
    stage = cache.Stage("train", training.as_dict(), inputs, cache.code_digest("train", "model", "augment"))

    def work():
        import hashlib
        import json

        import_tensorflow_quietly()
        from pipeline import train
        from pipeline.runs import write_run

        started = time.perf_counter()
        train_images, train_labels, val_images, val_labels = _load_split_arrays()
        key_hash = hashlib.sha256(json.dumps(stage.key(), sort_keys=True).encode()).hexdigest()[:16]
        checkpoints = config.MODELS_DIR / ".checkpoints" / key_hash
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{training.architecture}"
        run_dir = config.MODELS_DIR / run_id
        strategy = train.configure_tensorflow(training)
        say(f"train: {training.members} x {training.architecture}, {training.epochs} epochs, batch "
            f"{training.batch_size}, {training.precision}, on {len(train_images)} images"
            f" ({strategy.num_replicas_in_sync} device{'s' * (strategy.num_replicas_in_sync > 1)})")
        models, member_states, outputs = [], [], []
        for member in range(training.members):
            if training.members > 1:
                say(f"train: ensemble member {member + 1} of {training.members}, seed {training.seed + member}")
            model, state = train.fit_one_model(
                train_images, train_labels, val_images, val_labels, training, training.seed + member,
                checkpoints / f"member-{member}", strategy, verbose=verbose, log=say,
                epochs_after=(training.members - member - 1) * training.epochs)
            path = run_dir / f"member-{member}.keras"
            train.save_model(model, path)
            models.append(model)
            member_states.append(state)
            outputs.append(path)
        val_accuracy = train.ensemble_accuracy(models, val_images, val_labels)
        val_accuracy_tta = train.ensemble_accuracy(models, val_images, val_labels, tta=True)
        history_path = run_dir / "history.json"
        cache.write_json(history_path, [state["history"] for state in member_states])
        outputs.append(history_path)
        upstream = _upstream_summary()
        write_run(run_dir, {
            "id": run_id, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "source": upstream["source"], "preset": preset,
            "params": {**training.as_dict(), **cache.load_record("split")["key"]["params"]},
            "val_accuracy": val_accuracy, "val_accuracy_tta": val_accuracy_tta,
            "member_val_accuracy": [state["best_val_accuracy"] for state in member_states],
            "best_epochs": [state["best_epoch"] for state in member_states],
            "durations_s": {**upstream["durations_s"], "train": round(time.perf_counter() - started, 1)},
            "models": [str(path) for path in outputs[:-1]],
        })
        shutil.rmtree(checkpoints, ignore_errors=True)
        return outputs, {"run_id": run_id, "val_accuracy": val_accuracy, "val_accuracy_tta": val_accuracy_tta,
                         "train_size": len(train_images),
                         "preset": preset}

    def describe(record):
        extra = record["extra"]
        return (f"run {extra['run_id']}, validation accuracy {extra['val_accuracy']:.4f}"
                f" ({extra.get('val_accuracy_tta', 0):.4f} with test-time augmentation),"
                f" models in {config.MODELS_DIR / extra['run_id']}")

    return _run_stage(stage, force, work, describe)


# ----------------------------------------------------------------------------------------- predict

def _model_paths(train_record: dict) -> list[Path]:
    return [path for path in cache.output_paths(train_record) if path.suffix == ".keras"]


def load_models(paths: list[Path]) -> list:
    """Load with Keras's safe mode: a model file that would run code when loaded is refused."""
    import_tensorflow_quietly()
    import keras

    import pipeline.model  # noqa: F401  registers the learning-rate schedule the saved optimizer names

    models = []
    for path in paths:
        try:
            models.append(keras.models.load_model(path, safe_mode=True))
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PipelineError(f"{path}: cannot load this model safely ({reason[:200]})") from None
    return models


def run_predict(tta: Optional[bool], force: bool, verbose: int = 1) -> dict:
    """tta None: as the preset the model was trained with says."""
    train_record = _require_record("train", "python -m pipeline train")
    run_id = train_record["extra"]["run_id"]
    if tta is None:
        tta = config.PRESETS.get(train_record["extra"].get("preset"), {}).get("tta", False)
    sample_submission = config.RAW_DIR / "sample_submission.csv"
    inputs = [*_model_paths(train_record), PREPARED["test_images"]]
    if sample_submission.exists():
        inputs.append(sample_submission)
    stage = cache.Stage("predict", {"tta": tta, "run_id": run_id}, inputs, cache.code_digest("predict"))

    def work():
        import numpy as np

        from pipeline import predict
        from pipeline.runs import update_run

        started = time.perf_counter()
        images = np.load(PREPARED["test_images"])
        say(f"predict: {len(images)} test images with run {run_id}{' and test-time augmentation' if tta else ''}")
        probabilities = predict.predict_probabilities(load_models(_model_paths(train_record)), images,
                                                      tta=tta, verbose=verbose)
        labels = probabilities.argmax(axis=1)
        sample_ids = predict.read_sample_submission_ids(sample_submission)
        expected_rows = None
        if sample_ids is not None:
            predict.check_submission(sample_ids, np.zeros_like(sample_ids), len(images), source=str(sample_submission))
            expected_rows = len(sample_ids)
        predict.check_submission(np.arange(1, len(labels) + 1), labels, expected_rows)
        path = predict.unused_submission_path(config.SUBMISSIONS_DIR, run_id)
        with cache.atomic_path(path) as temporary:
            temporary.write_text(predict.submission_text(labels))
        update_run(run_id, submission=str(path), durations_s={"predict": round(time.perf_counter() - started, 1)})
        return [path], {"submission": str(path), "rows": len(labels),
                        "label_counts": np.bincount(labels, minlength=10).tolist()}

    record = _run_stage(stage, force, work, lambda r: f"{r['extra']['rows']} predictions in {r['extra']['submission']}")
    return record


# ----------------------------------------------------------------------------------------- report

def run_report(run_id: Optional[str], force: bool) -> dict:
    train_record = _require_record("train", "python -m pipeline train")
    if run_id not in (None, train_record["extra"]["run_id"]):
        raise PipelineError(f"--run {run_id}: only the latest trained run ({train_record['extra']['run_id']}) has its data at hand; retrain it to report on it")
    run_id = train_record["extra"]["run_id"]
    out_dir = config.REPORTS_DIR / run_id
    inputs = [*cache.output_paths(train_record), PREPARED["train_images"], PREPARED["train_labels"], SPLIT_FILE]
    stage = cache.Stage("report", {"run_id": run_id}, inputs, cache.code_digest("report"))

    def work():
        import json

        from pipeline import predict, report
        from pipeline.runs import read_run, update_run

        train_images, train_labels, val_images, val_labels = _load_split_arrays()
        models = load_models(_model_paths(train_record))
        probabilities = predict.predict_probabilities(models, val_images, verbose=0)
        history = json.loads((config.MODELS_DIR / run_id / "history.json").read_text())[0]
        run = read_run(run_id)
        index = report.write_report(out_dir, run=run, train_images=train_images, train_labels=train_labels,
                                    val_images=val_images, val_labels=val_labels,
                                    val_probabilities=probabilities, history=history)
        update_run(run_id, report=str(index))
        return [out_dir], {"index": str(index)}

    return _run_stage(stage, force, work, lambda r: f"open {r['extra']['index']} in a browser")


# ----------------------------------------------------------------------------------------- submit

def run_submit(file: Optional[Path], run_id: Optional[str], message: Optional[str], competition: str,
               force: bool) -> None:
    from pipeline import kaggle_api, runs, submit

    if file is None and run_id is not None:
        submission = runs.read_run(run_id).get("submission")
        if not submission:
            raise PipelineError(f"--run {run_id}: this run has no submission yet (run `python -m pipeline predict`)")
        file = Path(submission)
    file = Path(file) if file else submit.newest_submission(config.SUBMISSIONS_DIR)
    rows = submit.validate_submission_file(file, competition)
    digest = cache.file_digest(file)
    run = runs.run_for_submission(file)
    message = message or runs.submission_message(run, file)
    with cache.exclusive_lock():  # two submits at once must not both send the same file
        earlier = runs.sent_submissions().get(digest)
        if earlier and not force:
            raise PipelineError(f"{file}: this file was already sent on {earlier['date']} (as {earlier['file']}); "
                                "Kaggle allows few submissions a day, so pass --force to send it again")
        say(f"submit: sending {file} ({rows} rows) to {competition}: {message!r}")
        answer = kaggle_api.submit_file(competition, file, message)
        runs.record_sent_submission(digest, file, message, answer)
    say(f"submit: Kaggle answered: {answer}")


# ----------------------------------------------------------------------------------------- commands

FORCE = typer.Option(False, "--force", help="Run even if the cache says the outputs are up to date.")
SEED_HELP = "Random seed (the split, the weights' initialisation, shuffling and augmentation)."


def _training_options(preset, model, epochs, batch_size, learning_rate, seed, members, precision, deterministic,
                      strategy):
    return resolve_training_config(preset, architecture=model, epochs=epochs, batch_size=batch_size,
                                   learning_rate=learning_rate, seed=seed,
                                   members=members, precision=precision, deterministic=deterministic or None,
                                   strategy=strategy)


@app.command("download")
def download_command(
    source: str = typer.Option("auto", help=SOURCE_HELP),
    competition: str = typer.Option(config.COMPETITION, help="Kaggle competition name."),
    force: bool = FORCE,
):
    """Fetch train.csv and test.csv into data/raw/."""
    run_download(source, competition, force)


@app.command("prepare")
def prepare_command(force: bool = FORCE):
    """Validate the CSVs; write (N, 28, 28, 1) arrays scaled to [0, 1] to data/prepared/."""
    run_prepare(force)


@app.command("split")
def split_command(
    val_fraction: float = typer.Option(0.1, help="Share of the train images kept for validation."),
    seed: int = typer.Option(42, help=SEED_HELP),
    force: bool = FORCE,
):
    """Stratified, seeded train / validation split of the prepared train images."""
    run_split(val_fraction, seed, force)


PRESET_HELP = "quick (seconds, for the sample and tests), default (the full-size recipe), best (ensemble with test-time augmentation), baseline (the MLP)."


@app.command("train")
def train_command(
    preset: str = typer.Option("default", help=PRESET_HELP),
    model: Optional[str] = typer.Option(None, help="Architecture: cnn, small, deotte or mlp (default: the preset's)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: the preset's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the preset's)."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate of the schedule (default: the preset's)."),
    seed: int = typer.Option(42, help=SEED_HELP),
    members: Optional[int] = typer.Option(None, help="Models in the ensemble (default: the preset's)."),
    precision: Optional[str] = typer.Option(None, help="float32 or mixed_bfloat16 (default: the preset's)."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic TensorFlow ops, for exact repeats (slower)."),
    strategy: Optional[str] = typer.Option(None, help="default, or mirrored: data-parallel over every local GPU."),
    force: bool = FORCE,
):
    """Train the model on the split; checkpoints every epoch and resumes where it stopped."""
    run_train(_training_options(preset, model, epochs, batch_size, learning_rate, seed, members, precision,
                                 deterministic, strategy),
              preset, force, verbose=keras_verbosity())


@app.command("predict")
def predict_command(
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (default: as the trained preset says)."),
    force: bool = FORCE,
):
    """Write submissions/<run>.csv for the latest trained model (never overwrites one)."""
    run_predict(tta, force, verbose=keras_verbosity())


@app.command("report")
def report_command(
    run: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest trained run)."),
    force: bool = FORCE,
):
    """Pictures and one HTML page for the trained run, in data/reports/<run>/."""
    run_report(run, force)


@app.command("runs")
def runs_command():
    """Every training run, best validation accuracy first."""
    from pipeline.runs import format_runs_table, list_runs

    typer.echo(format_runs_table(list_runs()))


@app.command("submit")
def submit_command(
    file: Optional[Path] = typer.Option(None, "--file", help="Submission CSV (default: the newest in submissions/)."),
    run: Optional[str] = typer.Option(None, "--run", help="Submit this run's predictions."),
    message: Optional[str] = typer.Option(None, help="Submission message (default: names the run)."),
    competition: str = typer.Option(config.COMPETITION, help="Kaggle competition name."),
    force: bool = typer.Option(False, "--force", help="Send even if this exact file was sent before."),
):
    """Check a submission and send it to Kaggle with the official client."""
    run_submit(file, run, message, competition, force)


@app.command("bench")
def bench_command(
    source: Optional[str] = typer.Option(None, help="Data to run on (default: ../shared/kaggle/digit-recognizer.zip if present, else sample)."),
    presets: str = typer.Option("baseline,default", help="Comma-separated presets to compare."),
    epochs: Optional[int] = typer.Option(None, help="Override every preset's epochs (for a quick look)."),
):
    """Run presets side by side from nothing to a submission; print and save one table."""

    from pipeline import bench

    source = source or bench.default_source()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for preset in [name.strip() for name in presets.split(",") if name.strip()]:
        if preset not in config.PRESETS:
            raise PipelineError(f"--presets: unknown preset {preset!r} (expected {', '.join(config.PRESETS)})")
        say(f"bench: {preset} on {source}...")
        row = bench.run_preset(preset, source, config.DATA_DIR / "bench" / stamp / preset,
                               ["--epochs", str(epochs)] if epochs else [])
        row["predict_images_per_s"] = bench.measure_prediction(load_models([Path(p) for p in row["models"]]),
                                                               row["test_images"])
        rows.append(row)
        say(f"bench: {preset}: validation accuracy {row['val_accuracy']:.4f}, {row['wall_s']:.0f} s in all")
    result_path = config.REPORTS_DIR / f"bench-{stamp}.json"
    cache.write_json(result_path, {"source": source, "date": stamp, "rows": rows})
    typer.echo(bench.format_table(rows))
    say(f"bench: figures saved to {result_path}; the folders under {config.DATA_DIR / 'bench' / stamp} can be deleted")


@app.command("all")
def all_command(
    source: str = typer.Option("auto", help=SOURCE_HELP),
    competition: str = typer.Option(config.COMPETITION, help="Kaggle competition name."),
    val_fraction: float = typer.Option(0.1, help="Share of the train images kept for validation."),
    seed: int = typer.Option(42, help=SEED_HELP),
    preset: str = typer.Option("default", help=PRESET_HELP),
    model: Optional[str] = typer.Option(None, help="Architecture: cnn, small, deotte or mlp."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: the preset's)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the preset's)."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate of the schedule (default: the preset's)."),
    members: Optional[int] = typer.Option(None, help="Models in the ensemble (default: the preset's)."),
    precision: Optional[str] = typer.Option(None, help="float32 or mixed_bfloat16."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Deterministic TensorFlow ops."),
    strategy: Optional[str] = typer.Option(None, help="default or mirrored."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (default: the preset's)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Also write the run's report."),
    force: bool = FORCE,
):
    """download -> prepare -> split -> train -> predict (-> report), each stage cached."""
    started = time.perf_counter()
    training = _training_options(preset, model, epochs, batch_size, learning_rate, seed, members, precision,
                                 deterministic, strategy)
    verbose = keras_verbosity()
    run_download(source, competition, force)
    run_prepare(force)
    run_split(val_fraction, seed, force)
    run_train(training, preset, force, verbose)
    predicted = run_predict(tta, force, verbose)
    if report:
        run_report(None, force)
    say(f"done in {_seconds(time.perf_counter() - started)}: submission {predicted['extra']['submission']}"
        " (send it with `make submit`)")


def main() -> None:
    """Entry point: a PipelineError is one line on stderr and exit status 1, never a traceback."""
    try:
        app()  # click itself reports usage errors (exit 2) and Ctrl-C ("Aborted!", exit 1)
    except PipelineError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
