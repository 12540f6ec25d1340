"""Paired fold screen of accuracy levers (issue 17), on the prepared full-size arrays of PIPELINE_ROOT
(`download --source <zip>` and `prepare` there first). Results and checkpoints go to SCREEN_OUT (default
data/screen); a killed screen resumes from its checkpoints. docs/experiments.md has what it measured.
Usage: python docs/fold_screen.py ARM[,ARM] FOLD[,FOLD] [key=value ...]
Arms: plain (seed 42+fold) and plain2 (seed 142+fold), which never take the overrides, pseudo... (learns the
confident labels that plain, or the arms of source=a+b averaged, give its held-out fold and the test rows,
14 epochs unless epochs=N; it takes the other overrides too, e.g. rare=2), any other name = plain with the
overrides given (key=value; seed_offset=N trains seed 42+fold+N).
partition=N (every arm): the folds of another 5-fold partition (stratified_folds' seed N; 0 by default), to
see whether a lead holds on rows that other folds grouped differently; name its arms apart (p1plain...).
partition=style: folds that hold out whole clusters of look-alike digits (k-means on the pixels' first 50
principal components, 100 clusters a digit, StratifiedGroupKFold): a fold's digits have no near twins among the
training rows, as a new writer's would not (saved as SCREEN_OUT/style_folds.npy; name its arms apart: splain...).
rare_looks=K (or rare=K; the arms that take overrides): the pipeline's --rare-looks, rows of rare looks (look-alike
clusters of the training rows smaller than the median row's) learnt up to K more times an epoch, the epochs cut so
that the images seen stay the same. look_clusters=C: those clusters C a digit instead of the pipeline's 100.
hard=K: the training rows that the out-of-fold models of hard_source=a+b (default splain+srare2, arms of the same
partition on all five folds) give less than hard_below (0.999) for their label learnt K more times, epochs cut alike.
pseudo_copies=K (pseudo arms): each pseudo-labelled image learnt K more times an epoch, the epochs cut alike;
row_copies=K: each labelled training row instead.
calm=K: the model's last K epochs learn the training images without augmentation (calm_strength=S: at S of
the recipe's strength instead of 0), as the predictions see them.
activation=NAME (the arms that take overrides): the networks' convolutions use Keras's activation NAME (e.g.
silu) instead of relu.
watch=1 (pseudo arms): before each epoch, the model so far predicts its pseudo-labelled images; logged: how many
labels among the fold's rows it disagrees with (probability of the label below drop_below, 0.5 by default), wrong
and right. drop_at=D: from epoch D on (0-based, D >= 1), the pseudo-labelled images it disagrees with then are
left out (the small-loss trick: a network fits clean labels before it memorises wrong ones).
Writes SCREEN_OUT/<arm>-fold<k>.npz: probabilities of the fold's rows (and of the test rows)."""
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.console import import_tensorflow_quietly  # noqa: E402
from pipeline.stages import split as split_module  # noqa: E402
from pipeline.training import fit, looks, settings  # noqa: E402
from pipeline.training import model as model_module  # noqa: E402
from pipeline.training.looks import CLUSTERS_PER_DIGIT, look_clusters  # noqa: E402
from pipeline.training.device import resolve_precision  # noqa: E402
from pipeline.training.prediction import predict_probabilities  # noqa: E402

OUT = Path(os.environ.get("SCREEN_OUT", "data/screen"))
ROOT = Path(os.environ.get("PIPELINE_ROOT", ".")) / "data" / "prepared"
OUT.mkdir(parents=True, exist_ok=True)
arms, folds = sys.argv[1].split(","), [int(f) for f in sys.argv[2].split(",")]
overrides = dict(item.split("=", 1) for item in sys.argv[3:])
if "rare" in overrides:  # the earlier name of rare_looks=K (the pipeline's --rare-looks)
    overrides["rare_looks"] = overrides.pop("rare")
if "look_clusters" in overrides:  # rare looks among finer or coarser clusters (style_folds keeps its 100)
    looks.CLUSTERS_PER_DIGIT = int(overrides.pop("look_clusters"))
import_tensorflow_quietly()
from pipeline.training import augment  # noqa: E402  (TensorFlow at its top: after the quiet import)

pipeline_epochs = augment.make_training_dataset  # each arm starts from it; calm= and watch= wrap it
images = np.load(ROOT / "train_images.npy")
labels = np.load(ROOT / "train_labels.npy")
test = np.load(ROOT / "test_images.npy")


def style_folds(images, labels, clusters_per_digit=CLUSTERS_PER_DIGIT, seed=0):
    """The fold of every row when whole clusters of look-alike digits are held out together."""
    from sklearn.model_selection import StratifiedGroupKFold

    features, groups = look_clusters(images, labels, clusters_per_digit, seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(features, labels, groups)):
        assignment[held] = fold
    return assignment


