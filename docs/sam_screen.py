"""Sharpness-aware minimization screen (issue 17, docs/experiments.md 2026-12-05 stop 40): docs/fold_screen.py
with every training step taken SAM's way (Foret et al. 2021): the batch's gradient g, the weights moved
uphill to w + rho g / |g|, the gradient there, the weights moved back, and Adam's step taken with the second
gradient. Two forward and backward passes a batch: a SAM epoch is two units of a plain one, so the
equal-work arm runs half the epochs (epochs=9).
Usage (what fold_screen.py takes): SAM_RHO=0.05 python docs/sam_screen.py ARM FOLD[,FOLD] [key=value ...]
The model is saved as a SAMModel (registered below), so a killed screen resumes with SAM, not without it."""
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.core.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # as fold_screen.py does: TensorFlow's start-up chatter off the terminal
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.training import model as model_library  # noqa: E402

RHO = float(os.environ.get("SAM_RHO", 0.05))


@keras.saving.register_keras_serializable(package="sam_screen")
class SAMModel(keras.Model):
    def train_step(self, data):
        x, y = data
        weights = self.trainable_weights
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        gradients = tape.gradient(loss, weights)
        scale = RHO / (tf.linalg.global_norm(gradients) + 1e-12)
        steps = [gradient * scale for gradient in gradients]
        for weight, step in zip(weights, steps):
            weight.assign_add(step)
        # Batch norm's moving statistics take this second pass too (as in simple SAM ports): measured so.
        with tf.GradientTape() as tape:
            sharp_loss = self._compute_loss(x=x, y=y, y_pred=self(x, training=True), training=True)
        sharp_gradients = tape.gradient(sharp_loss, weights)
        for weight, step in zip(weights, steps):
            weight.assign_sub(step)
        self.optimizer.apply_gradients(zip(sharp_gradients, weights))
        return self.compute_metrics(x, y, y_pred)


build_network = model_library.build_network


def build_sam_network(*args, **kwargs):
    network = build_network(*args, **kwargs)
    return SAMModel(network.inputs, network.outputs, name=network.name)


model_library.build_network = build_sam_network
print(f"SAM, rho {RHO}", flush=True)
sys.argv = ["fold_screen.py"] + sys.argv[1:]
runpy.run_path(str(Path(__file__).with_name("fold_screen.py")), run_name="__main__")
