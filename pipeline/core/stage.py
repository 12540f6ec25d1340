"""Runs any stage: under the lock, skipped when up to date, restored from the run cache when its
settings were run before, else done, timed, recorded and kept.

A stage module declares one run of itself as a `Definition`: what it reads, its parameters, and
`work`, which writes its outputs and returns them. Its code is part of its key: the source of the
stage module and of every pipeline module it imports (`code_digest`), so a change to any of them
reruns the stage, and through its changed outputs the stages after it, unless that change was checked to
compute the same results (`SAME_RESULTS`).
"""

import ast
import hashlib
import json
import shlex
import time
from dataclasses import dataclass
from functools import cache as remember
from functools import cached_property
from pathlib import Path
from typing import Callable

from pipeline.core import cache, config, run_cache
from pipeline.core.console import Console, format_duration
from pipeline.core.errors import PipelineError
from pipeline.core.same_results import SAME_RESULTS

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the pipeline package, this module being in core/
# Bookkeeping that does not change what any stage computes: not part of a stage's code hash.
NOT_STAGE_CODE = {"core.cache", "core.config", "core.console", "core.ctrl_c", "core.errors", "core.run_cache",
                  "core.runs", "core.same_results", "core.sent_log", "core.stage", "stages.chain", "cli"}


@dataclass
class Definition:
    """One run of a stage, as its module declares it.

    work() -> (outputs, extra): writes the outputs (atomically) and returns their paths and a dict of
    facts for the record. describe(record) -> the one line saying what the stage produced.
    put_back(record): what work writes besides its outputs (the stage's own record in the run folder,
    pipeline.core.records), written again for a result restored from the run cache, or found up to date while
    that file is gone (run.json deleted: the stages after train read it). It writes only what differs.
    after_restore(record): what a result restored from the run cache needs besides (download: the files of
    another source removed), and only then.
    after_record(record): what work leaves until its record is written (train: its checkpoints, so that a record
    that cannot be written costs no training again); done again when the result is found up to date but not yet
    kept in the run cache (a command killed between the record and it).
    """

    name: str
    params: dict
    inputs: list[Path]
    work: Callable[[], tuple[list[Path], dict]]
    describe: Callable[[dict], str]
    put_back: Callable[[dict], None] | None = None
    after_restore: Callable[[dict], None] | None = None
    after_record: Callable[[dict], None] | None = None

    def key(self) -> cache.Stage:
        return cache.Stage(self.name, self.params, self.inputs, code_digest(self.name))

    @cached_property
    def key_values(self) -> dict:
        """The key as a record holds it (its inputs hashed once, here)."""
        return json.loads(json.dumps(self.key().key()))

    @cached_property
    def key_id(self) -> str:
        """A short hash of the key: names this run's kept result and its resumable scratch folder."""
        return _key_id(self.key_values)

    @cached_property
    def kept_key_ids(self) -> list[str]:
        """key_id, then the ids the same key had under each earlier code that SAME_RESULTS maps to this code's: a
        result kept by a commit whose digest was mapped only later (its record holds that digest) is this one's."""
        earlier = _earlier_digests(self.name, self.key_values["code"])
        return [self.key_id, *(_key_id({**self.key_values, "code": digest}) for digest in earlier)]


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _earlier_digests(stage_name: str, digest: str) -> list[str]:
    """The digests of earlier code checked to compute what the code of `digest` computes (SAME_RESULTS)."""
    return [earlier for earlier, replaced in SAME_RESULTS.get(stage_name, {}).items() if replaced == digest]


def same_code(stage_name: str, digest: str) -> str:
    """A recorded code digest as it counts now: mapped through SAME_RESULTS like the current code's own."""
    return SAME_RESULTS.get(stage_name, {}).get(digest, digest)


def _module_file(module_name: str) -> Path:
    """core.cache -> pipeline/core/cache.py"""
    return PACKAGE_DIR.joinpath(*module_name.split(".")).with_suffix(".py")