if overrides.get("partition") == "style":
    if not (OUT / "style_folds.npy").exists():
        np.save(OUT / "style_folds.npy", style_folds(images, labels))
    fold_of_row = np.load(OUT / "style_folds.npy")
    if len(fold_of_row) != len(labels):  # made for other prepared arrays
        sys.exit(f"{OUT / 'style_folds.npy'}: {len(fold_of_row)} rows, the train rows are {len(labels)}; delete it")
else:
    fold_of_row = split_module.stratified_folds(labels, 5, int(overrides.get("partition", 0)))


def out_of_fold_truth(source_arms):
    """Every row's probability of its own label, TTA, averaged over the arms whose fold models never saw it."""
    truth = np.zeros(len(labels))
    for name in source_arms.split("+"):
        for source_fold in range(5):
            result = np.load(OUT / f"{name}-fold{source_fold}.npz")
            truth[result["rows"]] += result["fold_tta"][np.arange(len(result["rows"])), labels[result["rows"]]]
    return truth / len(source_arms.split("+"))


relu_block = model_module._conv_block


def other_activation_block(*args, activation="relu", **kwargs):
    """activation=NAME: every convolution block that would use relu uses NAME instead."""
    return relu_block(*args, activation=overrides["activation"] if activation == "relu" else activation, **kwargs)


base = settings.training_config(settings.resolve_preset("default"))
# plain stays the recipe every earlier screen paired with: `default` without its rare looks (stop 43 added them)
base = replace(base, precision=resolve_precision(base.precision), rare_looks=0)
# hard=K: every row's difficulty, read once for all the screen's folds
truth_out_of_fold = out_of_fold_truth(overrides.get("hard_source", "splain+srare2")) if "hard" in overrides else None
def calm_datasets(folder, training, rows, calm_epochs, calm_strength):
    """Make fit's epochs from the model's last calm_epochs on at calm_strength (the model's epochs: the run's,
    or with rare looks those fit cuts them to, from the rows it saved in the checkpoint folder)."""
    augmented_dataset = augment.make_training_dataset

    def epoch_dataset(*args, **kwargs):
        epochs = training.epochs
        if training.rare_looks:
            repeated = len(np.load(folder / fit.RARE_LOOK_ROWS))
            epochs = looks.epochs_for_same_images(training.epochs, rows, repeated)
        if args[4] >= epochs - calm_epochs:  # args: images, labels, batch_size, seed, epoch
            kwargs = dict(kwargs, strength=kwargs.get("strength", 1.0) * calm_strength)
        return augmented_dataset(*args, **kwargs)
    augment.make_training_dataset = epoch_dataset


def watched_datasets(folder, labelled, fold_truth, watch, drop_at, drop_below):
    """watch=1 / drop_at=D: before each epoch, the model so far (its checkpoint) judges the pseudo-labelled images
    (those after the first `labelled`; the first len(fold_truth) of them the fold's rows, whose truth is known);
    from epoch drop_at on, those it gave less than drop_below for their label are left out."""
    augmented_dataset = augment.make_training_dataset
    kept = {}

    def epoch_dataset(images, labels, *args, **kwargs):
        epoch = args[2]  # args: batch_size, seed, epoch
        if epoch >= 1 and (epoch <= drop_at or watch):
            state = json.loads((folder / "state.json").read_text())
            judge = model_module.load_model(folder / state["model_file"])
            pseudo_labels = labels[labelled:]
            probs = predict_probabilities([judge], images[labelled:])
            doubted = probs[np.arange(len(probs)), pseudo_labels] < drop_below
            fold_doubted, fold_wrong = doubted[:len(fold_truth)], pseudo_labels[:len(fold_truth)] != fold_truth
            log(f"epoch {epoch}: doubts {int(doubted.sum())} of {len(doubted)} pseudo-labels; among the fold's"
                f" {int((fold_doubted & fold_wrong).sum())} of {int(fold_wrong.sum())} wrong,"
                f" {int((fold_doubted & ~fold_wrong).sum())} of {int((~fold_wrong).sum())} right")
            if epoch == drop_at:
                kept["rows"] = np.concatenate([np.arange(labelled), labelled + np.flatnonzero(~doubted)])
                np.save(folder / "kept_rows.npy", kept["rows"])
        if drop_at and epoch >= drop_at:
            if "rows" not in kept:  # resumed after drop_at
                kept["rows"] = np.load(folder / "kept_rows.npy")
            images, labels = images[kept["rows"]], labels[kept["rows"]]
        return augmented_dataset(images, labels, *args, **kwargs)
    augment.make_training_dataset = epoch_dataset


def log(text):
    print(time.strftime("%H:%M:%S"), text, flush=True)
