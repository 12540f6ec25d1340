"""The learning-rate schedule: Keras's CosineDecay with warm-up, the same curve as the old hand-written one."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.training.model import WarmupCosineSchedule, build_model, load_model, recommended_schedule  # noqa: E402


@pytest.mark.parametrize("steps_per_epoch, epochs, peak", [(34, 3, 2e-3), (657, 18, 2e-3), (5, 2, 1e-2), (1, 1, 1e-3)])
def test_schedule_is_the_old_curve(steps_per_epoch, epochs, peak):
    """Warm-up from peak/10 to the peak over 2 epochs, cosine to 0 at the last step, 0 after it."""
    total_steps = steps_per_epoch * epochs
    schedule = recommended_schedule(steps_per_epoch, epochs, peak)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    old = WarmupCosineSchedule(peak, total_steps, min(steps_per_epoch * 2, total_steps - 1))
    warmup = min(steps_per_epoch * 2, total_steps - 1)
    # Every 7th step and every step around the warm-up's end and the last one (all steps took 26 s at 11,826)
    edges = {0, 1, warmup - 1, warmup, warmup + 1, total_steps - 2, total_steps - 1, total_steps, total_steps + 1,
             total_steps + 2}
    steps = sorted({step for step in edges if step >= 0} | set(range(0, total_steps + 3, 7)))
    new_rates = np.array([float(schedule(step)) for step in steps])
    old_rates = np.array([float(old(step)) for step in steps])
    np.testing.assert_allclose(new_rates, old_rates, rtol=0, atol=peak * 1e-6)
    assert new_rates.max() == pytest.approx(peak) and new_rates[-1] == 0.0


def test_a_floor_ends_the_cosine_at_that_share_of_the_peak():
    """--learning-rate-floor F: the same warm-up, then a cosine from the peak down to F * peak, held after it."""
    steps_per_epoch, epochs, peak, floor = 20, 5, 2e-3, 0.2
    schedule = recommended_schedule(steps_per_epoch, epochs, peak, floor=floor)
    old = WarmupCosineSchedule(peak, 100, 40, final_learning_rate=floor * peak)
    steps = [0, 20, 39, 40, 41, 70, 99, 100, 150]
    np.testing.assert_allclose([float(schedule(step)) for step in steps], [float(old(step)) for step in steps],
                               rtol=0, atol=peak * 1e-6)
    assert float(schedule(100)) == pytest.approx(floor * peak) and float(schedule(150)) == pytest.approx(floor * peak)
    with pytest.raises(ValueError, match="floor"):
        recommended_schedule(steps_per_epoch, epochs, peak, floor=1.0)


def test_a_model_saved_with_the_old_schedule_still_loads(tmp_path):
    old = WarmupCosineSchedule(2e-3, 100, 10)
    model = build_model("mlp", learning_rate=old)
    model.save(tmp_path / "old.keras")
    loaded = load_model(tmp_path / "old.keras")
    schedule = loaded.optimizer._learning_rate  # the schedule itself; .learning_rate is its current value
    assert isinstance(schedule, WarmupCosineSchedule) and schedule.get_config() == old.get_config()


def test_weight_decay_is_decoupled_from_the_gradient_and_saved_with_the_model(tmp_path):
    """--weight-decay W: one step moves each weight by Adam's step plus -lr * W * the weight (AdamW), the same
    Adam step as without it; the optimizer's saved config keeps W, so a checkpoint resumes with it."""
    rates = np.random.default_rng(0)
    images = rates.random((32, 28, 28, 1), dtype=np.float32)
    targets = keras.utils.to_categorical(np.arange(32) % 10, 10)
    after = {}
    for decay in (0.0, 0.25):
        keras.utils.set_random_seed(3)
        model = build_model("mlp", learning_rate=0.01, weight_decay=decay)
        before = [weight.copy() for weight in model.get_weights()]
        model.train_on_batch(images, targets)
        after[decay] = model.get_weights()
    for start, plain, decayed in zip(before, after[0.0], after[0.25]):
        np.testing.assert_allclose(decayed, plain - 0.01 * 0.25 * start, rtol=0, atol=1e-6)
    assert any(np.abs(start).max() > 0.01 for start in before)  # the decay moved weights by more than atol
    model.save(tmp_path / "decayed.keras")
    assert load_model(tmp_path / "decayed.keras").optimizer.weight_decay == pytest.approx(0.25)


def ink_moments(image):
    """(row mean, column mean, slant = covariance / row variance) of a 28x28 image's ink."""
    rows, columns = np.mgrid[:28, :28]
    total = image.sum()
    row_mean, column_mean = (image * rows).sum() / total, (image * columns).sum() / total
    covariance = (image * (rows - row_mean) * (columns - column_mean)).sum() / total
    return row_mean, column_mean, covariance / ((image * (rows - row_mean) ** 2).sum() / total)


