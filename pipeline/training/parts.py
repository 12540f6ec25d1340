"""Training a run's parts: one after another in this process, or each as a Ray task of its own
(`train_part`, run in a worker by pipeline.training.engine), exactly as the local loop would train it.
Each part's predictions of the rows it never saw are the run's out-of-fold predictions.
"""

import os
import socket
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.core import config, stage
from pipeline.core.cache import atomic_path, require_free_space
from pipeline.core.console import Console, import_tensorflow_quietly
from pipeline.core.errors import PipelineError
from pipeline.core.records import PartSummary
from pipeline.training.device import use_device
from pipeline.training.engine import Engine, ray_session, run_tasks
from pipeline.training.fit import fit_one_model, save_model
from pipeline.training.plan import Part
from pipeline.training.prediction import predict_probabilities
from pipeline.training.settings import TrainingConfig, configure_tensorflow


@dataclass(frozen=True)
class PartResult:
    """What training one part gives back, here or from a Ray worker (pickled): the model (a Keras model here,
    the saved file's bytes from a worker), its history, its summary (run.json's "parts") and its probabilities of
    the rows it never saw (None for the model on all rows)."""

    model: object
    history: dict
    summary: PartSummary
    probabilities: np.ndarray | None = None

    def to_json(self) -> dict:
        """The part's JSON facts (the model and the probabilities are files of their own)."""
        return {"history": self.history, "summary": self.summary.to_json()}

    @classmethod
    def from_json(cls, value, model=None, probabilities=None) -> "PartResult | None":
        summary = PartSummary.from_json(value.get("summary")) if isinstance(value, dict) else None
        if summary is None or not isinstance(value.get("history"), dict):
            return None
        return cls(model, value["history"], summary, probabilities)


def train_one_part(images, labels, part: Part, training: TrainingConfig, strategy, checkpoints: Path, console,
                   number: int, total: int, images_after: int = 0, tensorboard_dir: Path | None = None):
    """Train one part (resuming from checkpoints/<part>/): its PartResult. The same here and in an engine's
    worker (pipeline.training.parts.train_part)."""
    from pipeline.training import model as model_library  # Keras at its top: loaded only to train

    if part.network is not None:  # --alternate's network for this model
        architecture, width, deskew = part.network
        training = replace(training, architecture=architecture, width=width, deskew=deskew)
    checked_on = (f", checked on {len(part.validation_rows)} it never sees"
                  if part.validation_rows is not None else ", all rows")
    network = (f", {config.network_name(training.architecture, training.width, training.deskew)}"
               if part.network is not None else "")
    console.say(f"train: model {number} of {total} ({part.name}, seed {part.seed}{network}):"
                f" {len(part.train_rows)} images{checked_on}")
    validation = (None, None)
    if part.validation_rows is not None:
        validation = (images[part.validation_rows], labels[part.validation_rows])
    model, state = fit_one_model(
        images[part.train_rows], labels[part.train_rows], *validation, training, part.seed,
        checkpoints / part.name, strategy, log=console.say, images_after=images_after,
        tensorboard_dir=tensorboard_dir / part.name if tensorboard_dir else None, start_from=part.start_from)
    summary = PartSummary(name=part.name, seed=part.seed, train_images=int(len(part.train_rows)),
                          multiply_adds=model_library.multiply_adds(model), architecture=training.architecture,
                          width=training.width, deskew=training.deskew or None)
    if state["images_an_epoch"] != len(part.train_rows) or state["epochs"] != training.epochs:  # --rare-looks
        summary = replace(summary, repeated_images=state["images_an_epoch"] - len(part.train_rows),
                          epochs=state["epochs"])
    if part.start_from is not None:
        summary = replace(summary, tuned_from=part.start_from.stem)
    probabilities = None
    if part.validation_rows is not None:
        probabilities = predict_probabilities([model], validation[0], tta=training.tta, verbose=0)
        curve = state["history"].get("val_accuracy", [])
        summary = replace(summary, validation_images=int(len(part.validation_rows)),
                          accuracy=float((probabilities.argmax(axis=1) == validation[1]).mean()),
                          best_epoch=int(np.argmax(curve)) + 1, best_epoch_accuracy=float(max(curve)))
    return PartResult(model, state["history"], summary, probabilities)


