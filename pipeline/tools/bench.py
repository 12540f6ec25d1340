"""The benchmark: presets side by side in one run, each from nothing to its submission file.

Each preset runs `python -m pipeline all` in a fresh folder of its own, as a child process, so
its wall time is the user's wall time and its peak memory (the child's maximum resident set,
from wait4) is not mixed with the others'. Prediction speed is then measured on the test images
with the trained model. Timings on a shared machine are noisy: compare the ratios in one run.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core import config, estimate, runs
from pipeline.core.cache import exclusive_lock, relative_name, write_json
from pipeline.core.console import format_table, import_tensorflow_quietly
from pipeline.core.errors import PipelineError
from pipeline.core.estimate import short_kind
from pipeline.training.prediction import predict_probabilities

COLUMNS = (
    ("preset", "preset", "{}"),
    ("model", "architecture", "{}"),
    ("models", "models_trained", "{}"),
    ("epochs", "epochs_run", "{}"),
    ("units", "work_units", "{:.3g}"),  # 42,000 images through an epoch of the default CNN (run.json's work)
    ("wall s", "wall_s", "{:.0f}"),
    ("train s", "train_s", "{:.0f}"),
    ("train img/s", "train_images_per_s", "{:.0f}"),
    ("predict img/s", "predict_images_per_s", "{:.0f}"),
    ("estimate", "estimate_accuracy", "{:.4f}"),
    ("95 % interval", "estimate_interval", "{}"),
    ("kind", "estimate_kind", "{}"),
    ("peak MB", "peak_rss_mb", "{:.0f}"),
)


def default_source(paths: config.Paths) -> str:
    """The competition zip that `download --source kaggle` cached in data/raw/, else the bundled sample."""
    cached = paths.raw / f"{config.COMPETITION}.zip"
    return str(cached) if cached.is_file() else "sample"


def run_preset(preset: str, source: str, work_dir: Path, extra_options: list[str]) -> dict:
    """Run the whole pipeline for one preset in work_dir; return its figures."""
    work_dir.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "PIPELINE_ROOT": str(work_dir)}
    command = [sys.executable, "-m", "pipeline", "--quiet", "all", "--source", source, "--preset", preset,
               "--no-report", *extra_options]
    started = time.perf_counter()
    with open(work_dir / "log.txt", "w") as log:
        # From the folder that holds this package, `python -m pipeline` finds it, installed or not.
        process = subprocess.Popen(command, cwd=config.PACKAGE_DIR.parent, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        last_line = (work_dir / "log.txt").read_text().strip().splitlines()[-1:] or ["no output"]
        raise PipelineError(f"bench: preset {preset} failed: {last_line[0].removeprefix('error: ')}"
                            f" (log: {work_dir / 'log.txt'})")
    paths = config.Paths(work_dir)
    train_record = json.loads(paths.record("train").read_text())
    run = runs.read_run(paths, train_record["extra"]["run_id"])
    histories = json.loads(paths.history_json(run.id).read_text())
    epochs_run = sum(len(history["loss"]) for history in histories)
    images_trained = sum(part.images_an_epoch * len(history["loss"]) for part, history in zip(run.parts, histories))
    train_seconds = run.durations_s["train"]
    estimate = run.estimate
    return {
        "preset": preset,
        "architecture": train_record["key"]["params"]["architecture"],
        "models_trained": len(histories),
        "epochs_run": epochs_run,
        "work_units": run.work["units"],
        "wall_s": wall,
        "train_s": train_seconds,
        "train_images_per_s": images_trained / train_seconds,
        "estimate": estimate.to_json(),
        "estimate_accuracy": estimate.accuracy,
        "estimate_interval": f"{estimate.low:.4f}-{estimate.high:.4f}",
        "estimate_kind": short_kind(estimate),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports kilobytes
        "models": [str(paths.root / name) for name in run.models],  # run.json's are relative to its root
        "test_images": str(paths.test_images),
    }


def measure_prediction(models: list, test_images_path: str, repeats: int = 3) -> float:
    """Median images per second of predicting every test image (TTA off), after a warm-up."""
    import numpy as np

    images = np.load(test_images_path)
    predict_probabilities(models, images[:1024], verbose=0)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_probabilities(models, images, verbose=0)
        rates.append(len(images) / (time.perf_counter() - started))
    return float(np.median(rates))


def format_bench_table(rows: list[dict]) -> str:
    return format_table([title for title, _, _ in COLUMNS],
                        [[template.format(row[key]) for _, key, template in COLUMNS] for row in rows], align_right=True)


def bench_presets(text: str) -> list[str]:
    """'baseline,default' -> the presets to run, every name checked before the first one runs (they take minutes)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in config.PRESETS]
    if unknown or not names or len(set(names)) != len(names):
        problem = (f"unknown preset {unknown[0]!r}" if unknown else "no preset" if not names
                   else "a preset named twice")
        raise PipelineError(f"--presets {text!r}: {problem} (expected names among {', '.join(config.PRESETS)},"
                            " separated by commas, each once)")
    return names


