"""Paths, constants and training presets, in one place.

`paths()` is read when a command runs, not when this module is imported, so a test (or a user)
can point PIPELINE_ROOT elsewhere at any time. `PRESETS` holds the training defaults: the CLI's
training options default to "the preset's value", and TrainingConfig has no defaults of its own. A few
settings that are not part of a recipe keep their defaults where they are used: the CLI's engine and
device, `Engine`'s workers, tune's trials and search seed, train's thresholds (pseudo-labels).
"""

import os
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from pipeline.core.errors import PipelineError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the pipeline package, this module being in core/
# A checkout (its Makefile beside the package) is run with `make`; an installed package (pip, pipx), by its command.
IN_CHECKOUT = (PACKAGE_DIR.parent / "Makefile").is_file()


def how_to(make: str, command: str) -> str:
    """Advice in the form the user runs: `make all` in a checkout (an editable install in one too: its Makefile is
    there), `digit-recognizer all` where the package is installed."""
    return make if IN_CHECKOUT else command


# The advice for runs whose digits data/prepared no longer holds.
PREPARE_AGAIN = how_to("make download prepare SOURCE=...", "digit-recognizer download --source ..., then prepare")


def _sample_folder() -> Path:
    """The bundled sample ships with the code: inside the installed package (pipeline/sample/ of a
    wheel), else data/sample/ of the checkout (run from it, or installed with `pip install -e .`)."""
    packaged = PACKAGE_DIR / "sample"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "data" / "sample"


SAMPLE_FOLDER = _sample_folder()
SAMPLE_ARCHIVE = SAMPLE_FOLDER / "digit-recognizer-sample.zip"
SAMPLE_ANSWERS = SAMPLE_FOLDER / "test_answers.csv"

COMPETITION = "digit-recognizer"
# Rows of the competition's test.csv: a file with any other count cannot be scored.
COMPETITION_TEST_ROWS = {"digit-recognizer": 28000}


def kaggle_cannot_score(source: str | None, rows: int) -> bool:
    """The user's own files (a zip or folder) with another number of test rows than the competition's: submit
    refuses their predictions."""
    return source in ("folder", "zip") and rows != COMPETITION_TEST_ROWS[COMPETITION]


IMAGE_SIZE = 28
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
NUM_CLASSES = 10
ARCHITECTURES = ("cnn", "small", "deotte", "mlp", "nopool", "resnet")  # built by pipeline.training.model
# Those without a dropout layer, and without a batch-norm layer (a test checks both against the networks built):
# --dropout and --recalibrate change nothing in them.
WITHOUT_DROPOUT = {"mlp"}
WITHOUT_BATCH_NORM = {"mlp", "small"}
# The unit of training work (issue 17's budget): 42,000 images through one training epoch of a network
# that costs what the default CNN costs per image (pipeline.training.model.multiply_adds of "cnn" at width 1).
# Here, not in pipeline.training.model, so that counting a run's work (also in a Ray driver) imports no Keras.
UNIT_IMAGES = 42_000
REFERENCE_MULTIPLY_ADDS = 15_162_752
# Batch-norm recalibration (--recalibrate) reads at most this many training images, evenly spaced: a channel's
# mean and variance over 8,192 images' pixels are as good as over all of them, at a fifth of the work.
RECALIBRATION_IMAGES = 8192
# Recalibrating a batch-norm layer runs the network up to it: counted as a whole forward pass, a bound on the
# work. No network of ARCHITECTURES has more batch-norm layers than this (a test checks).
BATCH_NORM_LAYERS_AT_MOST = 7
STRATEGIES = ("default", "mirrored")  # mirrored: every local GPU (or logical CPU device)


# Seeds go to scikit-learn, NumPy and TensorFlow: every one of them takes 0 .. 2**31 - 1.
MAX_SEED = 2**31 - 1


def check_seed(seed: int, option: str = "--seed", models: int = 1) -> None:
    """Refuse a seed out of range; a run's models use seeds seed, seed + 1, ... (pipeline.training.plan.plan_parts)."""
    upper = MAX_SEED - (models - 1)
    if not 0 <= seed <= upper:
        models_note = f" (the run's {models} models use seeds {seed}..{seed}+{models - 1})" if models > 1 else ""
        raise PipelineError(f"{option} {seed}: expected an integer from 0 to {upper}{models_note}")


def check_dropout(rate: float, option: str = "--dropout") -> None:
    """Refuse a dropout rate Keras cannot use (1 would drop everything); train checks it before TensorFlow loads."""
    if not 0 <= rate < 1:
        raise PipelineError(f"{option} {rate:g}: expected a rate from 0 to below 1, e.g. 0.4")


