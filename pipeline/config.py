"""Paths and defaults in one place. Every path argument of the CLI defaults to one of these."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Where a run writes: the project itself, or PIPELINE_ROOT (the tests point it at a temporary folder).
ROOT = Path(os.environ.get("PIPELINE_ROOT", PROJECT_ROOT)).resolve()
DATA_DIR = ROOT / "data"
RAW_DIR = DATA_DIR / "raw"
PREPARED_DIR = DATA_DIR / "prepared"
SPLIT_DIR = DATA_DIR / "split"
MODELS_DIR = DATA_DIR / "models"
REPORTS_DIR = DATA_DIR / "reports"
CACHE_DIR = DATA_DIR / ".cache"
RUNS_FILE = DATA_DIR / "runs.jsonl"
SUBMISSIONS_DIR = ROOT / "submissions"

# Shipped with the code, so it is found relative to the package, not to ROOT.
SAMPLE_ARCHIVE = PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip"
SAMPLE_ANSWERS = PROJECT_ROOT / "data" / "sample" / "test_answers.csv"

COMPETITION = "digit-recognizer"
IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10
ARCHITECTURES = ("cnn", "small", "deotte", "mlp")  # built by pipeline.model

# Training presets: plain values, overridden by any option given on the command line.
PRESETS = {
    # Seconds on the bundled sample: for tests and a first look.
    "quick": dict(architecture="small", epochs=3, batch_size=64, members=1, precision="float32", tta=False),
    # The full-size recipe (README, "Accuracy and speed"): 99.6-99.7 % validation accuracy in 18 epochs.
    # No TTA: over five measured runs it moved a single model's accuracy by -2 to +2 images of 4,200.
    "default": dict(architecture="cnn", epochs=18, batch_size=64, learning_rate=2e-3, members=1,
                    precision="mixed_bfloat16", tta=False),
    # Five default models with their own seeds, averaged, with test-time augmentation.
    "best": dict(architecture="cnn", epochs=18, batch_size=64, learning_rate=2e-3, members=5,
                 precision="mixed_bfloat16", tta=True),
    # The seeds' MLP (Flatten, Dense 128, Dense 64, Dense 10): the baseline every comparison is made against.
    "baseline": dict(architecture="mlp", epochs=10, batch_size=64, learning_rate=1e-3, members=1,
                     precision="float32", augment=False, tta=False),
}
