"""Paired fold screen (issue 17): a finished fold model fine-tuned for a few epochs on its training rows plus the
images it labels itself with confidence (the fold's held-out rows and the test rows, as in fold_screen.py's
pseudo arms), instead of a new model trained from scratch on them. Self-training at a tenth of the cost: the
model learns its own confident labels under augmentation, and its batch-norm statistics meet the new hands.
Usage: SCREEN_OUT=... PIPELINE_ROOT=... python docs/finetune_screen.py ARM FOLD[,FOLD] source=srare2 [epochs=2]
[peak=5e-4] [warmup=0] [threshold=0.9] [labels=a+b]
source: the fold_screen.py arm whose finished checkpoint (SCREEN_OUT/ckpt/<source>-<fold>) is fine-tuned.
labels: the arms whose averaged probabilities label the pool (default: source itself).
The learning rate decays from peak to 0 along a cosine over the epochs (after warmup=E epochs of a linear rise
from peak / 10, if given); Adam starts afresh. threshold=1.01: no pseudo-labels, the training rows alone.
Writes SCREEN_OUT/<arm>-fold<k>.npz like fold_screen.py, and a line to SCREEN_OUT/results.jsonl."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.console import import_tensorflow_quietly  # noqa: E402

OUT = Path(os.environ.get("SCREEN_OUT", "data/screen"))
ROOT = Path(os.environ.get("PIPELINE_ROOT", ".")) / "data" / "prepared"
arm, folds = sys.argv[1], [int(f) for f in sys.argv[2].split(",")]
options = dict(item.split("=", 1) for item in sys.argv[3:])
source = options["source"]
epochs, peak = int(options.get("epochs", 2)), float(options.get("peak", 5e-4))
threshold = float(options.get("threshold", 0.9))
import_tensorflow_quietly()

from pipeline.training import augment, model as model_library  # noqa: E402
from pipeline.training.prediction import predict_probabilities  # noqa: E402

images = np.load(ROOT / "train_images.npy")
labels = np.load(ROOT / "train_labels.npy")
test = np.load(ROOT / "test_images.npy")
fold_of_row = np.load(OUT / "style_folds.npy")  # the style partition: fold_screen.py made it


def log(text):
    print(time.strftime("%H:%M:%S"), text, flush=True)


for fold in folds:
    out = OUT / f"{arm}-fold{fold}.npz"
    if out.exists():
        continue
    train_rows, held = np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold)
    folder = OUT / "ckpt" / f"{source}-{fold}"
    state = json.loads((folder / "state.json").read_text())
    model = model_library.load_model(folder / state["model_file"])
    labellers = [np.load(OUT / f"{name}-fold{fold}.npz") for name in options.get("labels", source).split("+")]
    probs = np.mean([np.concatenate([result["fold"], result["test"]]) for result in labellers], axis=0)
    pool = np.concatenate([images[held], test])
    rows = np.flatnonzero(probs.max(axis=1) >= threshold)
    x = np.concatenate([images[train_rows], pool[rows]])
    y = np.concatenate([labels[train_rows], probs[rows].argmax(axis=1)])
    wrong = int((probs[rows[rows < len(held)]].argmax(axis=1) != labels[held][rows[rows < len(held)]]).sum())
    log(f"{arm} fold {fold}: {len(rows)} pseudo-labels ({wrong} wrong among the fold's), {epochs} epochs at {peak}")
    steps = int(np.ceil(len(y) / 64))
    # warmup=E: E epochs from peak / 10 up to the peak (the pipeline's own schedule; 0: from the peak at once)
    schedule = model_library.recommended_schedule(steps, epochs, peak, warmup_epochs=float(options.get("warmup", 0)))
    model_library.compile_model(model, learning_rate=schedule)
    seed = 42 + fold + 1000
    started = time.time()
    for epoch in range(epochs):
        dataset = augment.make_training_dataset(x, y, 64, seed, epoch)
        result = model.fit(dataset, epochs=1, verbose=0)
        log(f"{arm} fold {fold}: epoch {epoch + 1}/{epochs}, loss {result.history['loss'][-1]:.4f},"
            f" {time.time() - started:.0f} s")
    seconds = time.time() - started
    fold_probs = predict_probabilities([model], images[held])
    test_probs = predict_probabilities([model], test)
    fold_tta = predict_probabilities([model], images[held], tta=True)
    np.savez(out, fold=fold_probs, test=test_probs, fold_tta=fold_tta, rows=held)
    record = dict(arm=arm, fold=fold, errors=int((fold_probs.argmax(1) != labels[held]).sum()), images=len(held),
                  train_images=len(y), epochs=epochs, peak=peak, source=source, seconds=round(seconds),
                  tta_errors=int((fold_tta.argmax(1) != labels[held]).sum()), pseudo=int(len(rows)),
                  pseudo_wrong_in_fold=wrong)
    log(json.dumps(record))
    with open(OUT / "results.jsonl", "a") as stream:
        stream.write(json.dumps(record) + "\n")