def check_final_weight(weight: float, has_all_rows_model: bool, training_too: bool = False) -> None:
    """--final-weight as given: the model on all rows' weight in the submission's average, above 0 and at most 100,
    for a run that has that model. training_too: given to `all`, which takes --final-model; predict does not (its
    advice named that option all the same)."""
    if not 0 < weight <= 100:
        raise PipelineError(f"--final-weight {weight:g}: expected a weight above 0, at most 100, e.g. 2")
    if not has_all_rows_model:
        again = how_to("`make all ... FINAL_MODEL=1`", "`digit-recognizer all ... --final-model`")
        advice = f"add {how_to('FINAL_MODEL=1', '--final-model')}" if training_too else \
            f"train it again with one ({again}, with the run's options)"
        raise PipelineError(f"--final-weight {weight:g}: weighs the model on all rows, which this run does not"
                            f" train; {advice}")


def network_name(architecture: str, width: float, deskew: bool = False) -> str:
    """A network as the CLI and the report name it: "resnet", "cnn at 1.5x width", "cnn, deskewed"."""
    return architecture + (f" at {width:g}x width" if width != 1 else "") + (", deskewed" if deskew else "")


def check_width(width: float, option: str = "--width") -> None:
    """Refuse a width multiplier of no layers at all, or one past 4 (16x the work of the default network)."""
    if not 0 < width <= 4:
        raise PipelineError(f"{option} {width:g}: expected a multiplier above 0 and at most 4, e.g. 1.5")


@dataclass(frozen=True)
class Paths:
    """Every file and folder a stage reads or writes, under one root (the current folder or PIPELINE_ROOT)."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def raw_train(self) -> Path:
        return self.raw / "train.csv"

    @property
    def raw_test(self) -> Path:
        return self.raw / "test.csv"

    @property
    def sample_submission(self) -> Path:
        return self.raw / "sample_submission.csv"

    @property
    def prepared(self) -> Path:
        return self.data / "prepared"

    @property
    def train_images(self) -> Path:
        return self.prepared / "train_images.npy"

    @property
    def train_labels(self) -> Path:
        return self.prepared / "train_labels.npy"

    @property
    def test_images(self) -> Path:
        return self.prepared / "test_images.npy"

    @property
    def split_file(self) -> Path:
        return self.data / "split" / "split.npz"

    @property
    def models(self) -> Path:
        return self.data / "models"

    # A run's folder, data/models/<run>/: each file has one writer (docs/architecture.md, "The run folder").
    RUN_JSON: ClassVar[str] = "run.json"  # train (or blend): the run's summary (pipeline.core.records.Run)
    SUBMISSION_JSON: ClassVar[str] = "submission.json"  # predict (or blend): the submission file it wrote
    REPORT_JSON: ClassVar[str] = "report.json"  # report: the page it wrote
    TUNE_JSON: ClassVar[str] = "tune.json"  # tune: which trial of which search the run was
    HISTORY_JSON: ClassVar[str] = "history.json"  # train (or blend): every model's per-epoch history
    OUT_OF_FOLD_NPZ: ClassVar[str] = "out_of_fold.npz"  # train (or blend): the held-out rows' probabilities
    TEST_PROBABILITIES_NPY: ClassVar[str] = "test_probabilities.npy"  # predict (or blend), for blend
    TEST_PROBABILITIES_JSON: ClassVar[str] = "test_probabilities.json"  # predict (or blend): of which test images
    # train (or blend), from the folder's making until run.json is written: a folder with it and without run.json is
    # a killed run's (cache.remove_stale_temporaries removes it).
    UNFINISHED_RUN: ClassVar[str] = ".unfinished"
    INDEX_HTML: ClassVar[str] = "index.html"  # report: data/reports/<run>/index.html, beside a copy of run.json

    def run_dir(self, run_id: str) -> Path:
        return self.models / run_id

    def run_json(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.RUN_JSON

    def run_jsons(self) -> list[Path]:
        """Every run.json under data/models/."""
        return sorted(self.models.glob(f"*/{self.RUN_JSON}"))

    def submission_json(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.SUBMISSION_JSON

    def report_json(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.REPORT_JSON

    def tune_json(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.TUNE_JSON

    def history_json(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.HISTORY_JSON

    def out_of_fold(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.OUT_OF_FOLD_NPZ

    def test_probabilities(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.TEST_PROBABILITIES_NPY

    def test_probabilities_json(self, run_id: str) -> Path:
        return self.run_dir(run_id) / self.TEST_PROBABILITIES_JSON

    def model_file(self, run_id: str, part_name: str) -> Path:
        return self.run_dir(run_id) / f"{part_name}.keras"

    @property
    def checkpoints(self) -> Path:
        return self.models / ".checkpoints"

    def run_checkpoints(self, key_id: str) -> Path:
        """A train run's epoch checkpoints, named after its settings' key: the same settings resume them."""
        return self.checkpoints / key_id

    def tensorboard(self, key_id: str) -> Path:
        return self.data / "tensorboard" / key_id

    @property
    def reports(self) -> Path:
        return self.data / "reports"

    def report_dir(self, run_id: str) -> Path:
        return self.reports / run_id

    def report_index(self, run_id: str) -> Path:
        return self.report_dir(run_id) / self.INDEX_HTML

    @property
    def cache(self) -> Path:
        return self.data / ".cache"

    def record(self, stage_name: str) -> Path:
        return self.cache / f"{stage_name}.json"

    @property
    def store(self) -> Path:
        """The run cache's memory: every kept stage result (pipeline.core.run_cache)."""
        return self.cache / "store"

    @property
    def sent_submissions(self) -> Path:
        return self.data / "submissions_sent.json"

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"


