"""Adversarial validation (issue 17; docs/experiments.md, 2026-12-05): can a CNN tell train.csv's images from
test.csv's? A small CNN learns "which file" on one half of the 70,000 images and scores the other half, both
ways round; the area under the ROC curve is 0.5 when the two files look alike. The same with the file labels
shuffled (PERMUTE=seed) gives the chance level of this procedure. Per digit, test rows take the class the
first fold model of SCREEN_OUT's `plain` arm predicts, when its file exists.
Usage: PIPELINE_ROOT=... [SCREEN_OUT=...] [PERMUTE=1] python docs/adversarial_check.py [EPOCHS]
Writes SCREEN_OUT/adversarial.npz (score, is_test) unless PERMUTE is set."""
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()
import keras  # noqa: E402
from keras import layers  # noqa: E402

OUT = Path(os.environ.get("SCREEN_OUT", "data/screen"))
ROOT = Path(os.environ.get("PIPELINE_ROOT", ".")) / "data" / "prepared"
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 6
train, test = np.load(ROOT / "train_images.npy"), np.load(ROOT / "test_images.npy")
images = np.concatenate([train, test]).reshape(-1, 28, 28, 1).astype("float32")
is_test = np.r_[np.zeros(len(train)), np.ones(len(test))].astype("float32")
if os.environ.get("PERMUTE"):
    is_test = np.random.default_rng(int(os.environ["PERMUTE"])).permutation(is_test)
halves = np.zeros(len(images), bool)  # half of each file, so both halves hold 60 % train rows
rng = np.random.default_rng(0)
for origin in (0, 1):
    rows = rng.permutation(np.flatnonzero(is_test == origin))
    halves[rows[: len(rows) // 2]] = True

keras.mixed_precision.set_global_policy("mixed_bfloat16")
score = np.zeros(len(images))
for number, learn in enumerate((halves, ~halves)):
    keras.utils.set_random_seed(number)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.Dense(1, activation="sigmoid", dtype="float32")])
    model.compile("adam", "binary_crossentropy")
    started = time.perf_counter()
    model.fit(images[learn], is_test[learn], epochs=epochs, batch_size=128, verbose=0)
    score[~learn] = model.predict(images[~learn], batch_size=1024, verbose=0)[:, 0]
    print(f"half {number}: {time.perf_counter() - started:.0f} s, AUC on the other half "
          f"{roc_auc_score(is_test[~learn], score[~learn]):.4f}")
print(f"both halves: AUC {roc_auc_score(is_test, score):.4f}")

predicted = OUT / "plain-fold0.npz"
if predicted.exists():
    digits = np.r_[np.load(ROOT / "train_labels.npy"), np.load(predicted)["test"].argmax(1)]
    for digit in range(10):
        rows = digits == digit
        print(f"digit {digit}: {int((rows & (is_test == 0)).sum())} train, {int((rows & (is_test == 1)).sum())} test,"
              f" AUC {roc_auc_score(is_test[rows], score[rows]):.4f}")
if not os.environ.get("PERMUTE"):
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "adversarial.npz", score=score, is_test=is_test)
