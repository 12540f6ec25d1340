"""What a training run is (`TrainingConfig`, from a preset and the options given), its checks, and
TensorFlow set up for it (seeds, precision, distribution strategy).
"""

import os
from dataclasses import asdict, dataclass, fields

from pipeline.core import config
from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run is; every value comes from a preset (pipeline.core.config.PRESETS) or an option."""

    architecture: str
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    precision: str
    augmentation: float  # 0: none; 1: 10 degrees, 10 % zoom, 10 % shift
    elastic: float  # 0: none; else the alpha of Simard's elastic distortion (pipeline.training.augment.random_elastic)
    dropout: float
    width: float
    members: int
    final_model: bool  # also train one model on all rows, averaged into the submission
    pseudo_label: bool  # the all-rows model also learns the test images the other models are sure of
    tta: bool  # test-time augmentation, for the estimate as for the submission
    deterministic: bool
    strategy: str

    def check(self) -> None:
        """The numbers and combinations; the CLI's parser checks the names (--model, --precision, --strategy)."""
        if self.epochs < 1:
            raise PipelineError(f"--epochs {self.epochs}: expected at least 1")
        if not 0 < self.learning_rate < 1:
            raise PipelineError(f"--learning-rate {self.learning_rate}: expected a value between 0 and 1, e.g. 0.002")
        if self.batch_size < 1:
            raise PipelineError(f"--batch-size {self.batch_size}: expected at least 1")
        if not 0 <= self.augmentation <= 3:
            raise PipelineError(f"--augmentation {self.augmentation}: expected 0 (none) to 3 (1 is 10 degrees,"
                                " 10 % zoom and shift)")
        if not 0 <= self.elastic <= 60:
            raise PipelineError(f"--elastic {self.elastic}: expected 0 (none) to 60 (Simard et al. used 34), e.g. 20")
        config.check_dropout(self.dropout)
        config.check_width(self.width)
        if self.members < 1:
            raise PipelineError(f"--members {self.members}: expected at least 1")
        if self.pseudo_label and not self.final_model:
            raise PipelineError("--pseudo-label: the pseudo-labelled test images are learnt by the model on all rows;"
                                " add --final-model")
        # The fewest models a run of these settings trains (folds add more: plan_parts checks those).
        config.check_seed(self.seed, models=self.members + int(self.final_model))

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_preset(preset: str, **overrides) -> dict:
    """The preset's values with every option that was given (not None) in their place."""
    return {**config.PRESETS[preset], **{name: value for name, value in overrides.items() if value is not None}}


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