DOWNLOAD_FROM_KAGGLE = config.how_to("`make download SOURCE=kaggle`", "`digit-recognizer download --source kaggle`")


def run_bench(console, source: str | None, presets: str, options: list[str]) -> None:
    """Run presets side by side from nothing to a submission; print and save one table. options: the training
    options given (--epochs 1 ...), passed to every preset's `all`."""
    names = bench_presets(presets)
    paths = config.paths()
    if source is not None and not source.strip():
        raise PipelineError(f"--source {source!r}: expected sample, or a PATH to a competition zip or folder")
    if source in ("kaggle", "auto"):  # each preset's child would download into a root of its own
        raise PipelineError(f"--source {source}: bench runs on data at hand, sample or a PATH to a competition zip or"
                            f" folder; after {DOWNLOAD_FROM_KAGGLE} its cached zip is the default")
    source = source or default_source(paths)
    if source != "sample":  # a path, as typed here: each preset runs from the package's folder
        source = str(Path(source).expanduser().absolute())
        if not Path(source).exists():  # before any preset runs, and leaves a folder of its own
            raise PipelineError(f"--source {source}: no such file or folder (expected sample, or a PATH to a"
                                " competition zip or folder)")
    if source == "sample":
        console.say(f"bench: on the bundled sample; for the full-size data run {DOWNLOAD_FROM_KAGGLE} first (its zip"
                    " is cached in data/raw/) or give"
                    f" {config.how_to('SOURCE=path/to/digit-recognizer.zip', '--source path/to/digit-recognizer.zip')}")
    # The checkout's lock, for all the presets' runs (each under a root of its own): `make clean` refuses meanwhile.
    with exclusive_lock():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        rows = []
        for preset in names:
            console.say(f"bench: {preset} on {source}...")
            row = run_preset(preset, source, paths.data / "bench" / stamp / preset, options)
            import_tensorflow_quietly()
            from pipeline.training.model import load_models  # Keras at its top: only once a preset has run

            row["predict_images_per_s"] = measure_prediction(load_models([Path(p) for p in row["models"]]),
                                                             row["test_images"])
            rows.append(row)
            console.say(f"bench: {preset}: estimated accuracy {estimate.describe(row['estimate'])},"
                        f" {row['wall_s']:.0f} s in all")
    result_path = paths.reports / f"bench-{stamp}.json"
    # Paths relative to the project, as every record's: the figures stay true in a moved checkout.
    kept = [{**row, "models": [relative_name(Path(path)) for path in row["models"]],
             "test_images": relative_name(Path(row["test_images"]))} for row in rows]
    write_json(result_path, {"source": source, "date": stamp, "rows": kept})
    print(format_bench_table(rows))
    console.say(f"bench: figures saved to {result_path}; the folders under {paths.data / 'bench' / stamp}"
                " can be deleted")
