"""The accuracy estimate a run reports: measured on images no choice was made on, with a 95 % interval.

Two kinds, named in every record and table:
- "cross-validation": out-of-fold accuracy over every train row; each row is predicted by the one
  fold model that never saw it, and nothing (epoch, recipe) is picked on those predictions.
- "holdout": accuracy on the validation part of one split, with the last epoch's weights.

The interval is Wilson's score interval for a binomial proportion, which stays inside [0, 1] and
behaves at accuracies near 1, where the normal approximation does not.
"""

import math
from dataclasses import dataclass, fields

import numpy as np

Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the 95 % Wilson score interval for correct successes out of total."""
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}.")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must lie in 0..{total}, got {correct}.")
    share = correct / total
    denominator = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


@dataclass(frozen=True)
class Estimate:
    """An accuracy estimate as train (or blend) records it in run.json and its stage record; the optional fields
    are the details make_estimate was given (None: not recorded)."""

    accuracy: float
    low: float
    high: float
    kind: str  # "cross-validation" or "holdout"
    images: int
    errors: int
    folds: int | None = None
    tta: bool | None = None
    models_per_row: int | None = None
    model_accuracy_mean: float | None = None  # the measured models' own accuracies: their mean and spread
    model_accuracy_sd: float | None = None
    blend_of: tuple[str, ...] | None = None  # a blend's runs

    def to_json(self) -> dict:
        """The dict run.json has always held: the six numbers and words, and the details that were recorded."""
        value = {name: getattr(self, name) for name in REQUIRED}
        value.update({item.name: getattr(self, item.name) for item in fields(self)[len(REQUIRED):]
                      if getattr(self, item.name) is not None})
        if self.blend_of is not None:
            value["blend_of"] = list(self.blend_of)
        return value

    @classmethod
    def from_json(cls, value) -> "Estimate | None":
        """The estimate, or None when value has not the shape make_estimate gives it (a run.json edited by hand or
        written by another version reads as a run without an estimate, never as a traceback). A detail of the
        wrong type reads as not recorded."""
        value = valid_estimate(value)
        if value is None:
            return None
        details = {}
        for name, kinds in DETAILS.items():
            detail = value.get(name)
            if isinstance(detail, kinds) and (bool in kinds or not isinstance(detail, bool)):
                details[name] = detail
        blend_of = value.get("blend_of")
        if isinstance(blend_of, list) and all(isinstance(run_id, str) for run_id in blend_of):
            details["blend_of"] = tuple(blend_of)
        return cls(**{name: value[name] for name in REQUIRED}, **details)


REQUIRED = ("accuracy", "low", "high", "kind", "images", "errors")
DETAILS = {"folds": (int,), "tta": (bool,), "models_per_row": (int,), "model_accuracy_mean": (int, float),
           "model_accuracy_sd": (int, float)}


def make_estimate(probabilities: np.ndarray, labels: np.ndarray, kind: str, **details) -> Estimate:
    """The Estimate of the predicted labels: accuracy, its interval, images and errors, and the details given."""
    predictions = np.asarray(probabilities).argmax(axis=1)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels.")
    correct = int((predictions == labels).sum())
    low, high = wilson_interval(correct, len(labels))
    if details.get("blend_of") is not None:
        details["blend_of"] = tuple(details["blend_of"])
    return Estimate(accuracy=correct / len(labels), low=low, high=high, kind=kind, images=int(len(labels)),
                    errors=int(len(labels) - correct), **details)


def describe(estimate: "Estimate | dict | None", missing: str = "no estimate", unit: str = "images") -> str:
    """One phrase for a terminal, a table or the report (which says "digits"):
    '0.9952 (95 % interval 0.9945-0.9958, cross-validation on 42,000 images)'; missing when there is none
    (anything else is read as run.json holds it)."""
    if not isinstance(estimate, Estimate):
        estimate = Estimate.from_json(estimate)
    if not estimate:
        return missing
    return (f"{estimate.accuracy:.4f} (95 % interval {estimate.low:.4f}-{estimate.high:.4f},"
            f" {estimate.kind} on {estimate.images:,} {unit})")


def short_kind(estimate: Estimate) -> str:
    """The kind for a table column: 'holdout' or '5-fold CV'."""
    return f"{estimate.folds}-fold CV" if estimate.kind == "cross-validation" else "holdout"


def _is_number(value, lowest: float, highest: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and lowest <= value <= highest


def valid_estimate(value) -> dict | None:
    """The estimate when it has the shape estimate.make_estimate gives it, else None: a run.json edited by hand
    or written by another version is read as a run without an estimate, never as a traceback."""
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        return None
    if not all(_is_number(value.get(name), 0, 1) for name in ("accuracy", "low", "high")):
        return None
    if not all(_is_number(value.get(name), 0, math.inf) for name in ("images", "errors")):
        return None
    return value
