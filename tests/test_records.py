"""The typed records (pipeline.core.records, pipeline.core.estimate.Estimate): to_json and from_json agree, and a
record edited by hand or written by another version reads leniently, never as a traceback."""

import json

import pytest

from pipeline.core.estimate import Estimate
from pipeline.core.records import (
    Leaderboard,
    PartSummary,
    ReportRecord,
    Run,
    SubmissionRecord,
    TuneMark,
    describe_gap,
)
from pipeline.training.parts import PartResult

ESTIMATE = Estimate(accuracy=0.9952, low=0.9945, high=0.9958, kind="cross-validation", images=42000, errors=202,
                    folds=5, tta=True, models_per_row=1, model_accuracy_mean=0.995, model_accuracy_sd=0.001)
PART = PartSummary(name="fold-0", seed=42, train_images=33600, multiply_adds=15_162_752, validation_images=8400,
                   accuracy=0.995, best_epoch=18, best_epoch_accuracy=0.996, worker="host pid 1")
RUN = Run(id="20260101-120000-cnn", date="2026-01-01 12:00:00", source="kaggle:digit-recognizer", preset="best",
          params={"architecture": "cnn", "epochs": 18}, split={"folds": 5, "seed": 42}, estimate=ESTIMATE,
          parts=(PART, PartSummary(name="all-rows", seed=47, train_images=42000, pseudo_labelled_images=27000)),
          work={"units": 100.0}, data={"train_images.npy": "ab" * 8}, durations_s={"train": 1000.0},
          models=("data/models/x/fold-0.keras",), engine="local", devices="CPU", other={"future": [1, 2]})


@pytest.mark.parametrize("record", [
    ESTIMATE, Estimate(0.5, 0.4, 0.6, "holdout", 10, 5), Estimate(0.5, 0.4, 0.6, "holdout", 10, 5, blend_of=("a", "b")),
    PART, Leaderboard(ref=7, status="COMPLETE", public_score="0.99543", private_score="0.99500"),
    SubmissionRecord("submissions/x.csv", rows=28000, tta=False, final_weight=2.0, seconds=3.5),
    ReportRecord("data/reports/x/index.html"),
    TuneMark(3, 16, 0), RUN,
])
def test_every_record_round_trips_through_json(record):
    on_disk = json.loads(json.dumps(record.to_json()))
    assert type(record).from_json(on_disk) == record


def test_a_run_with_every_record_round_trips_and_run_json_leaves_the_others_out():
    run = RUN.with_records(submission="submissions/x.csv", report="data/reports/x/index.html",
                           leaderboard=Leaderboard(ref=7, status="PENDING"), tune=TuneMark(2, 4, 0))
    assert Run.from_json(json.loads(json.dumps(run.to_json()))) == run
    written = run.run_json()
    assert not {"submission", "report", "leaderboard", "tune"} & set(written) and written["future"] == [1, 2]
    # the previous format's readers find what they read: the estimate's six fields, the parts' names
    assert written["estimate"]["accuracy"] == 0.9952 and written["estimate"]["folds"] == 5
    assert [part["name"] for part in written["parts"]] == ["fold-0", "all-rows"]
    assert "validation_images" not in written["parts"][1]


def test_a_part_result_round_trips_its_json_facts():
    result = PartResult(model=b"keras bytes", history={"loss": [1.0, 0.5]}, summary=PART)
    assert PartResult.from_json(json.loads(json.dumps(result.to_json())), model=b"keras bytes") == result
    assert PartResult.from_json({"history": "n/a", "summary": PART.to_json()}) is None


@pytest.mark.parametrize("estimate", ["n/a", [0.99], None, {"accuracy": 0.99, "high": 0.995, "kind": "holdout"},
                                      {**ESTIMATE.to_json(), "low": "0.98"}, {**ESTIMATE.to_json(), "accuracy": 1.5}])
def test_a_malformed_estimate_reads_as_none(estimate):
    assert Estimate.from_json(estimate) is None
    run = Run.from_json({"id": "r", "estimate": estimate})
    assert run.estimate is None and run.accuracy == 0.0


def test_malformed_fields_read_as_missing_never_as_a_traceback():
    run = Run.from_json({"id": 7, "date": None, "params": "n/a", "parts": [{"name": 3}, "x", {"name": "ok",
                         "accuracy": "high", "seed": True}], "models": "a.keras", "estimate": {**ESTIMATE.to_json(),
                         "folds": "five", "tta": 1}, "leaderboard": "scored", "tune": {"trial": "3"},
                         "durations_s": [1]}, run_id="folder-name")
    assert run.id == "folder-name" and run.date == "" and run.params == {} and run.models == ()
    assert run.parts == (PartSummary(name="ok"),)
    assert run.estimate.folds is None and run.estimate.tta is None and run.estimate.accuracy == 0.9952
    assert run.leaderboard is None and run.tune is None and run.durations_s == {}
    assert Run.from_json([1, 2]) is None and Run.of("n/a") == Run(id="")
    for record in (PartSummary, SubmissionRecord, ReportRecord, TuneMark, Leaderboard):
        assert record.from_json("n/a") is None
    assert SubmissionRecord.from_json({"submission": ""}) is None and ReportRecord.from_json({"index": 3}) is None


def test_a_score_kaggle_gave_as_text_or_written_by_hand_as_a_number_reads_the_same():
    scored = Run(id="r", estimate=ESTIMATE, leaderboard=Leaderboard.from_json(
        {"ref": 1, "status": "COMPLETE", "public_score": 0.99543}))
    assert scored.public_score == pytest.approx(0.99543) and scored.leaderboard.public_score == "0.99543"
    assert describe_gap(scored, short=True) == "+0.02 in"
    pending = Leaderboard.from_json({"ref": 1, "status": "PENDING", "public_score": ""})
    assert pending.score is None and pending.to_json() == {"ref": 1, "status": "PENDING"}
    assert Leaderboard.from_json({"status": "COMPLETE", "public_score": "n/a"}).score is None
