"""Knowledge-distillation screen (issue 17, docs/experiments.md 2026-12-05 stop 39): docs/fold_screen.py with
each training batch's one-hot labels replaced by a blend of the labels and the probabilities that teacher
models give the same augmented images. The teachers are arms already screened on the same fold (their last
checkpoint under SCREEN_OUT/ckpt/<arm>-<fold>), so they trained on the same 33,600 rows and never saw the fold.
Usage (what fold_screen.py takes, plus):
  KD_TEACHERS=wide+rn90 KD_ALPHA=0.5 KD_T=2 python docs/distill_screen.py ARM FOLD[,FOLD] [key=value ...]
target = KD_ALPHA * label + (1 - KD_ALPHA) * softmax(mean of the teachers' log-probabilities / KD_T)."""
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # as fold_screen.py does: TensorFlow's start-up chatter off the terminal
import tensorflow as tf  # noqa: E402

from pipeline.training import augment, fit  # noqa: E402
from pipeline.training import model as model_library  # noqa: E402

OUT = Path(os.environ.get("SCREEN_OUT", "data/screen"))
TEACHERS = os.environ.get("KD_TEACHERS", "wide+rn90").split("+")
ALPHA, TEMPERATURE = float(os.environ.get("KD_ALPHA", 0.5)), float(os.environ.get("KD_T", 2))
teachers = []  # the current fold's, loaded when its student starts
fit_one_model, make_training_dataset = fit.fit_one_model, augment.make_training_dataset


def fit_with_teachers(*args, **kwargs):
    folder = Path(kwargs.get("checkpoint_folder") or args[6])  # fold_screen names it <arm>-<fold>
    fold = folder.name.rsplit("-", 1)[1]
    teachers.clear()
    for name in TEACHERS:
        checkpoint = fit._Checkpoint(OUT / "ckpt" / f"{name}-{fold}")
        state = checkpoint.load_state()  # state.json names the current model file (written last)
        if state is None:
            sys.exit(f"{checkpoint.folder}: no finished checkpoint of teacher {name}; screen it first")
        teachers.append(model_library.load_model(checkpoint.folder / state["model_file"]))
        print("teacher", checkpoint.folder / state["model_file"], flush=True)
    return fit_one_model(*args, **kwargs)


def distilled_dataset(*args, **kwargs):
    def blend(images, one_hot):
        log_probabilities = [tf.math.log(tf.cast(teacher(images, training=False), tf.float32) + 1e-8)
                             for teacher in teachers]
        soft = tf.nn.softmax(tf.add_n(log_probabilities) / len(teachers) / TEMPERATURE)
        return images, ALPHA * one_hot + (1 - ALPHA) * soft

    return make_training_dataset(*args, **kwargs).map(blend, num_parallel_calls=1).prefetch(2)


fit.fit_one_model, augment.make_training_dataset = fit_with_teachers, distilled_dataset
sys.argv = ["fold_screen.py"] + sys.argv[1:]
runpy.run_path(str(Path(__file__).with_name("fold_screen.py")), run_name="__main__")
