# digit-recognizer pipeline. `make help` lists the targets.
# Options pass through: make all SOURCE=path/to/digit-recognizer.zip PRESET=best EPOCHS=30 SEED=7

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
GPU_STAMP := $(VENV)/.installed-gpu
# Only what the locks name, each file checked against its hash.
PIP_INSTALL := $(PYTHON) -m pip install --quiet --disable-pip-version-check --require-hashes
# The lock: requirements.txt from pyproject.toml's dependencies (and pip, setuptools); tests/requirements.txt
# from its test and dev groups, at the same versions. For every platform, Python 3.11 and newer.
# `make lock` keeps every pin it can; `make lock UPGRADE=1` moves everything to the newest releases allowed.
LOCK_OPTIONS = --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock" --quiet \
	$(if $(UPGRADE),--upgrade,)

# Options given on the make command line become the CLI's options; unset ones keep its defaults.
# Each value is one shell word, single-quoted (a quote inside it as '\''): SOURCE="my data/x.zip" works.
opt = $(if $($(1)),$(2) '$(subst ','\'',$($(1)))',)
# A switch: VAR=1 gives --NAME, VAR=0 gives --no-NAME, unset keeps the preset's choice.
flag = $(if $(filter 1 yes true,$($(1))),--$(2),$(if $(filter 0 no false,$($(1))),--no-$(2),))
DOWNLOAD_OPTS = $(call opt,SOURCE,--source) $(call opt,COMPETITION,--competition)
SPLIT_OPTS = $(call opt,VAL_FRACTION,--val-fraction) $(call opt,FOLDS,--folds) $(call opt,SEED,--seed)
TRAIN_OPTS = $(call opt,PRESET,--preset) $(call opt,MODEL,--model) $(call opt,EPOCHS,--epochs) \
	$(call opt,BATCH_SIZE,--batch-size) $(call opt,LEARNING_RATE,--learning-rate) $(call opt,SEED,--seed) $(call opt,MEMBERS,--members) \
	$(call opt,PRECISION,--precision) $(call opt,STRATEGY,--strategy) $(call flag,FINAL_MODEL,final-model) \
	$(call flag,PSEUDO_LABEL,pseudo-label) $(call flag,TTA,tta) $(if $(filter 1 yes true,$(DETERMINISTIC)),--deterministic,) \
	$(if $(filter 1 yes true,$(TENSORBOARD)),--tensorboard,) $(call opt,AUGMENTATION,--augmentation) \
	$(call opt,DROPOUT,--dropout) $(call opt,WIDTH,--width) $(call opt,ENGINE,--engine) $(ENGINE_OPTS)
ENGINE_OPTS = $(call opt,WORKERS,--workers) $(call opt,RAY_ADDRESS,--ray-address) $(call opt,DEVICE,--device)
TUNE_OPTS = $(DOWNLOAD_OPTS) $(SPLIT_OPTS) $(call opt,PRESET,--preset) $(call opt,TRIALS,--trials) \
	$(call opt,SEARCH_SEED,--search-seed) $(ENGINE_OPTS)
ALL_OPTS = $(DOWNLOAD_OPTS) $(SPLIT_OPTS) $(TRAIN_OPTS) $(call flag,REPORT,report) $(if $(FORCE),--force,)
PIPELINE = $(PYTHON) -m pipeline $(if $(QUIET),--quiet,)

.DEFAULT_GOAL := help
.PHONY: help all download prepare split train predict report runs runs-diff blend submit submissions tune test test-fast lint lock bench clean clean-cache clean-all venv

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  presets (PRESET=), what each trains and about how long on a laptop CPU:"
	@echo "    default: 2 models (holdout + all rows), about 15-20 min on a 2-core CPU with bfloat16, 40 min AVX2-only"
	@echo "    best: 6 models (5 folds + all rows) with test-time augmentation, about 70 min (105 min AVX2-only)"
	@echo "    quick: 1 small model, seconds (the sample, tests)    baseline: 1 MLP, about a minute"
	@echo "  options of all (and of the stage that takes each), unset: the preset's value:"
	@echo "    SOURCE=auto|kaggle|sample|PATH COMPETITION=NAME PRESET=quick|default|best|baseline"
	@echo "    VAL_FRACTION=F FOLDS=K SEED=N MODEL=cnn|small|deotte|mlp EPOCHS=N BATCH_SIZE=N LEARNING_RATE=F"
	@echo "    MEMBERS=N PRECISION=auto|float32|mixed_bfloat16|mixed_float16 DETERMINISTIC=1 STRATEGY=default|mirrored"
	@echo "    FINAL_MODEL=1|0 PSEUDO_LABEL=1|0 TTA=1|0 AUGMENTATION=F DROPOUT=F WIDTH=F TENSORBOARD=1 REPORT=1|0"
	@echo "    DEVICE=auto|cpu|gpu ENGINE=local|ray WORKERS=N RAY_ADDRESS=HOST:PORT FORCE=1 QUIET=1"
	@echo "  tune: SOURCE PRESET FOLDS SEED WORKERS RAY_ADDRESS DEVICE as above, TRIALS=N SEARCH_SEED=N"
	@echo "  report: RUN=ID    submit: FILE=PATH RUN=ID MESSAGE=TEXT WAIT=1|0 TIMEOUT=SECONDS    venv: GPU=1"

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $(STAMP)

