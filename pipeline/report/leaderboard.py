"""What the report page and `runs` say of a run's submission and of Kaggle's answer to it, in words. Reads the
submission file (whether it is there, its rows): the page itself stays text in, text out.
"""

from pathlib import Path

from pipeline.core import config
from pipeline.core.cache import absolute_path
from pipeline.core.records import Run, SubmissionRecord, describe_gap


def submission_name(submission: str | None, missing: str = "none yet") -> str:
    """The submission's file name, '(deleted)' after it when the file is gone; missing: when there is none."""
    if not submission:
        return missing
    return Path(submission).name + ("" if absolute_path(submission).is_file() else " (deleted)")


def prediction_words(predicted: SubmissionRecord | None, short: bool = False) -> str:
    """How predict made the submission, which need not be as the run was trained (`predict --tta`, `--final-weight`):
    'with test-time augmentation; the model on all rows counted 2 times' ('tta, all-rows x2' when short); '' when
    its record does not say (a blend, an earlier version)."""
    if predicted is None:
        return ""
    words = []
    if predicted.tta is not None:
        words.append(("tta" if predicted.tta else "no tta") if short else
                     f"with{'' if predicted.tta else 'out'} test-time augmentation")
    if predicted.final_weight not in (None, 1):
        words.append(f"all-rows x{predicted.final_weight:g}" if short else
                     f"the model on all rows counted {predicted.final_weight:g} times")
    return (", " if short else "; ").join(words)


def _submission_rows(run: Run) -> int | None:
    """The rows of the run's submission file; None when it has none, or it is gone."""
    path = absolute_path(run.submission) if run.submission else None
    if path is None or not path.is_file():
        return None
    with open(path, "rb") as stream:
        return max(sum(1 for _ in stream) - 1, 0)  # the header apart


def leaderboard_text(run: Run | dict) -> str:
    """What Kaggle said of the run's latest submission, in words."""
    run = Run.of(run)
    leaderboard = run.leaderboard
    if not leaderboard:
        if run.source == "sample":
            return "cannot be submitted (the sample)"
        rows = _submission_rows(run)
        if rows is not None and config.kaggle_cannot_score(run.source, rows):  # the user's own data
            return (f"cannot be submitted ({rows:,} test rows, the competition has"
                    f" {config.COMPETITION_TEST_ROWS[config.COMPETITION]:,})")
        return f"not submitted yet ({config.how_to('make submit', 'digit-recognizer submit')})"
    if leaderboard.status == "COMPLETE":
        scores = [f"{leaderboard.public_score} public"]
        if leaderboard.private_score:
            scores.append(f"{leaderboard.private_score} private")
        gap = describe_gap(run)
        return f"{', '.join(scores)} (submission {leaderboard.ref}){f'; {gap}' if gap else ''}"
    if leaderboard.status == "ERROR":
        return f"Kaggle could not score submission {leaderboard.ref}: {leaderboard.error}"
    return (f"submission {leaderboard.ref} not scored yet"
            f" ({config.how_to('make submissions', 'digit-recognizer submissions')})")
