"""The learning-rate schedule: Keras's CosineDecay with warm-up, the same curve as the old hand-written one."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pipeline.model import WarmupCosineSchedule, build_model, load_model, recommended_schedule  # noqa: E402


@pytest.mark.parametrize("steps_per_epoch, epochs, peak", [(34, 3, 2e-3), (657, 18, 2e-3), (5, 2, 1e-2), (1, 1, 1e-3)])
def test_schedule_is_the_old_curve(steps_per_epoch, epochs, peak):
    """Warm-up from peak/10 to the peak over 2 epochs, cosine to 0 at the last step, 0 after it."""
    total_steps = steps_per_epoch * epochs
    schedule = recommended_schedule(steps_per_epoch, epochs, peak)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    old = WarmupCosineSchedule(peak, total_steps, min(steps_per_epoch * 2, total_steps - 1))
    steps = range(total_steps + 3)
    new_rates = np.array([float(schedule(step)) for step in steps])
    old_rates = np.array([float(old(step)) for step in steps])
    np.testing.assert_allclose(new_rates, old_rates, rtol=0, atol=peak * 1e-6)
    assert new_rates.max() == pytest.approx(peak) and new_rates[-1] == 0.0


def test_a_model_saved_with_the_old_schedule_still_loads(tmp_path):
    old = WarmupCosineSchedule(2e-3, 100, 10)
    model = build_model("mlp", learning_rate=old)
    model.save(tmp_path / "old.keras")
    loaded = load_model(tmp_path / "old.keras")
    schedule = loaded.optimizer._learning_rate  # the schedule itself; .learning_rate is its current value
    assert isinstance(schedule, WarmupCosineSchedule) and schedule.get_config() == old.get_config()


def test_xla_is_off_and_not_a_knob():
    """Issue 18: jit_compile was an option nothing set; XLA stays off (4-5x slower on the CPU)."""
    import inspect

    from pipeline.model import compile_model

    assert "jit_compile" not in inspect.signature(build_model).parameters
    assert "jit_compile" not in inspect.signature(compile_model).parameters
    assert build_model("mlp").jit_compile is False


def test_the_network_refuses_a_dropout_or_width_with_the_training_checks():
    """One check for train and model (issue 18): the same ranges, named after the argument."""
    from pipeline.errors import PipelineError
    from pipeline.model import build_network

    with pytest.raises(PipelineError, match="dropout_rate 1.0: expected a rate from 0 to below 1"):
        build_network("mlp", dropout_rate=1.0)
    with pytest.raises(PipelineError, match="width 0: expected a multiplier above 0"):
        build_network("mlp", width=0)
    with pytest.raises(PipelineError, match="width 5"):
        build_network("mlp", width=5)