def paths() -> Paths:
    """The paths of this run: under PIPELINE_ROOT when set (the tests set it), else the current folder
    (the checkout for `make`): never inside the installed package."""
    # ~ expanded: a quoted PIPELINE_ROOT='~/x' (an .env file, docker -e) made a folder named ~ in the current one
    root = Path(os.environ.get("PIPELINE_ROOT") or Path.cwd()).expanduser().resolve()
    for folder in (root, root / "data"):
        if folder.exists() and not folder.is_dir():  # else a NotADirectoryError traceback from the first file read
            where = f"PIPELINE_ROOT {root}" if folder == root and os.environ.get("PIPELINE_ROOT") else folder
            raise PipelineError(f"{where}: a file, expected a folder (where the pipeline keeps data/ and"
                                " submissions/)")
    return Paths(root)


# The default recipe (README, "Accuracy and speed"): Deotte's CNN topology, 18 epochs of a warm-up
# then cosine schedule, trained on a 90 % holdout split (whose 10 % give the estimate), plus one
# model on all rows with the same schedule; the submission averages the two.
DEFAULT = dict(
    val_fraction=0.1,  # share of the train images kept aside to measure on (the split, with folds=1)
    folds=1,  # 1: one holdout split; K > 1: K-fold cross-validation, one model per fold
    seed=42,  # the split, the weights' initialisation, shuffling and augmentation
    architecture="cnn", epochs=18, batch_size=64,
    learning_rate=2e-3,  # the schedule's peak, after a 2-epoch warm-up; cosine to 0 at the end
    members=1,  # models per holdout split or fold, each with its own seed
    final_model=True,  # also one model on all rows, averaged into the submission
    final_weight=1.0,  # predict's: the model on all rows' weight in the submission's average, each other's 1
    pseudo_label=False,  # the all-rows model also learns the test images the others are sure of (`default`, `best`)
    pseudo_tune=0,  # with pseudo_label: epochs the measured models go on for with the test images they are sure of
    precision="auto",  # bfloat16 where the CPU or GPU computes in it, float16 on older GPUs, else float32
    augmentation=1.0,  # strength of the random rotation / zoom / shift: 1 = 10 degrees, 10 %, 10 %; 0 = none
    elastic=0.0,  # elastic distortion's alpha in pixels (Simard et al. 2003 used 34); 0 = none
    cutout=0,  # Cutout's square side in pixels (DeVries and Taylor 2017); 0 = none
    thickness=0.0,  # strokes thickened or thinned by up to this fraction of a one-pixel dilation or erosion
    shear=0.0,  # a random slant: x moves by up to +-shear * (y - centre), composed with the affine map; 0 = none
    mixup=0.0,  # mixup's Beta(alpha, alpha) (Zhang et al. 2018): images and labels blended in pairs; 0 = none
    deskew=False,  # every image sheared upright and centred inside the network, for training and prediction
    dropout=0.4,  # after each block of the CNNs (before the last layer of "small")
    width=1.0,  # multiplies every layer's filters or units
    alternate="none",  # or an architecture: every other model of the run (2nd, 4th, ...) is that network instead
    alternate_width=1.0,  # the alternate network's width multiplier
    alternate_deskew=False,  # the alternate network deskews its images (--deskew's layer)
    label_smoothing=0.0,  # the loss's targets: 1 - F on the digit plus F / 10 on each of the ten; 0 = none
    weight_decay=0.0,  # decoupled (AdamW): each step shrinks every weight by learning rate x this; 0 = none
    learning_rate_floor=0.0,  # the schedule's last learning rate, a fraction of the peak; 0 = cosine to zero
    ema=0.0,  # weight averaging: the moving average's momentum per training step (e.g. 0.999); 0 = none
    recalibrate=False,  # batch-norm statistics recomputed on clean training images after the last epoch
    rare_looks=0,  # rows of small look-alike clusters repeated up to this many more times an epoch; 0 = none
    deterministic=False,
    strategy="default",  # or "mirrored": every local GPU (or logical CPU device)
    tta=False,
)

