"""Typed records: what one module writes and another reads, as frozen dataclasses.

Each has `to_json()` (the dict on disk, in the shape earlier versions wrote) and `from_json(value)`, lenient:
a record edited by hand or written by another version reads as None, or as a record without the field
that is wrong, never as a traceback. The estimate is pipeline.core.estimate.Estimate.

A run's folder (pipeline.core.config.Paths names its files) has one writer per file: run.json (`Run`,
without the composed fields) by train or blend, submission.json (`SubmissionRecord`) by predict or blend,
report.json (`ReportRecord`) by report, tune.json (`TuneMark`) by tune; Kaggle's scores stay in the log of
submissions sent. pipeline.core.runs composes a `Run` from all of them.
"""

from dataclasses import dataclass, field, fields, replace

from pipeline.core.estimate import Estimate


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _score_text(value) -> str:
    """A score as the text Kaggle gave ("" when none); a number written by hand reads as its text."""
    if isinstance(value, str):
        return value
    return str(value) if _number(value) is not None else ""


@dataclass(frozen=True)
class Leaderboard:
    """What Kaggle said of a run's latest submission: its number, status and scores as Kaggle's text."""

    ref: int | None = None
    status: str = "PENDING"  # PENDING, COMPLETE or ERROR
    public_score: str = ""
    private_score: str = ""
    error: str = ""
    date: str = ""

    @property
    def score(self) -> float | None:
        """The public score as a number; None when not scored (yet)."""
        try:
            return float(self.public_score) if self.status == "COMPLETE" else None
        except ValueError:
            return None

    def to_json(self) -> dict:
        return {"ref": self.ref, "status": self.status,
                **{name: getattr(self, name) for name in ("public_score", "private_score", "error", "date")
                   if getattr(self, name)}}

    @classmethod
    def from_json(cls, value) -> "Leaderboard | None":
        """From run.json's "leaderboard" (earlier versions) or an entry of the log of submissions sent."""
        if not isinstance(value, dict):
            return None
        return cls(ref=_count(value.get("ref")), status=_text(value.get("status")) or "PENDING",
                   public_score=_score_text(value.get("public_score")),
                   private_score=_score_text(value.get("private_score")),
                   error=_text(value.get("error")) or "", date=_text(value.get("date")) or "")


@dataclass(frozen=True)
class PartSummary:
    """One trained model of a run, as train records it in run.json's "parts" (pipeline.training.parts makes it)."""

    name: str
    seed: int | None = None
    train_images: int = 0
    multiply_adds: int | None = None
    architecture: str | None = None  # with --alternate, the models of a run differ
    width: float | None = None
    deskew: bool | None = None  # True when its network deskews its images; None otherwise and in older runs
    validation_images: int | None = None  # None: the model on all rows, measured on nothing
    accuracy: float | None = None  # on its validation images
    best_epoch: int | None = None
    best_epoch_accuracy: float | None = None
    pseudo_labelled_images: int | None = None
    repeated_images: int | None = None  # --rare-looks: images an epoch beyond its rows, rare looks again
    epochs: int | None = None  # its own, when not the run's (--rare-looks and --pseudo-label cut them)
    tuned_from: str | None = None  # --pseudo-tune: the measured model it went on from, which no longer predicts
    worker: str | None = None  # the Ray worker that trained it

    @property
    def images_an_epoch(self) -> int:
        return self.train_images + (self.repeated_images or 0)

    def to_json(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self) if getattr(self, item.name) is not None}

    @classmethod
    def from_json(cls, value) -> "PartSummary | None":
        if not isinstance(value, dict) or _text(value.get("name")) is None:
            return None
        return cls(name=value["name"], seed=_count(value.get("seed")),
                   train_images=_count(value.get("train_images")) or 0,
                   multiply_adds=_count(value.get("multiply_adds")), architecture=_text(value.get("architecture")),
                   width=_number(value.get("width")), deskew=True if value.get("deskew") is True else None,
                   validation_images=_count(value.get("validation_images")),
                   accuracy=_number(value.get("accuracy")), best_epoch=_count(value.get("best_epoch")),
                   best_epoch_accuracy=_number(value.get("best_epoch_accuracy")),
                   pseudo_labelled_images=_count(value.get("pseudo_labelled_images")),
                   repeated_images=_count(value.get("repeated_images")), epochs=_count(value.get("epochs")),
                   tuned_from=_text(value.get("tuned_from")), worker=_text(value.get("worker")))


@dataclass(frozen=True)
class SubmissionRecord:
    """predict's own record in the run folder (submission.json): the submission file it wrote."""

    submission: str  # relative to the project root when inside it (pipeline.core.cache.relative_name)
    rows: int | None = None
    tta: bool | None = None
    final_weight: float | None = None  # the model on all rows' weight in the average (--final-weight)
    seconds: float | None = None

    def to_json(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self) if getattr(self, item.name) is not None}

    @classmethod
    def from_json(cls, value) -> "SubmissionRecord | None":
        if not isinstance(value, dict) or not _text(value.get("submission")):
            return None
        tta = value.get("tta")
        return cls(value["submission"], _count(value.get("rows")), tta if isinstance(tta, bool) else None,
                   _number(value.get("final_weight")), _number(value.get("seconds")))


@dataclass(frozen=True)
class ReportRecord:
    """report's own record in the run folder (report.json): the page it wrote."""

    index: str  # relative to the project root when inside it

    def to_json(self) -> dict:
        return {"index": self.index}

    @classmethod
    def from_json(cls, value) -> "ReportRecord | None":
        return cls(value["index"]) if isinstance(value, dict) and _text(value.get("index")) else None


