"""What a training run is (`TrainingConfig`, from a preset and the options given), its checks, and
TensorFlow set up for it (seeds, precision, distribution strategy).
"""

import os
from dataclasses import asdict, dataclass, field, fields

from pipeline.core import config
from pipeline.core.errors import PipelineError
from pipeline.training.device import PRECISIONS
from pipeline.training.plan import PSEUDO_LABEL_CONFIDENCE

KNOB = "knob"  # the key of a TrainingConfig field's metadata that holds its Knob
# Far past any recipe (default: 18 epochs, one model a split or fold), short of a plan that runs for weeks
# silently (10**9 members built a 3.7 GB plan before the first epoch).
MOST_EPOCHS = 1000
MOST_MEMBERS = 100


@dataclass(frozen=True)
class Knob:
    """A training option as the CLI and make show it: its help, its choices, its option's name (without the
    dashes; the field's name with dashes unless given), and whether tune passes it on to its trials."""

    help: str
    choices: tuple[str, ...] = ()
    option: str = ""
    tune: bool = True


def knob(help: str, *, choices: tuple[str, ...] = (), option: str = "", tune: bool = True):
    """A TrainingConfig field that is an option of train, all, bench and (tune=True) tune, and a make variable.
    No default: the value comes from the preset (pipeline.core.config.PRESETS) or the option given.
    Declared as `    name: type = knob(...)`, from that line to the one that ends with its closing parenthesis:
    the Makefile reads these declarations (KNOBS), and tests/test_knobs.py checks that it reads them right."""
    return field(metadata={KNOB: Knob(help, tuple(choices), option, tune)})


@dataclass(frozen=True)
class KnobSpec:
    """One training option, resolved: the field's name and type, and the names the CLI and make give it."""

    name: str  # the field's, the preset's and run.json's
    type: type
    option: str  # --option (bool: --option/--no-option)
    variable: str  # make's
    knob: Knob

    @property
    def parameter(self) -> str:
        """The typer command's parameter name."""
        return self.option.replace("-", "_")


def knobs() -> list[KnobSpec]:
    """Every training option, in TrainingConfig's order."""
    specs = []
    for item in fields(TrainingConfig):
        spec = item.metadata[KNOB]
        option = spec.option or item.name.replace("_", "-")
        specs.append(KnobSpec(item.name, item.type, option, option.replace("-", "_").upper(), spec))
    return specs


