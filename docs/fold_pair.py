"""Pairs two arms of docs/fold_screen.py on the folds both have (issue 17's protocol): each arm's errors, the
images one fixes and the other breaks with an exact McNemar p, the two averaged, and how often they disagree on
the test rows; plain and with test-time augmentation (TTA).
Usage: SCREEN_OUT=... PIPELINE_ROOT=... python docs/fold_pair.py ARM_A ARM_B FOLD[,FOLD]"""
import os
import sys
from math import comb
from pathlib import Path

import numpy as np

OUT = Path(os.environ.get("SCREEN_OUT", "data/screen"))
labels = np.load(Path(os.environ.get("PIPELINE_ROOT", ".")) / "data" / "prepared" / "train_labels.npy")
first, second, folds = sys.argv[1], sys.argv[2], [int(fold) for fold in sys.argv[3].split(",")]


def mcnemar(fixed: int, broken: int) -> float:
    """Exact two-sided McNemar p: the chance of a split at least this uneven among fixed + broken coin flips."""
    n = int(fixed + broken)
    tail = sum(comb(n, k) for k in range(min(fixed, broken) + 1)) / 2 ** n if n else 1.0
    return min(1.0, 2 * tail)


for key, title in (("fold", "plain"), ("fold_tta", "with TTA")):
    totals = np.zeros(5, dtype=int)
    print(f"{title}: fold, {first}, {second}, averaged, fixed by {second}, broken by {second}, test rows disagreeing")
    for fold in folds:
        a, b = np.load(OUT / f"{first}-fold{fold}.npz"), np.load(OUT / f"{second}-fold{fold}.npz")
        truth = labels[a["rows"]]
        wrong_a, wrong_b = a[key].argmax(1) != truth, b[key].argmax(1) != truth
        averaged = ((a[key] + b[key]).argmax(1) != truth).sum()
        row = np.array([wrong_a.sum(), wrong_b.sum(), averaged, (wrong_a & ~wrong_b).sum(), (~wrong_a & wrong_b).sum()])
        totals += row
        print(f"  {fold}: {' '.join(map(str, row))} {(a['test'].argmax(1) != b['test'].argmax(1)).sum()}")
    print(f"  pooled: {' '.join(map(str, totals))}, McNemar p = {mcnemar(totals[3], totals[4]):.2f}")
