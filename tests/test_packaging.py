"""The project as a Python package: the lock, the wheel, the console script installed into an
environment of its own and run from a folder outside the checkout, the parser's choices."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, run_in_process
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline import __version__
from pipeline.core import config
from pipeline.tools import bench

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def locked_versions(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock; each must carry at least one hash."""
    text = lock.read_text()
    entries = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}[ \\]*\n)+)", text,
                         flags=re.MULTILINE)
    pins = [line for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    assert len(entries) == len(pins), "a pinned line without a hash"
    return {name.lower().replace("_", "-"): version for name, version, _ in entries}


def test_the_locks_pin_and_hash_every_package_and_keep_tests_apart():
    runtime = locked_versions(PROJECT_ROOT / "requirements.txt")
    development = locked_versions(PROJECT_ROOT / "tests" / "requirements.txt")
    # Every declared dependency is locked at a version its range allows: the lock was refreshed.
    for line in PYPROJECT["project"]["dependencies"] + PYPROJECT["dependency-groups"]["setup"]:
        requirement = Requirement(line)
        assert requirement.specifier.contains(runtime[requirement.name], prereleases=True), line
    for line in PYPROJECT["dependency-groups"]["test"] + PYPROJECT["dependency-groups"]["dev"]:
        requirement = Requirement(line)
        assert requirement.specifier.contains(development[requirement.name], prereleases=True), line
    assert {"pip", "setuptools", "tensorflow", "kagglesdk", "urllib3", "filelock"} <= runtime.keys()
    assert not {"pytest", "hypothesis", "ruff"} & runtime.keys()  # users do not install the test tools
    shared = runtime.keys() & development.keys()
    assert all(runtime[name] == development[name] for name in shared)  # one version of each package


def test_the_gpu_lock_is_the_runtime_lock_plus_cuda():
    runtime = locked_versions(PROJECT_ROOT / "requirements.txt")
    gpu = locked_versions(PROJECT_ROOT / "requirements-gpu.txt")
    assert all(gpu[name] == version for name, version in runtime.items())  # the same TensorFlow, numpy, ...
    added = gpu.keys() - runtime.keys()
    assert added and all(name.startswith("nvidia-") for name in added)
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= added


OPTIONAL = {"ray", "tensorboard"}  # the extras a plain install leaves out, each with a lock of its own


def test_a_plain_install_holds_neither_ray_nor_tensorboard_and_each_extra_lock_adds_its_own():
    """`make venv` / `make all` install requirements.txt only; requirements-<extra>.txt is that lock plus the extra."""
    runtime = locked_versions(PROJECT_ROOT / "requirements.txt")
    assert not (OPTIONAL | {"pandas"}) & runtime.keys()
    development = locked_versions(PROJECT_ROOT / "tests" / "requirements.txt")
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == {"gpu", "ray", "tensorboard", "all"}
    assert extras["all"] == ["digit-recognizer-pipeline[ray,tensorboard]"]
    added_by = {}
    for extra in OPTIONAL:
        locked = locked_versions(PROJECT_ROOT / f"requirements-{extra}.txt")
        assert all(locked[name] == version for name, version in runtime.items())
        for line in extras[extra]:
            requirement = Requirement(line)
            assert requirement.specifier.contains(locked[requirement.name], prereleases=True), line
        added_by[extra] = {name: locked[name] for name in locked.keys() - runtime.keys()}
        assert extra in added_by[extra]
        # The tests install every extra beside the test tools: one version of each package across them.
        assert all(development.get(name, version) == version for name, version in added_by[extra].items())
    assert not OPTIONAL & added_by["ray"].keys() & added_by["tensorboard"].keys() - {"ray"}


def test_the_wheel_requires_ray_and_tensorboard_only_with_their_extras(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
        licenses = [name for name in archive.namelist() if "/licenses/" in name]
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
                    if line.startswith("Requires-Dist:")]
    unconditional = {requirement.name for requirement in requirements if requirement.marker is None}
    assert not (OPTIONAL | {"pandas"}) & unconditional and {"tensorflow", "keras", "pyarrow"} <= unconditional
    for extra in OPTIONAL:
        assert any(requirement.name == extra and requirement.marker.evaluate({"extra": extra})
                   for requirement in requirements)
        assert any(requirement.name == "digit-recognizer-pipeline" and requirement.marker.evaluate({"extra": "all"})
                   for requirement in requirements)
    assert "Requires-Python: <3.14,>=3.11" in metadata or "Requires-Python: >=3.11,<3.14" in metadata
    assert "License-Expression: MIT AND CC-BY-SA-3.0" in metadata
    assert "Classifier: Programming Language :: Python :: 3.13" in metadata
    assert any(name.endswith("/licenses/LICENSE") for name in licenses)


# The project's own top-level modules: the package, and the tests' helpers imported by name.
LOCAL_MODULES = {"pipeline", *(path.stem for path in (PROJECT_ROOT / "tests").glob("*.py"))}


def third_party_imports(folder: Path) -> dict[str, set[str]]:
    """{"module level": {...}, "in a function": {...}}: top-level names of the third-party modules imported."""
    found = {"module level": set(), "in a function": set()}
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        in_functions = {id(node) for function in ast.walk(tree)
                        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for node in ast.walk(function)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL_MODULES:
                    found["in a function" if id(node) in in_functions else "module level"].add(top)
    return found


def declared(lines: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in lines}


def test_every_import_is_declared_in_the_group_it_belongs_to():
    """pipeline/ imports at module level only what every install has; Ray and the like only inside the
    functions that use them, from an extra; the tests may also import the test group's tools."""
    distributions = importlib.metadata.packages_distributions()

    def distribution(module: str) -> set[str]:
        return {canonicalize_name(name) for name in distributions.get(module, [module])}

    required = declared(PYPROJECT["project"]["dependencies"])
    optional = set().union(*(declared(lines) for lines in PYPROJECT["project"]["optional-dependencies"].values()))
    test_tools = declared(PYPROJECT["dependency-groups"]["test"])
    package, tests = third_party_imports(PROJECT_ROOT / "pipeline"), third_party_imports(PROJECT_ROOT / "tests")
    for module in package["module level"]:
        assert distribution(module) & required, f"pipeline/ imports {module} at module level: not a dependency"
    for module in package["in a function"]:
        assert distribution(module) & (required | optional), f"pipeline/ imports {module}: not declared"
    for module in tests["module level"] | tests["in a function"]:
        assert distribution(module) & (required | optional | test_tools), f"tests/ import {module}: not declared"
    assert {"ray"} <= package["in a function"] and "ray" not in package["module level"]
    assert {"pandas", "packaging"} <= tests["module level"]
    # Declared but imported nowhere: only what a library needs at run time without importing it by name.
    imported = set().union(*(distribution(module) for found in (package, tests)
                             for module in set().union(*found.values())))
    assert required - imported == set(), required - imported


@pytest.mark.parametrize("args, extra", [
    (["all", "--engine", "ray"], "ray"), (["train", "--engine", "ray"], "ray"), (["tune", "--trials", "2"], "ray"),
    (["all", "--tensorboard"], "tensorboard"), (["train", "--tensorboard"], "tensorboard"),
])
def test_without_the_extra_the_cli_says_in_one_line_what_to_install(tmp_path, monkeypatch, args, extra):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed, for this command only
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = run_in_process(tmp_path, *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert f"needs {extra}" in result.stderr and f"pip install 'digit-recognizer-pipeline[{extra}]'" in result.stderr
    assert not (tmp_path / "data" / "raw").exists()  # refused before anything ran


def test_version_and_choices_come_from_the_parser(tmp_path):
    version = run_in_process(tmp_path, "--version")
    # in a checkout with its commit (review 57 G: 0.1.0 at every commit, and CHANGELOG's upgrade notes name commits)
    commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "log", "-1", "--format=%h, %cs"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert version.returncode == 0
    assert version.stdout.strip() == f"digit-recognizer {__version__} (checkout at commit {commit})"

    help_text = run_in_process(tmp_path, "train", "--help", env={"COLUMNS": "200"}).stdout
    for choices in ("default|quick|best|baseline", "cnn|small|deotte|mlp|nopool|resnet",
                    "auto|float32|mixed_bfloat16|mixed_float16", "default|mirrored"):
        assert choices in help_text
    for option, typo in (("--preset", "quik"), ("--model", "vgg"), ("--precision", "bf16"),
                         ("--strategy", "mirorred")):
        refused = run_in_process(tmp_path, "all", option, typo, env={"COLUMNS": "200"})
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"'{typo}' is not one of" in refused.stderr
    assert not (tmp_path / "data" / "raw").exists()  # refused before anything ran


def test_bench_runs_on_the_zip_download_cached_else_on_the_sample(pipeline_root):
    paths = config.paths()
    assert bench.default_source(paths) == "sample"
    cached = paths.raw / "digit-recognizer.zip"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(config.SAMPLE_ARCHIVE, cached)
    assert bench.default_source(paths) == str(cached)


def test_bench_reads_a_relative_source_from_the_current_folder(pipeline_root, tmp_path, monkeypatch):
    """Each preset runs from the package's folder: `bench --source data.zip` looked for data.zip there, not where the
    user typed it (with the installed `digit-recognizer` command, never found)."""
    from pipeline.core.console import Console

    given = []

    def record_the_source(preset, source, work_dir, options):
        given.append(source)
        raise KeyboardInterrupt  # enough: what the preset would have run on

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    shutil.copyfile(config.SAMPLE_ARCHIVE, tmp_path / "mine" / "data.zip")  # there: bench checks it first now
    monkeypatch.setattr(bench, "run_preset", record_the_source)
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(Console(quiet=True), "mine/data.zip", "quick", [])
    assert given == [str(tmp_path / "mine" / "data.zip")]


def test_bench_holds_the_lock_while_its_presets_run(pipeline_root, monkeypatch):
    """bench never took the checkout's lock: `make clean` removed data/bench and data/raw under its presets."""
    from pipeline.core import clean
    from pipeline.core.console import Console

    cleaned = []

    def try_to_clean(preset, source, work_dir, options):
        cleaned.append(clean.main([str(pipeline_root / "data")]))
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_preset", try_to_clean)
    (pipeline_root / "data" / ".cache").mkdir(parents=True)  # outputs of the pipeline there
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(Console(quiet=True), "sample", "quick", [])
    assert cleaned == [1]


@pytest.mark.parametrize("source", ["", " "])
def test_bench_refuses_an_empty_source(pipeline_root, source):
    from pipeline.core.console import Console
    from pipeline.core.errors import PipelineError

    with pytest.raises(PipelineError, match=r"^--source '\s*': expected sample, or a PATH"):
        bench.run_bench(Console(quiet=True), source, "quick", [])


def build_wheel(folder: Path) -> Path:
    """The wheel of a copy of the project's own files (a build in the checkout would leave build/ there)."""
    source = folder / "source"
    copy_project(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(folder / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    return next((folder / "dist").glob("*.whl"))


def copy_project(source: Path) -> None:
    """The files a build reads, and the sdist ships, copied to source."""
    source.mkdir(parents=True)
    for path in PROJECT_ROOT.glob("*"):
        if path.is_file() and (path.suffix in (".toml", ".md", ".txt", ".in") or path.name in ("LICENSE", "Makefile")):
            shutil.copyfile(path, source / path.name)
    for folder in ("pipeline", "tests", "data/sample"):
        shutil.copytree(PROJECT_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))


def test_the_sdist_holds_the_tests_and_what_they_read_and_they_run_from_it(tmp_path):
    source = tmp_path / "source"
    copy_project(source)
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                    "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path / "dist")],
                   cwd=source, check=True, capture_output=True, timeout=300)
    sdist = next((tmp_path / "dist").glob("*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    unpacked = next((tmp_path / "unpacked").iterdir())
    names = {path.relative_to(unpacked).as_posix() for path in unpacked.rglob("*") if path.is_file()}
    tests = {path.relative_to(PROJECT_ROOT).as_posix() for path in (PROJECT_ROOT / "tests").glob("*.py")}
    assert tests | {"tests/requirements.txt", "LICENSE", "CHANGELOG.md", "requirements.txt",
                    "data/sample/digit-recognizer-sample.zip", "data/sample/test_answers.csv"} <= names
    assert {path.name for path in PROJECT_ROOT.glob("requirements*.txt")} <= names
    assert not any("__pycache__" in name for name in names)
    # A few of its tests, run from the unpacked sdist itself (the whole suite takes minutes).
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_cache.py::test_file_digest_is_the_sha256_of_the_whole_file",
                             "tests/test_packaging.py::test_the_locks_pin_and_hash_every_package_and_keep_tests_apart"],
                            cwd=unpacked, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(unpacked)})
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_installed_console_script_runs_the_sample_outside_the_checkout(tmp_path):
    """The wheel holds the package and the sample; installed into an environment of its own (its
    dependencies borrowed from this one, so nothing is downloaded), `digit-recognizer all` runs
    from an empty folder and writes there, not into site-packages."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"pipeline/cli.py", "pipeline/sample/digit-recognizer-sample.zip",
            "pipeline/sample/test_answers.csv"} <= names
    assert not any(name.startswith(("tests/", "data/", "submissions/")) for name in names)
    assert "digit-recognizer = pipeline.__main__:main" in entry_points

    environment_folder = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment_folder)], check=True, timeout=120)
    site_packages = Path(subprocess.run(
        [str(environment_folder / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # A plain path, not a site dir: this environment's own .pth files (an editable install) stay out.
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "zz-borrowed-dependencies.pth").write_text("\n".join(borrowed) + "\n")
    subprocess.run([str(environment_folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, capture_output=True, timeout=300)

    work = tmp_path / "somewhere-else"
    work.mkdir()
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PIPELINE_ROOT", "PYTHONPATH", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")}
    environment.update(KAGGLE_CONFIG_DIR=str(tmp_path / "no-kaggle-config"), PYTHONUNBUFFERED="1")
    script = environment_folder / "bin" / "digit-recognizer"
    where = subprocess.run([str(environment_folder / "bin" / "python"), "-c",
                            "from pipeline.core import config; print(config.SAMPLE_ARCHIVE)"],
                           cwd=work, env=environment, check=True, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site_packages)  # the installed copy, not the checkout

    before = sorted(path for path in site_packages.rglob("*") if "__pycache__" not in path.parts)
    result = subprocess.run([str(script), "all", "--preset", "quick", "--epochs", "1", "--no-report"], cwd=work,
                            env=environment, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the bundled sample" in result.stdout
    # Its advice in its own words: there is no Makefile where it is installed.
    assert "run `digit-recognizer all` again" in result.stdout.splitlines()[-1]
    assert "`make " not in result.stdout and "make all" not in result.stdout
    listed = subprocess.run([str(script), "runs"], cwd=work, env=environment, capture_output=True, text=True)
    assert "(`digit-recognizer clean --cache` empties it)" in listed.stdout and "`make " not in listed.stdout
    submissions = list((work / "submissions").glob("*.csv"))
    assert len(submissions) == 1 and len(submissions[0].read_text().splitlines()) == 601
    assert (work / "data" / "raw" / "train.csv").is_file() and (work / "data" / "models").is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    for command, advice in (["predict"], "`digit-recognizer train`"), (["prepare"], "`digit-recognizer download`"):
        refused = subprocess.run([str(script), *command], cwd=empty, env=environment, capture_output=True, text=True)
        assert refused.returncode == 1 and advice in refused.stderr and "python -m" not in refused.stderr
    assert sorted(path for path in site_packages.rglob("*") if "__pycache__" not in path.parts) == before