def option_words(values: dict) -> list[str]:
    """The CLI words of the training options given (not None), keyed by field name: --epochs 5, --no-tta."""
    words = []
    for spec in knobs():
        value = values.get(spec.name)
        if value is None:
            continue
        if spec.type is bool:
            words.append(f"--{spec.option}" if value else f"--no-{spec.option}")
        else:
            words += [f"--{spec.option}", f"{value:g}" if isinstance(value, float) else str(value)]
    return words


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run is; every value comes from a preset (pipeline.core.config.PRESETS) or an option.
    Each field is a knob: the CLI's options of train, all, bench and tune, make's variables and run.json's
    params derive from these lines."""

    architecture: str = knob("the network's architecture", choices=config.ARCHITECTURES, option="model")
    epochs: int = knob("Epochs")
    batch_size: int = knob("Batch size")
    learning_rate: float = knob("Peak learning rate of the schedule")
    seed: int = knob("Random seed of training: the weights' initialisation, shuffling and augmentation; model k"
                     " of a run gets seed + k (all and tune: also the split's seed)")
    precision: str = knob("auto: bfloat16 where the hardware computes in it, float16 on older GPUs, else float32",
                          choices=PRECISIONS)
    augmentation: float = knob("Strength of the training images' random rotation, zoom and shift: 0 none, 1 = 10"
                               " degrees, 10 %, 10 %")
    elastic: float = knob("Elastic distortion of the training images (Simard et al. 2003): the size of the smooth"
                          " random displacement, in pixels before smoothing; 0 none, Simard's 34")
    cutout: int = knob("Cutout (DeVries and Taylor 2017): a square of this many pixels a side, at a random place"
                       " in each training image, set to 0; 0 none, e.g. 8")
    thickness: float = knob("Stroke thickness: each training image's strokes thickened or thinned by a random"
                            " fraction, up to this, of a one-pixel dilation or erosion; 0 none, at most 1, e.g. 0.5")
    shear: float = knob("Shear: each training image slanted by a random factor in +-S (rows shifted in proportion"
                        " to their height), composed with the rotation, zoom and shift; 0 none, at most 1, e.g. 0.2")
    mixup: float = knob("Mixup (Zhang et al. 2018): each training image and its label blended with another's by a"
                        " weight from Beta(A, A), the image's own at least half; 0 none, at most 1, e.g. 0.2")
    deskew: bool = knob("Deskew every image inside the network (for training and prediction alike): sheared so"
                        " that its strokes stand upright and centred on its ink")
    dropout: float = knob("Dropout rate after each block of the network")
    width: float = knob("Multiplies every layer's filters or units: 1.5 is a wider network, about 2.2x the work")
    alternate: str = knob("A second network for the ensemble: every other model of the run (the 2nd, 4th, ...; the"
                          " model on all rows comes last; a run of one model is refused) is this one, at"
                          " --alternate-width. none: one network", choices=("none", *config.ARCHITECTURES))
    alternate_width: float = knob("The width multiplier of the --alternate network")
    alternate_deskew: bool = knob("The --alternate network deskews its images (see --deskew)")
    label_smoothing: float = knob("Label smoothing of the loss: each target is 1 - F on its digit and F / 10 spread"
                                  " over all ten (Keras's CategoricalCrossentropy); 0 none, e.g. 0.1")
    weight_decay: float = knob("Decoupled weight decay (AdamW, Loshchilov and Hutter 2019): each step shrinks every"
                               " weight by the learning rate times this; 0 none, e.g. 0.05")
    learning_rate_floor: float = knob("The schedule's last learning rate, as a fraction of its peak: 0 cosine to"
                                      " zero; e.g. 0.2 ends higher, for --ema to average over")
    ema: float = knob("Weight averaging: each model ends with an exponential moving average of its weights over"
                      " the training steps, of this momentum per step; 0 none, e.g. 0.999")
    recalibrate: bool = knob("After the last epoch, every batch-norm layer's statistics recomputed on (up to"
                             f" {config.RECALIBRATION_IMAGES:,} of) the model's training images as predictions see"
                             " them: clean, dropout off")
    rare_looks: int = knob("Rare looks learnt more often: a training row whose cluster of look-alike digits is"
                           " smaller than the median row's is repeated up to this many more times an epoch, and"
                           " the epochs cut so that the images seen stay the same; 0 none, e.g. 2")
    members: int = knob("Models in the ensemble")
    final_model: bool = knob("Also train one model on all rows with the same schedule, averaged into the"
                             " submission", tune=False)
    pseudo_label: bool = knob("The model on all rows also learns the test images the other models label with"
                              f" probability >= {PSEUDO_LABEL_CONFIDENCE}, in fewer epochs (it sees as many"
                              " images as without them) and without rare looks", tune=False)
    pseudo_tune: int = knob("With --pseudo-label: each measured model then trains this many more epochs on its rows"
                            " plus the pseudo-labelled test images (Adam afresh, half an epoch's warm-up to half the"
                            " peak learning rate, then a cosine to 0; no rare looks), and is measured and predicts"
                            " after; 0 none, e.g. 3", tune=False)
    tta: bool = knob("Test-time augmentation, for the estimate as for the submission", tune=False)
    deterministic: bool = knob("Deterministic TensorFlow ops, for exact repeats (slower)")
    strategy: str = knob("default, or mirrored: data-parallel over every local GPU", choices=config.STRATEGIES)

    def check(self) -> None:
        """The numbers and combinations; the CLI's parser checks the names (--model, --precision, --strategy)."""
        if not 1 <= self.epochs <= MOST_EPOCHS:
            raise PipelineError(f"--epochs {self.epochs}: expected 1 to {MOST_EPOCHS:,}, e.g. 18")
        if not 0 < self.learning_rate < 1:
            raise PipelineError(f"--learning-rate {self.learning_rate:g}: expected a value between 0 and 1, e.g. 0.002")
        if self.batch_size < 1:
            raise PipelineError(f"--batch-size {self.batch_size}: expected at least 1")
        if not 0 <= self.augmentation <= 3:
            raise PipelineError(f"--augmentation {self.augmentation:g}: expected 0 (none) to 3 (1 is 10 degrees,"
                                " 10 % zoom and shift)")
        if not 0 <= self.elastic <= 60:
            raise PipelineError(f"--elastic {self.elastic:g}: expected 0 (none) to 60 (Simard et al. used 34), e.g. 20")
        if not 0 <= self.cutout <= config.IMAGE_SHAPE[0]:
            raise PipelineError(f"--cutout {self.cutout}: expected 0 (none) to {config.IMAGE_SHAPE[0]} pixels, e.g. 8")
        if not 0 <= self.thickness <= 1:
            raise PipelineError(f"--thickness {self.thickness:g}: expected 0 (none) to 1 (a full one-pixel dilation"
                                " or erosion), e.g. 0.5")
        if not 0 <= self.shear <= 1:
            raise PipelineError(f"--shear {self.shear:g}: expected 0 (none) to 1 (a 45-degree slant), e.g. 0.2")
        if not 0 <= self.mixup <= 1:
            raise PipelineError(f"--mixup {self.mixup:g}: expected 0 (none) to 1 (Beta(A, A)'s A), e.g. 0.2")
        config.check_dropout(self.dropout)
        config.check_width(self.width)
        config.check_width(self.alternate_width, "--alternate-width")
        if not 0 <= self.label_smoothing < 1:
            raise PipelineError(f"--label-smoothing {self.label_smoothing:g}: expected 0 (none) to below 1, e.g. 0.1")
        if not 0 <= self.weight_decay < 1:
            raise PipelineError(f"--weight-decay {self.weight_decay:g}: expected 0 (none) to below 1, e.g. 0.05")
        if not 0 <= self.learning_rate_floor < 1:
            raise PipelineError(f"--learning-rate-floor {self.learning_rate_floor:g}: expected 0 (cosine to zero) to"
                                " below 1, e.g. 0.2")
        if not 0 <= self.ema < 1:
            raise PipelineError(f"--ema {self.ema:g}: expected 0 (none) to below 1, e.g. 0.999")
        if not 0 <= self.rare_looks <= 5:
            raise PipelineError(f"--rare-looks {self.rare_looks}: expected 0 (none) to 5 more times an epoch, e.g. 2")
        if not 1 <= self.members <= MOST_MEMBERS:
            raise PipelineError(f"--members {self.members}: expected 1 to {MOST_MEMBERS} models a holdout split or"
                                " fold, e.g. 2")
        if self.alternate_deskew and self.alternate == "none":
            raise PipelineError("--alternate-deskew: deskews the --alternate network's images; name that network,"
                                " e.g. --alternate cnn")
        if self.pseudo_label and not self.final_model:
            raise PipelineError("--pseudo-label: the pseudo-labelled test images are learnt by the model on all rows;"
                                " add --final-model")
        if not 0 <= self.pseudo_tune <= 10:
            raise PipelineError(f"--pseudo-tune {self.pseudo_tune}: expected 0 (none) to 10 epochs, e.g. 3")
        if self.pseudo_tune and not self.pseudo_label:
            raise PipelineError(f"--pseudo-tune {self.pseudo_tune}: the measured models go on with the pseudo-labelled"
                                " test images; add --pseudo-label")
        # The fewest models a run of these settings trains (folds add more: plan_parts checks those).
        config.check_seed(self.seed, models=self.members + int(self.final_model))

    def alternate_network(self) -> tuple[str, float, bool] | None:
        """(architecture, width, deskew) of the models that alternate with --model's, or None."""
        return None if self.alternate == "none" else (self.alternate, self.alternate_width, self.alternate_deskew)

    def as_dict(self) -> dict:
        return asdict(self)