def test_deskew_stands_a_slanted_stroke_upright_and_centres_it(tmp_path):
    """--deskew: a slanted stroke, off centre, comes out upright on the image's centre; a blank image
    stays blank (no division by zero), and a model with the layer saves and loads in safe mode."""
    from pipeline.training.model import Deskew

    images = np.zeros((2, 28, 28, 1), np.float32)
    for row in range(5, 22):  # a 3-pixel-wide stroke, one column right every second row, left of centre
        start = 4 + (row - 5) // 2
        images[0, row, start:start + 3, 0] = 1.0
    row_mean, column_mean, slant = ink_moments(images[0, ..., 0])
    assert slant > 0.4 and abs(column_mean - 13.5) > 2  # slanted and off centre before
    upright = np.asarray(Deskew()(images))
    row_mean, column_mean, slant = ink_moments(upright[0, ..., 0])
    assert abs(slant) < 0.05 and abs(row_mean - 13.5) < 0.3 and abs(column_mean - 13.5) < 0.3
    assert upright[0].sum() == pytest.approx(images[0].sum(), rel=0.05)  # moved, not lost
    assert np.all(upright[1] == 0)
    model = build_model("small", deskew=True)
    assert model.get_layer("deskew") is not None
    model.save(tmp_path / "deskew.keras")
    loaded = load_model(tmp_path / "deskew.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_xla_is_off_and_not_a_knob():
    """Issue 18: jit_compile was an option nothing set; XLA stays off (4-5x slower on the CPU)."""
    import inspect

    from pipeline.training.model import compile_model

    assert "jit_compile" not in inspect.signature(build_model).parameters
    assert "jit_compile" not in inspect.signature(compile_model).parameters
    assert build_model("mlp").jit_compile is False


def test_the_network_refuses_a_dropout_or_width_with_the_training_checks():
    """One check for train and model (issue 18): the same ranges, named after the argument."""
    from pipeline.core.errors import PipelineError
    from pipeline.training.model import build_network

    with pytest.raises(PipelineError, match="dropout_rate 1: expected a rate from 0 to below 1"):
        build_network("mlp", dropout_rate=1.0)
    with pytest.raises(PipelineError, match="width 0: expected a multiplier above 0"):
        build_network("mlp", width=0)
    with pytest.raises(PipelineError, match="width 5"):
        build_network("mlp", width=5)


def test_keras_is_pinned_to_the_minor_release_whose_internals_training_relies_on():
    """pyproject pins keras~=X.Y.0: reseed_layers finds each dropout's seed by its `seed_generator_state`
    variable path, an internal name a minor release may change; this notices when it does."""
    import tomllib

    from conftest import PROJECT_ROOT
    from packaging.requirements import Requirement

    from pipeline.training.fit import reseed_layers

    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(line) for line in dependencies if Requirement(line).name == "keras")
    assert str(pin.specifier).startswith("~=") and str(pin.specifier).count(".") == 2  # ~=3.15.0, not ~=3.15
    assert pin.specifier.contains(keras.__version__)

    model = build_model("small")  # it has a Dropout layer
    generators = [variable for variable in model.variables if "seed_generator_state" in variable.path]
    assert generators, "no seed_generator_state variable: Keras renamed what reseed_layers looks for"
    reseed_layers(model, seed=3, epoch=1)
    first = [keras.ops.convert_to_numpy(variable) for variable in generators]
    reseed_layers(model, seed=3, epoch=2)
    assert any((keras.ops.convert_to_numpy(variable) != value).any() for variable, value in zip(generators, first))
    reseed_layers(model, seed=3, epoch=1)
    assert all((keras.ops.convert_to_numpy(variable) == value).all() for variable, value in zip(generators, first))


@pytest.mark.parametrize("architecture, work", [("cnn", 1.0), ("nopool", 2.27), ("resnet", 2.40)])
def test_each_ensemble_family_maps_images_to_probabilities_at_its_stated_work(architecture, work):
    """The families the docs compare: 10 probabilities an image, in bfloat16 too, and the work the docs state."""
    import numpy as np

    from pipeline.core.config import REFERENCE_MULTIPLY_ADDS
    from pipeline.training.model import build_network, multiply_adds

    network = build_network(architecture, dtype_policy="mixed_bfloat16")
    probabilities = np.asarray(network(np.random.default_rng(0).random((3, 28, 28, 1), dtype="float32")))
    assert probabilities.shape == (3, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert multiply_adds(network) / REFERENCE_MULTIPLY_ADDS == pytest.approx(work, abs=0.01)