# Training presets: plain values, overridden by any option given on the command line.
PRESETS = {
    # Rare looks learnt up to 2 more times an epoch: on folds that hold out look-alike digits (new hands, as the
    # test rows seem to be) 450 errors instead of 499 over eleven paired fold models, 9 of 11 fewer; the same work
    # (35.5 units), and the same holdout estimate at full size, 0.9960 (docs/experiments.md, 2026-12-06).
    # Pseudo-labels: the model on all rows also learns the test images the holdout model is sure of (without rare
    # looks). On those folds, averaged with a rare-looks model as here: 180 errors of 42,000 instead of 188, and
    # 170 with two labellers; ten paired folds -2.6 +- 3.3 a fold. No more training: 0.2 units of prediction.
    # The submission counts the pseudo-labelled model on all rows twice: alone it is the better of the two (on the
    # style folds 174 errors of 42,000 against 208), and weighted 2:1 the pair made 171 instead of 180, 5 of 5 folds.
    "default": {**DEFAULT, "rare_looks": 2, "pseudo_label": True, "final_weight": 2.0},
    # Seconds on the bundled sample: for tests and a first look.
    "quick": {**DEFAULT, "architecture": "small", "epochs": 3, "precision": "float32", "final_model": False},
    # Five-fold cross-validation (an estimate over every row) and a model on all rows: six models,
    # each on its own rows, averaged with test-time augmentation. Folds 0, 2 and 4 the CNN at 1.5x width
    # (2.24x the work: 91 errors against 104 on three paired folds); folds 1 and 3 and the model on all
    # rows the residual network, as accurate alone (91 at width 1, 107 against plain's 112 at 0.65) and
    # different: a wide CNN and a resnet averaged made 81 errors on those folds (docs/experiments.md,
    # 2026-12-03). The resnet at 0.9x width (1.96x) keeps the six within 240 units (224 with recalibration).
    # Batch-norm recalibration: on folds of new hands (the style folds) 14 models with TTA made 609 -> 567
    # errors; on the stratified folds no change (156 -> 156 at full size): 5 units for the test rows' new hands.
    # Rare looks as in `default`: at full size the five fold models made 150 errors of 42,000 (156 without).
    # Pseudo-labels as in `default`, the five fold models labelling: on the style folds a pseudo-labelled fifth
    # member made 176 errors where a rare-looks one made 182 (3 of 5 folds fewer, none more); 226 units, not 223.
    "best": {**DEFAULT, "folds": 5, "tta": True, "width": 1.5, "alternate": "resnet", "alternate_width": 0.9,
             "recalibrate": True, "rare_looks": 2, "pseudo_label": True},
    # The seeds' MLP (Flatten, Dense 128, Dense 64, Dense 10): the baseline every comparison is made against.
    "baseline": {**DEFAULT, "architecture": "mlp", "epochs": 10, "learning_rate": 1e-3, "precision": "float32",
                 "augmentation": 0.0, "final_model": False},
}
DEFAULT_PRESET = "default"
# What each preset costs, for --help and `make help`: the README's figures, on a 2-core CPU with bfloat16
# (AVX-512 BF16 or AMX: 1,500-2,300 images/s of the default CNN) or without (AVX2-only float32: about 600).
PRESET_COSTS = {
    "default": "default: 2 models (holdout + all rows), 11-22 min on a 2-core CPU with bfloat16, 40 min without",
    "quick": "quick: 1 small model, seconds (the sample, tests)",
    "best": "best: 6 models (5 folds + all rows: 3 wide CNNs, 3 resnets) with TTA, 50 min-1 h 46 min with"
            " bfloat16, 4 h without",
    "baseline": "baseline: 1 MLP, about a minute",
}


if __name__ == "__main__":  # `make help`: each preset's cost, from the one place --help also reads
    import textwrap

    for cost in PRESET_COSTS.values():
        print(textwrap.fill(cost, 116, initial_indent="    ", subsequent_indent="      "))
