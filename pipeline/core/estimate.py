"""The accuracy estimate a run reports: measured on images no choice was made on, with a 95 % interval.

Two kinds, named in every record and table:
- "cross-validation": out-of-fold accuracy over every train row; each row is predicted by the one
  fold model that never saw it, and nothing (epoch, recipe) is picked on those predictions.
- "holdout": accuracy on the validation part of one split, with the last epoch's weights.

The interval is Wilson's score interval for a binomial proportion, which stays inside [0, 1] and
behaves at accuracies near 1, where the normal approximation does not.
"""

import math

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


def make_estimate(probabilities: np.ndarray, labels: np.ndarray, kind: str, **details) -> dict:
    """{"accuracy", "low", "high", "kind", "images", "errors", ...details} of the predicted labels."""
    predictions = np.asarray(probabilities).argmax(axis=1)
    labels = np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels.")
    correct = int((predictions == labels).sum())
    low, high = wilson_interval(correct, len(labels))
    return {"accuracy": correct / len(labels), "low": low, "high": high, "kind": kind,
            "images": int(len(labels)), "errors": int(len(labels) - correct), **details}


def describe(estimate: dict | None, missing: str = "no estimate", unit: str = "images") -> str:
    """One phrase for a terminal, a table or the report (which says "digits"):
    '0.9952 (95 % interval 0.9945-0.9958, cross-validation on 42,000 images)'; missing when there is none."""
    if not estimate:
        return missing
    return (f"{estimate['accuracy']:.4f} (95 % interval {estimate['low']:.4f}-{estimate['high']:.4f},"
            f" {estimate['kind']} on {estimate['images']:,} {unit})")


def short_kind(estimate: dict) -> str:
    """The kind for a table column: 'holdout' or '5-fold CV'."""
    return f"{estimate.get('folds')}-fold CV" if estimate["kind"] == "cross-validation" else "holdout"


def public_score(run: dict) -> float | None:
    """The run's public leaderboard score as a number; None when not scored (yet)."""
    leaderboard = run.get("leaderboard") or {}
    try:
        return float(leaderboard["public_score"]) if leaderboard.get("status") == "COMPLETE" else None
    except (KeyError, TypeError, ValueError):
        return None


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


def leaderboard_gap(run: dict) -> tuple[float, bool] | None:
    """(score - estimate in percentage points, whether the score lies inside the estimate's 95 % interval),
    None without both."""
    score, estimate = public_score(run), valid_estimate(run.get("estimate"))
    if score is None or not estimate:
        return None
    return (score - estimate["accuracy"]) * 100, estimate["low"] <= score <= estimate["high"]


def describe_gap(run: dict, short: bool = False) -> str:
    """'+0.12 points, inside the 95 % interval' ('+0.12 in' when short); '' without a score and an estimate."""
    gap = leaderboard_gap(run)
    if gap is None:
        return ""
    points, inside = gap
    if short:
        return f"{points:+.2f} {'in' if inside else 'out'}"
    return f"{points:+.2f} points from the estimate, {'inside' if inside else 'outside'} its 95 % interval"