def _networks(values: dict) -> set[str]:
    """The architectures of a run's models (--model's and --alternate's); a value not given is the default's."""
    architecture, alternate = (values.get(name, config.DEFAULT[name]) for name in ("architecture", "alternate"))
    return {architecture} | ({alternate} - {"none"})


def has_dropout_layer(values: dict) -> bool:
    """Whether a network of the run (resolved preset values) has a dropout layer for --dropout to set."""
    return not _networks(values) <= config.WITHOUT_DROPOUT


def has_batch_norm(values: dict) -> bool:
    """Whether a network of the run (resolved preset values) has batch-norm layers for --recalibrate to set."""
    return not _networks(values) <= config.WITHOUT_BATCH_NORM


def resolve_preset(preset: str, **overrides) -> dict:
    """The preset's values with every option that was given (not None) in their place.

    --no-final-model also turns off the preset's pseudo-labels, which only the model on all rows learns; an
    explicit --pseudo-label beside it is refused (TrainingConfig.check). An option given that no network of the
    run uses (--alternate-width without --alternate, --dropout for the mlp alone, --recalibrate without a
    batch-norm layer) is refused; the preset's own --recalibrate is turned off for such networks."""
    given = {name: value for name, value in overrides.items() if value is not None}
    if given.get("final_model") is False and "pseudo_label" not in given:
        given["pseudo_label"] = False
    values = {**config.PRESETS[preset], **given}
    # Options that would change nothing but the run's key, and so train the same models again.
    if "alternate_width" in given and values["alternate"] == "none":
        raise PipelineError(f"--alternate-width {given['alternate_width']:g}: the width of the --alternate network;"
                            " name that network, e.g. --alternate resnet")
    if "dropout" in given and not has_dropout_layer(values):
        raise PipelineError(f"--dropout {given['dropout']:g}: the mlp network has no dropout layer; it goes with"
                            " the other networks (--model)")
    if values["recalibrate"] and not has_batch_norm(values):
        if given.get("recalibrate"):
            raise PipelineError(f"--recalibrate: the {' and '.join(sorted(_networks(values)))} network"
                                f"{'s have' if len(_networks(values)) > 1 else ' has'} no batch-norm layer to"
                                " recalibrate; it goes with the other networks (--model)")
        values["recalibrate"] = False
    return values


