"""The project as a Python package: the lock, the wheel, the console script installed into an
environment of its own and run from a folder outside the checkout, the parser's choices."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import PROJECT_ROOT, run_pipeline
from pipeline import __version__, bench, config

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
    assert all(gpu[name] == version for name, version in runtime.items())  # the same TensorFlow, ray, ...
    added = gpu.keys() - runtime.keys()
    assert added and all(name.startswith("nvidia-") for name in added)
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= added


def test_version_and_choices_come_from_the_parser(tmp_path):
    version = run_pipeline(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"digit-recognizer {__version__}"

    help_text = run_pipeline(tmp_path, "train", "--help", env={"COLUMNS": "200"}).stdout
    for choices in ("default|quick|best|baseline", "cnn|small|deotte|mlp", "auto|float32|mixed_bfloat16|mixed_float16",
                    "default|mirrored"):
        assert choices in help_text
    for option, typo in (("--preset", "quik"), ("--model", "resnet"), ("--precision", "bf16"),
                         ("--strategy", "mirorred")):
        refused = run_pipeline(tmp_path, "all", option, typo, env={"COLUMNS": "200"})
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


def build_wheel(folder: Path) -> Path:
    """The wheel of a copy of the project's own files (a build in the checkout would leave build/ there)."""
    source = folder / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / name, source / name)
    shutil.copytree(PROJECT_ROOT / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT_ROOT / "data" / "sample", source / "data" / "sample")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--wheel-dir", str(folder / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    return next((folder / "dist").glob("*.whl"))


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
    assert "digit-recognizer = pipeline.cli:main" in entry_points

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
                            "from pipeline import config; print(config.SAMPLE_ARCHIVE)"],
                           cwd=work, env=environment, check=True, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(site_packages)  # the installed copy, not the checkout

    before = sorted(path for path in site_packages.rglob("*") if "__pycache__" not in path.parts)
    result = subprocess.run([str(script), "all", "--preset", "quick", "--epochs", "1", "--no-report"], cwd=work,
                            env=environment, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the bundled sample" in result.stdout
    submissions = list((work / "submissions").glob("*.csv"))
    assert len(submissions) == 1 and len(submissions[0].read_text().splitlines()) == 601
    assert (work / "data" / "raw" / "train.csv").is_file() and (work / "data" / "models").is_dir()
    assert sorted(path for path in site_packages.rglob("*") if "__pycache__" not in path.parts) == before