@dataclass(frozen=True)
class TuneMark:
    """tune's own record in the run folder (tune.json): which trial of which search the run was."""

    trial: int
    trials: int | None = None
    search_seed: int | None = None

    def to_json(self) -> dict:
        return {"trial": self.trial, "trials": self.trials, "search_seed": self.search_seed}

    @classmethod
    def from_json(cls, value) -> "TuneMark | None":
        if not isinstance(value, dict) or _count(value.get("trial")) is None:
            return None
        return cls(value["trial"], _count(value.get("trials")), _count(value.get("search_seed")))


# run.json's fields that other stages' records supply (earlier versions wrote them into run.json itself).
COMPOSED = ("submission", "report", "leaderboard", "tune")


@dataclass(frozen=True)
class Run:
    """A run's summary: what train (or blend) writes to run.json, plus what predict, report, tune and the
    log of submissions sent say of it (`submission`, `report`, `leaderboard`, `tune`: composed by
    pipeline.core.runs, never written to run.json). Keys it does not know are kept in `other`."""

    id: str
    date: str = ""
    source: str | None = None
    preset: str | None = None
    params: dict = field(default_factory=dict)  # TrainingConfig.as_dict(); a blend's {"blend_of": ...}
    split: dict = field(default_factory=dict)
    estimate: Estimate | None = None
    no_estimate: str | None = None  # a blend's reason for having none
    parts: tuple[PartSummary, ...] = ()
    work: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # the train arrays' digests, by file name
    durations_s: dict = field(default_factory=dict)
    models: tuple[str, ...] = ()
    engine: str | None = None
    devices: str | None = None
    tensorboard: str | None = None
    blend: dict | None = None  # {"runs", "weights"} of a blend
    submission: str | None = None
    report: str | None = None
    leaderboard: Leaderboard | None = None
    tune: TuneMark | None = None
    other: dict = field(default_factory=dict)

    @property
    def public_score(self) -> float | None:
        return self.leaderboard.score if self.leaderboard else None

    @property
    def accuracy(self) -> float:
        """The estimated accuracy; 0 for runs made before estimates existed."""
        return self.estimate.accuracy if self.estimate else 0.0

    def to_json(self) -> dict:
        """run.json's dict: every field that is set (`other` included), the composed ones too."""
        value = dict(self.other)
        for item in fields(self):
            field_value = getattr(self, item.name)
            if item.name == "other" or field_value is None:
                continue
            if item.name in ("estimate", "leaderboard", "tune"):
                field_value = field_value.to_json()
            elif item.name == "parts":
                field_value = [part.to_json() for part in field_value]
            elif item.name == "models":
                field_value = list(field_value)
            value[item.name] = field_value
        return value

    def run_json(self) -> dict:
        """What train (or blend) writes to run.json: the composed fields left out."""
        return {name: value for name, value in self.to_json().items() if name not in COMPOSED}

    @classmethod
    def from_json(cls, value, run_id: str = "") -> "Run | None":
        """A run.json's dict (any version); None when it is not a JSON object. run_id: the folder's name, for a
        run.json without an id."""
        if not isinstance(value, dict):
            return None
        known = {item.name for item in fields(cls)}
        parts = value.get("parts") if isinstance(value.get("parts"), list) else []
        models = value.get("models") if isinstance(value.get("models"), list) else []
        return cls(
            id=_text(value.get("id")) or run_id, date=_text(value.get("date")) or "",
            source=_text(value.get("source")), preset=_text(value.get("preset")), params=_dict(value.get("params")),
            split=_dict(value.get("split")), estimate=Estimate.from_json(value.get("estimate")),
            no_estimate=_text(value.get("no_estimate")),
            parts=tuple(part for part in map(PartSummary.from_json, parts) if part is not None),
            work=_dict(value.get("work")), data=_dict(value.get("data")), durations_s=_dict(value.get("durations_s")),
            models=tuple(name for name in models if isinstance(name, str)), engine=_text(value.get("engine")),
            devices=_text(value.get("devices")), tensorboard=_text(value.get("tensorboard")),
            blend=value.get("blend") if isinstance(value.get("blend"), dict) else None,
            submission=_text(value.get("submission")), report=_text(value.get("report")),
            leaderboard=Leaderboard.from_json(value.get("leaderboard")), tune=TuneMark.from_json(value.get("tune")),
            other={name: item for name, item in value.items() if name not in known})

    @classmethod
    def of(cls, value) -> "Run":
        """A Run from a Run or a run.json's dict (a dict that is not one reads as an empty run)."""
        if isinstance(value, Run):
            return value
        return cls.from_json(value) or cls(id="")

    def with_records(self, **records) -> "Run":
        """The run with what other records say of it (submission, report, leaderboard, tune, durations_s with
        predict's seconds); a None keeps the run's own value (an earlier version's run.json held them)."""
        return replace(self, **{name: value for name, value in records.items() if value is not None})


def leaderboard_gap(run: Run) -> tuple[float, bool] | None:
    """(score - estimate in percentage points, whether the score lies inside the estimate's 95 % interval),
    None without both."""
    score, estimate = run.public_score, run.estimate
    if score is None or not estimate:
        return None
    return (score - estimate.accuracy) * 100, estimate.low <= score <= estimate.high


def describe_gap(run: Run, short: bool = False) -> str:
    """'+0.12 points, inside the 95 % interval' ('+0.12 in' when short); '' without a score and an estimate."""
    gap = leaderboard_gap(Run.of(run))
    if gap is None:
        return ""
    points, inside = gap
    if short:
        return f"{points:+.2f} {'in' if inside else 'out'}"
    return f"{points:+.2f} points from the estimate, {'inside' if inside else 'outside'} its 95 % interval"
