"""The honest estimate: Wilson intervals, the estimate record, and the precision chosen per device."""

import numpy as np
import pytest

from pipeline.core import estimate
from pipeline.training import device


def test_wilson_interval_matches_known_values_and_narrows_with_more_images():
    low, high = estimate.wilson_interval(81, 100)
    # 81 of 100: centre 0.7985, half-width 0.0763 (worked by hand from the formula)
    assert low == pytest.approx(0.7222, abs=1e-4) and high == pytest.approx(0.8749, abs=1e-4)
    small = estimate.wilson_interval(4180, 4200)
    large = estimate.wilson_interval(41800, 42000)
    assert small[0] < 41800 / 42000 < small[1] and large[0] < 0.9952 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 3
    assert estimate.wilson_interval(10, 10)[1] == pytest.approx(1.0) and estimate.wilson_interval(10, 10)[0] < 1.0


@pytest.mark.parametrize("correct, total", [(-1, 10), (11, 10), (0, 0)])
def test_wilson_interval_refuses_impossible_counts(correct, total):
    with pytest.raises(ValueError):
        estimate.wilson_interval(correct, total)


def test_make_estimate_counts_errors_and_keeps_its_kind():
    labels = np.array([0, 1, 2, 3])
    probabilities = np.eye(10)[[0, 1, 2, 9]]
    result = estimate.make_estimate(probabilities, labels, "holdout", folds=1)
    assert result.accuracy == 0.75 and result.errors == 1 and result.images == 4
    assert result.kind == "holdout" and result.folds == 1
    assert result.low < 0.75 < result.high
    assert result.to_json() == {"accuracy": 0.75, "low": result.low, "high": result.high, "kind": "holdout",
                                "images": 4, "errors": 1, "folds": 1}
    assert "0.7500" in estimate.describe(result) and "holdout" in estimate.describe(result)
    with pytest.raises(ValueError):
        estimate.make_estimate(probabilities, labels[:3], "holdout")


@pytest.mark.parametrize("gpus, flags, expected", [
    ([], {"avx2", "fma"}, "float32"),
    ([], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ([], {"amx_bf16"}, "mixed_bfloat16"),
    ([(8, 0)], set(), "mixed_bfloat16"),
    ([(7, 5)], {"avx512_bf16"}, "mixed_float16"),  # a T4: float16, whatever the CPU
    ([(9, 0), (6, 0)], set(), "mixed_float16"),  # mixed cards: what the oldest can do
])
def test_precision_is_chosen_for_the_device(gpus, flags, expected):
    assert device.choose_precision(gpus, flags) == expected


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert device.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert device.cpu_flags(tmp_path / "missing") == set()
    assert device.resolve_precision("float32") == "float32"
