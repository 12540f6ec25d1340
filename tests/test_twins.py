"""Concepts that had two homes (issue 18), each now one function with the behaviour both callers had."""

import errno

import numpy as np
import pytest

from pipeline.core import cache, config, estimate
from pipeline.core.errors import PipelineError, one_line
from pipeline.stages import prepare
from pipeline.training import device


def test_one_line_is_the_first_line_of_an_error_or_its_type():
    assert one_line(RuntimeError("first\nsecond")) == "first"
    assert one_line(RuntimeError("  ")) == "RuntimeError"
    assert one_line(RuntimeError("x" * 400)) == "x" * 297 + "..."
    assert one_line(RuntimeError("x" * 250), 200) == "x" * 197 + "..."


def test_one_line_joins_every_line_of_a_server_message_and_keeps_empty_text_empty():
    assert one_line("reason:\n  bad   file\n", 100, every_line=True) == "reason: bad file"
    assert one_line("", 100, every_line=True) == ""
    assert one_line("y" * 50, 20, every_line=True) == "y" * 17 + "..."


def test_the_kaggle_adapter_and_the_engine_use_it():
    from pipeline.competition import credentials
    from pipeline.training import engine

    assert engine.one_line is one_line
    assert credentials._one_line("a\nb " * 3, 100) == "a b a b a b"
    assert not hasattr(engine, "_first_line")


def test_class_counts_is_one_array_of_ten_for_prepare_and_report():
    from pipeline.core import digits
    from pipeline.report import figures, writer

    counts = prepare.class_counts(np.array([0, 0, 3, 9], dtype=np.uint8))
    assert counts.tolist() == [2, 0, 0, 1, 0, 0, 0, 0, 0, 1] and counts.dtype == np.int64
    assert writer.class_counts is figures.class_counts is prepare.class_counts is digits.class_counts


def test_one_estimate_phrase_in_the_terminal_and_in_the_report():
    from pipeline.report import page

    result = estimate.Estimate(accuracy=0.99525, low=0.9945, high=0.9958, kind="holdout", images=4200, errors=20)
    assert estimate.describe(result) == "0.9952 (95 % interval 0.9945-0.9958, holdout on 4,200 images)"
    assert estimate.describe(result.to_json()) == estimate.describe(result)  # as run.json holds it
    assert estimate.describe({**result.to_json(), "errors": None}) == "no estimate"  # a malformed one: none
    assert estimate.describe(None) == "no estimate"
    assert estimate.describe(result, missing="none", unit="digits").endswith("holdout on 4,200 digits)")
    assert estimate.describe({}, missing="none", unit="digits") == "none"
    assert page.describe is estimate.describe and not hasattr(page, "estimate_text")


def test_one_make_folder_that_fails_in_one_line(tmp_path):
    from pipeline.competition import kaggle_api

    assert kaggle_api.make_folder is cache.make_folder
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    with pytest.raises(PipelineError) as caught:
        cache.make_folder(blocker / "inside")
    assert str(caught.value).startswith(f"cannot create {blocker / 'inside'}: ") and "\n" not in str(caught.value)


def test_make_folder_on_a_full_disk_says_what_to_do(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "mkdir", full)
    with pytest.raises(PipelineError, match="cannot write .No space left on device.; free some space"):
        cache.make_folder(tmp_path / "new")


def test_precisions_are_the_dtype_policies_and_auto():
    assert device.PRECISIONS == ("auto", *device.DTYPE_POLICIES)
    assert device.DTYPE_POLICIES == ("float32", "mixed_bfloat16", "mixed_float16")


@pytest.mark.parametrize("dropout, width, message", [(1.0, 1.0, "--dropout 1: expected a rate from 0 to below 1"),
                                                     (-0.1, 1.0, "--dropout -0.1"),
                                                     (0.4, 0.0, "--width 0: expected a multiplier above 0"),
                                                     (0.4, 4.5, "--width 4.5")])
def test_training_refuses_a_dropout_or_width_before_tensorflow(dropout, width, message):
    from pipeline.training import settings

    values = settings.resolve_preset("quick", dropout=dropout, width=width)
    with pytest.raises(PipelineError, match=message.replace(".", r"\.")):
        settings.training_config(values)


def test_the_checks_accept_the_edges():
    config.check_dropout(0.0)
    config.check_width(4.0)


def test_one_spawner_gives_a_clean_environment(tmp_path, monkeypatch):
    """conftest's pipeline_environment serves run_pipeline and start_pipeline (the copies in test_cli and
    test_faults are gone): outputs under the root, unbuffered, and no developer's Kaggle key unless given."""
    import subprocess

    from conftest import pipeline_environment, start_pipeline

    monkeypatch.setenv("KAGGLE_KEY", "the developer's")
    environment = pipeline_environment(tmp_path)
    assert environment["PIPELINE_ROOT"] == str(tmp_path) and environment["PYTHONUNBUFFERED"] == "1"
    assert "KAGGLE_KEY" not in environment and environment["KAGGLE_CONFIG_DIR"].startswith(str(tmp_path))
    assert pipeline_environment(tmp_path, {"KAGGLE_KEY": "a stub's"})["KAGGLE_KEY"] == "a stub's"
    process = start_pipeline(tmp_path, "--version", stderr=subprocess.STDOUT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and output.startswith("digit-recognizer "), output