def _imported_pipeline_modules(module_name: str) -> set[str]:
    """The pipeline modules one module imports, at its top or inside its functions (names as core.cache)."""
    tree = ast.parse(_module_file(module_name).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "pipeline":
            base = node.module.removeprefix("pipeline").removeprefix(".")
            for alias in node.names:  # from pipeline.core import cache: a module; from pipeline.core.cache import x
                named = f"{base}.{alias.name}".lstrip(".")
                found.add(named if _module_file(named).is_file() else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("pipeline.") for alias in node.names
                         if alias.name.startswith("pipeline."))
    return {name for name in found if name and _module_file(name).is_file()}


def stage_modules(module_name: str) -> set[str]:
    """A stage module (stages.train) and the pipeline modules it uses, directly or not (bookkeeping left out)."""
    modules, pending = set(), [module_name]
    while pending:
        name = pending.pop()
        if name not in modules:
            modules.add(name)
            pending.extend(_imported_pipeline_modules(name) - NOT_STAGE_CODE)
    return modules


@remember
def code_digest(stage_name: str) -> str:
    """Hash of the source of the stage's modules (pipeline.stages.<stage_name> and what it uses): a change in
    any of them reruns the stage, unless SAME_RESULTS maps the new hash to the one it replaced."""
    digest = hashlib.sha256()
    for name in sorted(stage_modules(f"stages.{stage_name}")):
        digest.update(name.encode() + b"\0" + _module_file(name).read_bytes())
    return same_code(stage_name, digest.hexdigest()[:16])


# The stage whose outputs each stage reads: a result is current only while every stage above it is.
UPSTREAM = {"prepare": "download", "split": "prepare", "train": "split", "predict": "train", "report": "train"}


# (the stage's words, `all`'s words: make's in a checkout) that make a stage's recorded result again, by stage: set by
# the shell (pipeline.cli) for train, whose preset and options core does not know. Without them, "run train" trained
# the default preset's 20 minutes where the run's own options bring it back from the run cache in a second.
RERUN_WORDS: dict[str, Callable[[dict], tuple[str, str]]] = {}


def rerun_words(stage_name: str, record: dict | None = None) -> tuple[str, str] | None:
    """RERUN_WORDS' words for the record (by default the stage's current one); None when not known."""
    record = record or cache.load_record(stage_name)
    if record is None or stage_name not in RERUN_WORDS:
        return None
    try:
        return RERUN_WORDS[stage_name](record)
    except (KeyError, TypeError, ValueError, PipelineError):  # a record of another version: the plain command
        return None


def _rerun_words(stage_name: str) -> tuple[str, str]:
    return rerun_words(stage_name) or ("", "")  # the plain command


def require(stage_name: str, hint: str, needs: tuple = ()) -> dict:
    """The record of an earlier stage, whose outputs must still be as it wrote them, and made from the
    current outputs of every stage above it: a stage run on its own never builds on an out-of-date result.
    needs: the facts of its `extra` that are read (a record without them, from another version, means run it again)."""
    record = cache.load_record(stage_name)
    if record is None or not cache.outputs_intact(record) or any(name not in record["extra"] for name in needs):
        words = _rerun_words(stage_name)[0]
        installed = hint.replace("python -m pipeline", "digit-recognizer", 1)
        shown = config.how_to(f"`{hint}{words}`", f"`{installed}{words}`")
        raise PipelineError(f"no {stage_name} output yet, or it changed since: run {shown} first")
    stale = stale_upstream(stage_name)
    if stale:
        raise out_of_date(stage_name, *stale)
    return record


def stale_upstream(stage_name: str) -> tuple[str, str] | None:
    """(the stage highest up the chain whose inputs or outputs changed since it ran, the file that changed), from
    stage_name's own inputs up; None when the chain up to stage_name is current: rerun from that stage."""
    stale, name = None, stage_name
    digest_of = remember(cache.path_digest)  # each file hashed once in this walk
    read_below = set()  # the files a stage below read: their change is checked as its input (prepare after an edit)
    while name:
        upstream_record = cache.load_record(name) or {}
        # An earlier stage's outputs too (data/prepared's test images): predict reads them beside train's record.
        changed = cache.changed_input(upstream_record, digest_of) or (
            None if name == stage_name else cache.changed_output(upstream_record, digest_of, skip=read_below))
        if changed:
            stale = (name, changed)
        read_below |= set(upstream_record.get("key", {}).get("inputs", {}))
        name = UPSTREAM.get(name)
    return stale


def require_current_source() -> None:
    """prepare, run on its own, reads download's copies: refused while the user's files they were copied from
    have changed since (it said `up to date`, or repeated an error the user had mended in their own file)."""
    changed = cache.changed_input(cache.load_record("download") or {})
    if changed:
        raise out_of_date("prepare", "download", changed)


def out_of_date(stage_name: str, stale_stage: str, changed: str) -> PipelineError:
    """The error of a result made from inputs that changed since stale_stage ran, with the commands that make it
    again from the same source (without it, `make all` downloads the sample or Kaggle's files instead)."""
    option, variable = download_options()
    # Train's result needed (predict, report): `make all` trains again too, with the run's options, not the default's.
    # Above train it would train the default preset's: not offered.
    words = _rerun_words("train")[0] if stage_name == "train" else ""
    own = option if stale_stage == "download" else words if stale_stage == "train" else ""
    rerun = config.how_to(f"`python -m pipeline {stale_stage}{own}`", f"`digit-recognizer {stale_stage}{own}`")
    also = f", or {all_again()}" if stage_name == "train" and not _split_changed_since_train() else ""
    return PipelineError(f"the {stage_name} result is out of date ({changed} changed since {stale_stage} last ran):"
                         f" run {rerun} and the stages after it{also}")


def _split_changed_since_train() -> bool:
    """The split was made again with other options (`make split FOLDS=3`) since train's run: `make all` with the run's
    options would go back to the run's split (and the run), not train on the new one as `train` does."""
    split = ((cache.load_record("split") or {}).get("key") or {}).get("params")
    trained_on = (((cache.load_record("train") or {}).get("extra") or {}).get("run") or {}).get("split")
    return isinstance(split, dict) and isinstance(trained_on, dict) and split != trained_on


def all_again() -> str:
    """`make all SOURCE=... <the run's options>`: the chain again from the current source, with the latest run's
    options (the default preset's would train another run)."""
    option, variable = download_options()
    options = _rerun_words("train")[1]
    return config.how_to(f"`make all{variable}{options}`", f"`digit-recognizer all{option}{options}`")


def download_options(record: dict | None = None) -> tuple[str, str]:
    """(' --source PATH', ' SOURCE=PATH') for data from the user's own folder or zip, (' --competition C',
    ' COMPETITION=C') for another competition's; empty for the default source (the sample, or Kaggle's files).
    record: a download record (the run cache's), by default the current one."""
    extra = ((cache.load_record("download") if record is None else record) or {}).get("extra") or {}
    source, path = extra.get("source"), extra.get("source_path")
    if source in ("folder", "zip") and isinstance(path, str):
        shown = shlex.quote(str(cache.absolute_path(path)))
        return f" --source {shown}", f" SOURCE={shown}"
    if isinstance(source, str) and source.startswith("kaggle:") and source != f"kaggle:{config.COMPETITION}":
        competition = shlex.quote(source.split(":", 1)[1])
        return f" --competition {competition}", f" COMPETITION={competition}"
    return "", ""


def run(define: Callable[..., Definition], console: Console, force: bool = False, **options) -> dict:
    """Run the stage that define(paths, console, **options) declares, unless nothing would change."""
    paths = config.paths()
    upstream = UPSTREAM.get(define.__module__.rsplit(".", 1)[-1])
    # Nothing run here yet: said before the lock makes data/ to hold its file.
    if upstream and not paths.data.is_dir():
        if options.get("run_id") is not None:  # report --run: a run of its own choosing, but there is none
            raise PipelineError(f"--run {options['run_id']}: no runs in {paths.models} yet")
        require(upstream, f"python -m pipeline {upstream}")
    with cache.exclusive_lock():
        definition = define(paths, console, **options)
        key = definition.key()
        record = None if force else cache.up_to_date(key, lambda digest: same_code(definition.name, digest),
                                                      definition.key_values)
        if record is not None:
            if definition.put_back:
                definition.put_back(record)
            if record.get("unkept"):  # the run cache's store could not be written when it was made, or the command
                # was stopped between its record and _keep: what it left (after_record), then keep it now. Only
                # then: a kept result's checkpoints are a later --force retrain's, to resume.
                if definition.after_record:
                    definition.after_record(record)
                record = _keep(paths, definition, record, console)
            console.say(f"{definition.name}: up to date, {definition.describe(record)}")
            return record
        record = None if force else next(filter(None, (run_cache.restore(paths, definition.name, key_id)
                                                         for key_id in definition.kept_key_ids)), None)
        if record is not None:
            for hook in (definition.put_back, definition.after_restore):
                if hook:
                    hook(record)
            console.say(f"{definition.name}: restored from the run cache (first made {record['finished_at']}),"
                        f" {definition.describe(record)}")
            _MADE_HERE.add(definition.name)
            return record
        reason = None if force else _why_again(definition)
        if reason:
            console.say(f"{definition.name}: running again: {reason}")
        record = _work(definition, key)
        _MADE_HERE.add(definition.name)
        # The record first, marked `unkept` until the run cache holds the result: a result is never made again (hours
        # of training) for want of its copy there. A store that cannot be written (a full disk) is a warning.
        cache.write_json(cache.record_path(definition.name), {**record, "unkept": True})
        if definition.after_record:
            definition.after_record(record)
        record = _keep(paths, definition, record, console)
        console.say(_done_line(definition, record))
        return record


def record_rewritten_outputs(definition: Definition, record: dict) -> None:
    """The stage's record made again, under the caller's lock, for its outputs as another command rewrote them, under
    the definition's key (submit's report page with its new score). Marked `unkept`: the next command that finds it
    up to date keeps it in the run cache (_keep)."""
    new = cache.make_record(definition.key(), cache.output_paths(record), record.get("extra"), definition.key_values)
    cache.write_json(cache.record_path(definition.name), {**new, "unkept": True})


# The stages whose result this process made or restored: a stage below them reads new inputs of the chain's own
# making (the user's new --folds, a new source), nothing to explain.
_MADE_HERE: set[str] = set()


def new_command() -> None:
    """Forget the stages made so far: the shell calls it as each command starts (a test runs many in one process)."""
    _MADE_HERE.clear()


def _why_again(definition: Definition) -> str | None:
    """Why a stage with a result runs again, when the user may not know: its code changed (a new version of the
    pipeline: after a `git pull`, every stage said nothing of it), or one of its inputs did outside this command.
    None for new options, which the user gave (theirs, or a stage's above it in this command), or a first run."""
    recorded = (cache.load_record(definition.name) or {}).get("key")
    if not isinstance(recorded, dict):
        return None
    current = definition.key_values
    if recorded.get("params") != current["params"]:
        return None
    code = recorded.get("code")
    if not isinstance(code, str) or same_code(definition.name, code) != current["code"]:
        return "its code changed since its last result (a new version of the pipeline)"
    if _MADE_HERE:
        return None
    before = recorded.get("inputs") if isinstance(recorded.get("inputs"), dict) else {}
    changed = next((name for name, digest in current["inputs"].items() if before.get(name) != digest), None)
    return f"{changed} changed since its last result" if changed else None


def _keep(paths, definition: Definition, record: dict, console: Console) -> dict:
    """Keep the result in the run cache and record it so; a store that cannot be written is a warning, and the
    record says `unkept`, for the next command that finds it up to date to try again (not one after clean-cache)."""
    record = {name: value for name, value in record.items() if name != "unkept"}
    try:
        run_cache.keep(paths, definition.key_id, record)
    except PipelineError as error:
        console.warn(str(error))
        return {**record, "unkept": True}
    cache.write_json(cache.record_path(definition.name), record)
    return record


def _done_line(definition: Definition, record: dict) -> str:
    return f"{definition.name}: {definition.describe(record)} in {format_duration(record['extra']['seconds'])}"


def _work(definition: Definition, key) -> dict:
    """Do the stage's work, timed: its record (not yet written nor kept); key: definition.key(). The key's values are
    the ones hashed before the work (an input changed meanwhile is seen by the next command, not recorded as used)."""
    key_values = definition.key_values
    started = time.perf_counter()
    outputs, extra = definition.work()
    extra["seconds"] = round(time.perf_counter() - started, 2)
    return cache.make_record(key, outputs, extra, key_values)


def kept_result(definition: Definition) -> dict | None:
    """The record the run cache keeps for the definition's key (made by this code or code mapped to it), or None."""
    return next(filter(None, (run_cache.kept_record(config.paths(), definition.name, key_id)
                              for key_id in definition.kept_key_ids)), None)


def run_detached(definition: Definition, console: Console) -> dict:
    """Run a stage without making its result the stage's current one: kept in the run cache only, and
    taken from there when the same key ran before. For tune's trials, which run side by side while the
    caller holds the lock."""
    record = kept_result(definition)
    if record is not None:
        console.say(f"{definition.name}: kept from an earlier run ({record['finished_at']}),"
                    f" {definition.describe(record)}")
        return record
    record = _work(definition, definition.key())
    run_cache.keep(config.paths(), definition.key_id, record)
    if definition.after_record:
        definition.after_record(record)
    console.say(_done_line(definition, record))
    return record