# GPU=1: the same TensorFlow with NVIDIA's CUDA libraries on top (Linux x86-64), from requirements-gpu.txt.
$(GPU_STAMP): $(STAMP) requirements-gpu.txt
	$(PIP_INSTALL) -r requirements-gpu.txt
	touch $(GPU_STAMP)

$(DEV_STAMP): $(STAMP) tests/requirements.txt
	$(PIP_INSTALL) -r tests/requirements.txt
	touch $(DEV_STAMP)

venv: $(STAMP) $(if $(filter 1 yes true,$(GPU)),$(GPU_STAMP),) ## Create .venv from the lock (every target does); GPU=1 adds CUDA

lock: $(DEV_STAMP) ## Refresh the lock files from pyproject.toml (after adding a dependency there)
	$(VENV)/bin/uv pip compile pyproject.toml --group pyproject.toml:setup $(LOCK_OPTIONS) -o requirements.txt
	$(VENV)/bin/uv pip compile --group pyproject.toml:test --group pyproject.toml:dev -c requirements.txt \
		$(LOCK_OPTIONS) -o tests/requirements.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra gpu --group pyproject.toml:setup -c requirements.txt \
		$(LOCK_OPTIONS) -o requirements-gpu.txt

all: $(STAMP) ## download -> prepare -> split -> train -> predict -> report: a submission CSV
	$(PIPELINE) all $(ALL_OPTS)

download: $(STAMP) ## Fetch train.csv and test.csv (Kaggle API, a zip or folder, or the bundled sample)
	$(PIPELINE) download $(DOWNLOAD_OPTS) $(if $(FORCE),--force,)

prepare: $(STAMP) ## Validate the CSVs and write the image arrays
	$(PIPELINE) prepare $(if $(FORCE),--force,)

split: $(STAMP) ## Stratified holdout split, or FOLDS=K cross-validation folds
	$(PIPELINE) split $(SPLIT_OPTS) $(if $(FORCE),--force,)

train: $(STAMP) ## Train the model (resumes an interrupted run)
	$(PIPELINE) train $(TRAIN_OPTS) $(if $(FORCE),--force,)

predict: $(STAMP) ## Write submissions/<run>.csv
	$(PIPELINE) predict $(call flag,TTA,tta) $(if $(FORCE),--force,)

report: $(STAMP) ## Write the report of the latest run, or of RUN=id (data/reports/<run>/index.html)
	$(PIPELINE) report $(call opt,RUN,--run) $(if $(FORCE),--force,)

tune: $(STAMP) ## Search learning rate, epochs, augmentation, dropout, width on Ray; print the best options
	$(PIPELINE) tune $(TUNE_OPTS) $(if $(FORCE),--force,)

runs: $(STAMP) ## List the runs, best first, in 100 columns (WIDE=1 all columns, ALL=1 sample runs too, SORT=...)
	$(PIPELINE) runs $(if $(WIDE),--wide,) $(if $(ALL),--all,) $(call opt,SORT,--sort)

runs-diff: $(STAMP) ## What two runs differ in: parameters, data, estimate, score (RUNS="A B")
	$(PIPELINE) runs diff $(RUNS)

blend: $(STAMP) ## Average runs' test probabilities into a new submission and run (RUNS="A B", WEIGHTS=2,1)
	$(PIPELINE) blend $(RUNS) $(call opt,WEIGHTS,--weights)

submit: $(STAMP) ## Send the newest submission to Kaggle and wait for its score (FILE=path or RUN=id to choose)
	$(PIPELINE) submit $(call opt,FILE,--file) $(call opt,RUN,--run) $(call opt,MESSAGE,--message) \
		$(call opt,COMPETITION,--competition) $(call flag,WAIT,wait) $(call opt,TIMEOUT,--timeout) $(if $(FORCE),--force,)

submissions: $(STAMP) ## The competition's submissions and their scores, matched to runs; records new scores
	$(PIPELINE) submissions $(call opt,COMPETITION,--competition)

bench: $(STAMP) ## Baseline vs default side by side on the zip `download` cached, else the sample (BENCH_SOURCE=zip)
	$(PIPELINE) bench $(call opt,BENCH_SOURCE,--source)

test: $(DEV_STAMP) ## The test suite (about 7 minutes on 2 cores)
	$(PYTHON) -m pytest

test-fast: $(DEV_STAMP) ## The tests not marked slow
	$(PYTHON) -m pytest -m "not slow"

lint: $(DEV_STAMP) ## ruff's checks of the code (CI runs them too)
	$(VENV)/bin/ruff check pipeline tests

clean: ## Remove everything the pipeline wrote under data/ (keeps submissions/ and the bundled sample)
	find data -mindepth 1 -maxdepth 1 ! -name sample -exec rm -rf {} +

clean-cache: ## Forget the results the run cache keeps (data/.cache/store); current outputs stay
	rm -rf data/.cache/store

clean-all: clean ## Also remove the virtual environment
	rm -rf $(VENV)