def training_config(values: dict) -> TrainingConfig:
    """The TrainingConfig of resolved preset values (the split's values are left out)."""
    training = TrainingConfig(**{field.name: values[field.name] for field in fields(TrainingConfig)})
    training.check()
    return training


def configure_tensorflow(training: TrainingConfig):
    """Seeds, precision and distribution strategy; returns the strategy to build the model under."""
    import keras
    import tensorflow as tf

    logical_cpus = int(os.environ.get("PIPELINE_LOGICAL_CPUS", "0"))
    if logical_cpus > 1:
        # Lets MirroredStrategy be exercised on a machine without accelerators (the tests do).
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    keras.utils.set_random_seed(training.seed)
    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(training.precision)
    if training.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def make_words(for_tune: bool = False) -> list[str]:
    """make's variables of the training options as `make help` lists them: MODEL=cnn|small|..., EPOCHS=N."""
    metavars = {int: "N", float: "F", str: "NAME", bool: "1|0"}
    return [f"{spec.variable}={'|'.join(spec.knob.choices) or metavars[spec.type]}" for spec in knobs()
            if spec.knob.tune or not for_tune]


if __name__ == "__main__":  # `make help`: the training options' variables, wrapped
    import textwrap

    print(textwrap.fill(" ".join(make_words()), 116, initial_indent="    ", subsequent_indent="    ",
                        break_long_words=False, break_on_hyphens=False))