def train_parts(images, labels, parts: list[Part], training: TrainingConfig, strategy, checkpoints: Path,
                run_dir: Path, console, numbering: tuple[int, int] | None = None, tensorboard_dir: Path | None = None,
                engine=None, images_after: int = 0):
    """Train every part and save each as run_dir/<part>.keras: one after another here, or as tasks of
    engine (pipeline.training.engine) when it is "ray". images_after: the images the run's later calls train
    on, for the time left (pipeline.training.plan.images_after_measured).

    Returns (model paths, histories, part summaries (PartSummary), out-of-fold probabilities (N, 10) summed over
    the models that predicted each row, and how many did). Each part resumes from its own
    checkpoint folder, so a killed run redoes only the epochs it had not finished.
    """
    first_number, total = numbering or (1, len(parts))
    out_of_fold = np.zeros((len(labels), config.NUM_CLASSES), dtype=np.float64)
    predicted = np.zeros(len(labels), dtype=np.int64)
    model_paths, histories, summaries = [], [], []
    if engine is not None and engine.name == "ray":
        results = train_parts_on_ray(images, labels, parts, training, checkpoints, (first_number, total),
                                     tensorboard_dir, engine, console)
    else:
        own_images = [training.epochs * len(part.train_rows) for part in parts]
        results = (train_one_part(images, labels, part, training, strategy, checkpoints, console, first_number + index,
                                  total, sum(own_images[index + 1:]) + images_after, tensorboard_dir)
                   for index, part in enumerate(parts))
    for part, result in zip(parts, results):
        path = run_dir / f"{part.name}.keras"
        if isinstance(result.model, bytes):  # from an engine's worker: the saved file itself
            require_free_space(run_dir, len(result.model), path.name)
            with atomic_path(path) as temporary:
                temporary.write_bytes(result.model)
        else:
            save_model(result.model, path)
        if result.probabilities is not None:
            out_of_fold[part.validation_rows] += result.probabilities
            predicted[part.validation_rows] += 1
        model_paths.append(path)
        histories.append(result.history)
        summaries.append(result.summary)
    return model_paths, histories, summaries, out_of_fold, predicted


# ------------------------------------------------------------------------------------- on Ray

def _worker_threads() -> int:
    """The CPUs Ray gave this task: TensorFlow's thread pool is sized to them, not to the whole machine."""
    import ray

    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def train_part(job: dict, images, labels) -> PartResult:
    """One model of a run, in a Ray worker process (a fresh one: max_calls=1): its PartResult, the model as the
    saved file's bytes."""
    if stage.code_digest("train") != job["code"]:
        raise PipelineError(f"the worker on {socket.gethostname()} runs other pipeline code than the driver (train"
                            f" code {stage.code_digest('train')}, expected {job['code']}): check out the same"
                            " commit there and run `make venv`")
    use_device(job["device"])
    import_tensorflow_quietly()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(_worker_threads())
    training = TrainingConfig(**job["training"])
    strategy = configure_tensorflow(training)
    checkpoints = _reachable_folder(Path(job["checkpoints"]))
    with tempfile.TemporaryDirectory() as folder:
        part = job["part"]
        if job.get("start_from") is not None:  # the bytes of the model it goes on from, as the driver read them
            start_from = Path(folder) / part.start_from.name
            start_from.write_bytes(job["start_from"])
            part = replace(part, start_from=start_from)
        result = train_one_part(
            images, labels, part, training, strategy, checkpoints, Console(quiet=job["quiet"]), job["number"],
            job["total"], images_after=0, tensorboard_dir=Path(job["tensorboard"]) if job["tensorboard"] else None)
        path = Path(folder) / "model.keras"
        result.model.save(path)
        model_bytes = path.read_bytes()
    return replace(result, model=model_bytes,
                   summary=replace(result.summary, worker=f"{socket.gethostname()} pid {os.getpid()}"))


def _reachable_folder(folder: Path) -> Path:
    """The driver's checkpoint folder where this node can write it (same machine, shared filesystem),
    else one in this node's temporary folder (a retry on this node still resumes)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
        return folder
    except OSError:
        return Path(tempfile.gettempdir()) / "digit-recognizer-checkpoints" / folder.name


def train_parts_on_ray(images, labels, parts, training, checkpoints: Path, numbering: tuple[int, int],
                       tensorboard_dir: Path | None, engine: Engine, console) -> list[PartResult]:
    """Every part as a Ray task: their PartResults (each model as its file's bytes) in part order."""
    first, total = numbering
    jobs = [{"label": f"model {first + index} ({part.name})", "part": part, "number": first + index, "total": total,
             "training": asdict(training), "code": stage.code_digest("train"), "checkpoints": str(checkpoints),
             "device": engine.device, "quiet": console.quiet,
             "tensorboard": str(tensorboard_dir) if tensorboard_dir else None,
             "start_from": part.start_from.read_bytes() if part.start_from else None}
            for index, part in enumerate(parts)]
    images = np.ascontiguousarray(images)
    with ray_session(engine, images.nbytes):
        return run_tasks(train_part, jobs, engine, console, {"images": images, "labels": labels})