for fold in folds:
    train_rows, held = np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold)
    for arm in arms:
        out = OUT / f"{arm}-fold{fold}.npz"
        if out.exists():
            continue
        training, seed = base, 42 + fold + int(overrides.get("seed_offset", 0))  # seed_offset=100: another seed
        x, y = images[train_rows], labels[train_rows]
        extra = {}
        if arm == "plain2":
            seed = 142 + fold
        elif arm.startswith("pseudo"):
            # source=plain+batch32: the arms (of this fold, so none saw its labels) whose averaged probabilities label
            sources = [np.load(OUT / f"{name}-fold{fold}.npz") for name in overrides.get("source", "plain").split("+")]
            pool = np.concatenate([images[held], test])
            probs = np.mean([np.concatenate([source["fold"], source["test"]]) for source in sources], axis=0)
            threshold = float(overrides.get("threshold", 0.995))
            rows = np.flatnonzero(probs.max(axis=1) >= threshold)
            x = np.concatenate([x, pool[rows]])
            y = np.concatenate([y, probs[rows].argmax(axis=1)])
            wrong = int((probs[rows[rows < len(held)]].argmax(axis=1) != labels[held][rows[rows < len(held)]]).sum())
            extra = {"pseudo": int(len(rows)), "pseudo_wrong_in_fold": wrong}
            training = replace(training, epochs=14)  # the first pseudo screens' epochs; epochs=N overrides
            log(f"{arm} fold {fold}: {len(rows)} pseudo-labels ({wrong} wrong among the fold's)")
        if arm not in ("plain", "plain2"):  # the references: the overrides are the other arms' (plain,x K a=b)
            values = {k: type(getattr(base, k))(v) for k, v in overrides.items() if hasattr(base, k)}
            training = replace(training, **values)
            if "hard" in overrides:
                hard = np.flatnonzero(truth_out_of_fold[train_rows] < float(overrides.get("hard_below", 0.999)))
                order = np.concatenate([np.arange(len(y))] + [hard] * int(overrides["hard"]))
                x, y = x[order], y[order]
                training = replace(training, epochs=looks.epochs_for_same_images(training.epochs, len(train_rows),
                                                                                len(order)))
                extra = {**extra, "hard_rows": int(len(hard)), "hard_copies": int(len(order) - len(train_rows))}
                log(f"{arm} fold {fold}: {len(hard)} hard rows repeated {overrides['hard']} more times,"
                    f" {training.epochs} epochs")
        labelled, pseudo_images = len(train_rows), len(y) - len(train_rows)  # a pseudo arm's images come after
        for name, first, count in (("pseudo_copies", labelled, pseudo_images), ("row_copies", 0, labelled)):
            copies = int(overrides.get(name, 0))  # pseudo arms: those images K more times an epoch, epochs cut alike
            if copies and arm.startswith("pseudo"):
                repeated = np.arange(first, first + count)
                order = np.concatenate([np.arange(len(y))] + [repeated] * copies)
                training = replace(training, epochs=looks.epochs_for_same_images(training.epochs, len(y), len(order)))
                x, y = x[order], y[order]
                extra = {**extra, name: copies}
                log(f"{arm} fold {fold}: {name}={copies}, {len(y)} images an epoch, {training.epochs} epochs")
        augment.make_training_dataset = pipeline_epochs  # the last arm's wrappers gone
        folder = OUT / "ckpt" / f"{arm}-{fold}"  # the arm's checkpoints
        calm_epochs = int(overrides.get("calm", 0))
        if calm_epochs:  # calm=K: the last K epochs (after rare looks cut them) at calm_strength, 0 by default
            calm_datasets(folder, training, len(y), calm_epochs, float(overrides.get("calm_strength", 0)))
        watch, drop_at = int(overrides.get("watch", 0)), int(overrides.get("drop_at", 0))
        if arm.startswith("pseudo") and (watch or drop_at):
            fold_truth = labels[held][rows[rows < len(held)]]
            watched_datasets(folder, labelled, fold_truth, watch, drop_at, float(overrides.get("drop_below", 0.5)))
        other_activation = "activation" in overrides and arm not in ("plain", "plain2")  # the references never
        model_module._conv_block = other_activation_block if other_activation else relu_block
        strategy = settings.configure_tensorflow(training)
        started = time.time()
        model, state = fit.fit_one_model(x, y, images[held], labels[held], training, seed, folder, strategy,
                                           log=log)
        seconds = time.time() - started
        fold_probs = predict_probabilities([model], images[held])
        test_probs = predict_probabilities([model], test)
        fold_tta = predict_probabilities([model], images[held], tta=True)
        errors = int((fold_probs.argmax(1) != labels[held]).sum())
        np.savez(out, fold=fold_probs, test=test_probs, fold_tta=fold_tta, rows=held)
        if state["images_an_epoch"] != len(y):  # rare_looks=K: more images an epoch, fewer epochs
            extra = {**extra, "rare_copies": state["images_an_epoch"] - len(y)}
        record = dict(arm=arm, fold=fold, errors=errors, images=len(held), train_images=state["images_an_epoch"],
                      epochs=state["epochs"], seconds=round(seconds), precision=training.precision,
                      tta_errors=int((fold_tta.argmax(1) != labels[held]).sum()), **extra)
        log(json.dumps(record))
        with open(OUT / "results.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
