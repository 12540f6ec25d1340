# digit-recognizer pipeline. `make help` lists the targets.
# Options pass through: make all SOURCE=path/to/digit-recognizer.zip PRESET=best EPOCHS=30 SEED=7

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Options given on the make command line become the CLI's options; unset ones keep its defaults.
opt = $(if $($(1)),$(2) $($(1)),)
# A switch: VAR=1 gives --NAME, VAR=0 gives --no-NAME, unset keeps the preset's choice.
flag = $(if $(filter 1 yes true,$($(1))),--$(2),$(if $(filter 0 no false,$($(1))),--no-$(2),))
DOWNLOAD_OPTS = $(call opt,SOURCE,--source) $(call opt,COMPETITION,--competition)
SPLIT_OPTS = $(call opt,VAL_FRACTION,--val-fraction) $(call opt,FOLDS,--folds) $(call opt,SEED,--seed)
TRAIN_OPTS = $(call opt,PRESET,--preset) $(call opt,MODEL,--model) $(call opt,EPOCHS,--epochs) \
	$(call opt,BATCH_SIZE,--batch-size) $(call opt,LEARNING_RATE,--learning-rate) $(call opt,SEED,--seed) $(call opt,MEMBERS,--members) \
	$(call opt,PRECISION,--precision) $(call opt,STRATEGY,--strategy) $(call flag,FINAL_MODEL,final-model) \
	$(call flag,PSEUDO_LABEL,pseudo-label) $(call flag,TTA,tta) $(if $(filter 1 yes true,$(DETERMINISTIC)),--deterministic,)
ALL_OPTS = $(DOWNLOAD_OPTS) $(SPLIT_OPTS) $(TRAIN_OPTS) $(call flag,REPORT,report) $(if $(FORCE),--force,)
PIPELINE = $(PYTHON) -m pipeline $(if $(QUIET),--quiet,)

.DEFAULT_GOAL := help
.PHONY: help all download prepare split train predict report runs submit submissions test test-fast bench clean clean-cache clean-all venv

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  options of all (and of the stage that takes each), unset: the preset's value:"
	@echo "    SOURCE=auto|kaggle|sample|PATH COMPETITION=NAME PRESET=quick|default|best|baseline"
	@echo "    VAL_FRACTION=F FOLDS=K SEED=N MODEL=cnn|small|deotte|mlp EPOCHS=N BATCH_SIZE=N LEARNING_RATE=F"
	@echo "    MEMBERS=N PRECISION=auto|float32|mixed_bfloat16|mixed_float16 DETERMINISTIC=1 STRATEGY=default|mirrored"
	@echo "    FINAL_MODEL=1|0 PSEUDO_LABEL=1|0 TTA=1|0 REPORT=1|0 FORCE=1 QUIET=1"
	@echo "  report: RUN=ID    submit: FILE=PATH RUN=ID MESSAGE=TEXT WAIT=1|0 TIMEOUT=SECONDS"

$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP) ## Create .venv from the pinned requirements.txt (done by every target that needs it)

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

runs: $(STAMP) ## List every training run, best first, and what the run cache keeps
	$(PIPELINE) runs

submit: $(STAMP) ## Send the newest submission to Kaggle and wait for its score (FILE=path or RUN=id to choose)
	$(PIPELINE) submit $(call opt,FILE,--file) $(call opt,RUN,--run) $(call opt,MESSAGE,--message) \
		$(call opt,COMPETITION,--competition) $(call flag,WAIT,wait) $(call opt,TIMEOUT,--timeout) $(if $(FORCE),--force,)

submissions: $(STAMP) ## The competition's submissions and their scores, matched to runs; records new scores
	$(PIPELINE) submissions $(call opt,COMPETITION,--competition)

bench: $(STAMP) ## Baseline vs default side by side: time, images/s, accuracy, memory (BENCH_SOURCE=...)
	$(PIPELINE) bench $(call opt,BENCH_SOURCE,--source)

test: $(STAMP) ## The test suite (about 6 minutes on 2 cores)
	$(PYTHON) -m pytest

test-fast: $(STAMP) ## The tests not marked slow
	$(PYTHON) -m pytest -m "not slow"

clean: ## Remove everything the pipeline wrote under data/ (keeps submissions/ and the bundled sample)
	find data -mindepth 1 -maxdepth 1 ! -name sample -exec rm -rf {} +

clean-cache: ## Forget the results the run cache keeps (data/.cache/store); current outputs stay
	rm -rf data/.cache/store

clean-all: clean ## Also remove the virtual environment
	rm -rf $(VENV)
