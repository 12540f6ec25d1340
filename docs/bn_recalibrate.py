"""Batch-norm recalibration of docs/fold_screen.py's fold models (issue 17; docs/experiments.md, 2026-12-04):
every BatchNormalization layer's moving mean and variance replaced by the exact statistics of its input over
the model's own clean training rows, in inference mode (dropout off; layer by layer, upstream layers already
recomputed; the pipeline's own `--recalibrate`, model.recalibrate_batch_norm); the fold is then scored again,
without and with TTA.
Usage: SCREEN_OUT=... PIPELINE_ROOT=... python docs/bn_recalibrate.py ARM FOLD[,FOLD] [partition=style] [on=fold]
[rows=N]. partition=style: fold_screen.py's style folds (SCREEN_OUT/style_folds.npy). on=fold: the statistics of
the held-out fold's own images instead (unlabelled, as the test images would be: AdaBN, Li et al. 2016). rows=N:
only N of the rows, evenly spaced. Reads SCREEN_OUT/ckpt/<arm>-<fold>/epoch-<last>.keras; writes
SCREEN_OUT/bn/<arm>-fold<k>[-on-fold][-rowsN].npz (fold, fold_tta, rows)."""
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

from pipeline.stages import split as split_module  # noqa: E402
from pipeline.training.model import load_model, recalibrate_batch_norm  # noqa: E402
from pipeline.training.prediction import predict_probabilities  # noqa: E402

OUT = Path(os.environ.get("SCREEN_OUT", "data/screen"))
ROOT = Path(os.environ.get("PIPELINE_ROOT", ".")) / "data" / "prepared"
images, labels = np.load(ROOT / "train_images.npy"), np.load(ROOT / "train_labels.npy")
arm, folds = sys.argv[1], [int(fold) for fold in sys.argv[2].split(",")]
options = dict(item.split("=", 1) for item in sys.argv[3:])
if options.get("partition") == "style":
    fold_of_row = np.load(OUT / "style_folds.npy")
else:
    fold_of_row = split_module.stratified_folds(labels, 5, 0)
on_fold = options.get("on", "train") == "fold"
most_rows = int(options.get("rows", 0))  # rows=N: N of the rows, evenly spaced, instead of all
(OUT / "bn").mkdir(exist_ok=True)


for fold in folds:
    train_rows, held = np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold)
    checkpoint = max((OUT / "ckpt" / f"{arm}-{fold}").glob("epoch-*.keras"), key=lambda path: int(path.stem[6:]))
    model = load_model(checkpoint)
    truth = labels[held]
    record = {"arm": arm, "fold": fold, "on": "fold" if on_fold else "train"}
    for when in ("before", "after"):
        if when == "after":
            rows = held if on_fold else train_rows
            recalibrate_batch_norm(model, images[rows], batch_size=2048, most_images=most_rows or len(rows))
        probabilities = predict_probabilities([model], images[held])
        with_tta = predict_probabilities([model], images[held], tta=True)
        record[when] = int((probabilities.argmax(1) != truth).sum())
        record[f"{when}_tta"] = int((with_tta.argmax(1) != truth).sum())
    name = f"{arm}-fold{fold}" + ("-on-fold" if on_fold else "") + (f"-rows{most_rows}" if most_rows else "")
    np.savez(OUT / "bn" / f"{name}.npz", fold=probabilities, fold_tta=with_tta, rows=held)
    print(json.dumps(record), flush=True)
