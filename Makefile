# digit-recognizer pipeline. `make help` lists the targets.
# Options pass through: make all SOURCE=path/to/digit-recognizer.zip PRESET=best EPOCHS=30 SEED=7

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
GPU_STAMP := $(VENV)/.installed-gpu
RAY_STAMP := $(VENV)/.installed-ray
TENSORBOARD_STAMP := $(VENV)/.installed-tensorboard
# The optional extras a command needs, installed on its first use: Ray for ENGINE=ray, TensorBoard for TENSORBOARD=1.
# Only the command line's ENGINE and TENSORBOARD count (`given`, below), as for every option.
EXTRA_STAMPS = $(if $(filter ray,$(call given,ENGINE)),$(RAY_STAMP),) \
	$(call on,TENSORBOARD,$(TENSORBOARD_STAMP))
# Only what the locks name, each file checked against its hash.
PIP_INSTALL := $(PYTHON) -m pip install --quiet --disable-pip-version-check --require-hashes
# The lock: requirements.txt from pyproject.toml's dependencies (and pip, setuptools); tests/requirements.txt
# from its test and dev groups, at the same versions; requirements-<extra>.txt: the runtime lock plus one
# extra (gpu, ray, tensorboard). For every platform, Python 3.11 to 3.13 (pyproject's requires-python).
# `make lock` keeps every pin it can; `make lock UPGRADE=1` moves everything to the newest releases allowed.
LOCK_OPTIONS = --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock" --quiet \
	$(call on,UPGRADE,--upgrade)

# The training options (MODEL EPOCHS ... TTA): one per field of TrainingConfig, read from the declarations in
# pipeline/training/settings.py (`    name: type = knob(...)`, to the line that ends with its parenthesis), as
# VARIABLE:option:type:tune words (MODEL:model:str:1 FINAL_MODEL:final-model:bool:0), with no Python to start.
KNOB_AWK = /^    [a-z_]+: (int|float|str|bool) = knob[(]/ { name = $$1; sub(":", "", name); type = $$2; text = "" } \
	name != "" { text = text $$0 } \
	name != "" && /[)]$$/ { option = name; if (match(text, /option="[a-z-]+"/)) option = substr(text, RSTART + 8, RLENGTH - 9); \
	gsub("_", "-", option); variable = toupper(option); gsub("-", "_", variable); \
	print variable ":" option ":" type ":" (text ~ /tune=False/ ? 0 : 1); name = "" }
# make -f path/to/Makefile from another folder reads nothing of the checkout here: make -C does.
$(if $(wildcard pipeline/training/settings.py),,$(error $(CURDIR) is not the checkout: run make -C $(patsubst %/,%,$(dir $(abspath $(firstword $(MAKEFILE_LIST))))) instead))
KNOBS := $(shell awk '$(KNOB_AWK)' pipeline/training/settings.py)
$(if $(KNOBS),,$(error pipeline/training/settings.py: no training options found (is awk installed?)))
knob_field = $(word $(2),$(subst :, ,$(1)))
KNOB_VARIABLES := $(foreach knob,$(KNOBS),$(call knob_field,$(knob),1))
NOT_TUNE_VARIABLES := $(foreach knob,$(KNOBS),$(if $(filter 0,$(call knob_field,$(knob),4)),$(call knob_field,$(knob),1)))
# Every variable `make` takes on its command line. Any other is refused, with the close match, since a
# mistyped one (EPOCH=1) would otherwise be ignored without a word.
KNOWN := SOURCE COMPETITION VAL_FRACTION FOLDS PRESET $(KNOB_VARIABLES) FINAL_WEIGHT TENSORBOARD REPORT \
	DEVICE ENGINE WORKERS RAY_ADDRESS TRIALS SEARCH_SEED RUN FILE MESSAGE WAIT TIMEOUT PRESETS BENCH_SOURCE \
	FORCE QUIET GPU UPGRADE PYTHON VENV WIDE ALL SORT RUNS WEIGHTS
# Only variables from the command line are options: an exported MODEL or RAY_ADDRESS in the environment is not.
GIVEN := $(foreach name,$(.VARIABLES),$(if $(filter command line,$(origin $(name))),$(name)))
UNKNOWN := $(filter-out $(KNOWN),$(GIVEN))
# Names are single-quoted for the shell; without python3, the names alone.
quote = '$(subst ','\'',$(1))'
# Where outputs go is the environment's, as for the CLI: said so, rather than "unknown".
ifneq ($(filter PIPELINE_ROOT,$(UNKNOWN)),)
$(error PIPELINE_ROOT is read from the environment, not the make command line: PIPELINE_ROOT=DIR make $(or \
	$(MAKECMDGOALS),all))
endif
ifneq ($(UNKNOWN),)
$(error unknown variable $(shell python3 -c 'import difflib, sys; given, known = sys.argv[1:sys.argv.index("--")], \
	sys.argv[sys.argv.index("--") + 1:]; print(", ".join(name + "".join(f" (did you mean {match}?)" for match in \
	difflib.get_close_matches(name.upper(), known, 1)) for name in given))' $(foreach name,$(UNKNOWN),$(call quote,$(name))) \
	-- $(KNOWN) 2>/dev/null || echo $(foreach name,$(UNKNOWN),$(call quote,$(name)))); `make help` lists them)
endif
define newline


endef
# A recipe is one shell line: a value with a newline in it cannot reach the CLI as typed.
$(foreach name,$(GIVEN),$(if $(findstring $(newline),$(value $(name))),$(error $(name): a value on one line, please)))
# An empty value (FILE=, PRESET=$X with X unset) would leave the option out: submit would send another file, all run
# the default preset, without a word. Refused, as the CLI refuses `--file ''`.
$(foreach name,$(GIVEN),$(if $(strip $(value $(name))),,$(error $(name)= is empty: $(if $(filter RUNS,$(name)),give\
	the run ids (RUNS="A B"),give it a value, or leave it out for the default))))

# What each target takes from the command line (besides PYTHON and VENV, where the environment is). A known
# variable that none of the goals takes is refused, naming the targets that do: `make train FINAL_WEIGHT=3` or
# `make tune TTA=1` would otherwise do what they do without it, without a word. tests/test_makefile.py checks
# this table against the recipes: a variable is listed for a target exactly when it changes that target's commands.
TRAIN_VARIABLES := PRESET $(KNOB_VARIABLES) TENSORBOARD ENGINE WORKERS RAY_ADDRESS DEVICE
TAKES_all := SOURCE COMPETITION VAL_FRACTION FOLDS $(TRAIN_VARIABLES) FINAL_WEIGHT REPORT FORCE QUIET
TAKES_download := SOURCE COMPETITION FORCE QUIET
TAKES_prepare := FORCE QUIET
TAKES_split := VAL_FRACTION FOLDS SEED FORCE QUIET
TAKES_train := $(TRAIN_VARIABLES) FORCE QUIET
TAKES_predict := TTA FINAL_WEIGHT FORCE QUIET
TAKES_report := RUN FORCE QUIET
TAKES_tune := SOURCE COMPETITION VAL_FRACTION FOLDS PRESET TRIALS SEARCH_SEED \
	$(filter-out $(NOT_TUNE_VARIABLES),$(KNOB_VARIABLES)) WORKERS RAY_ADDRESS DEVICE FORCE QUIET
TAKES_runs := WIDE ALL SORT QUIET
TAKES_runs-diff := RUNS QUIET
TAKES_blend := RUNS WEIGHTS QUIET
TAKES_submit := FILE RUN MESSAGE COMPETITION WAIT TIMEOUT FORCE QUIET
TAKES_submissions := COMPETITION QUIET
TAKES_bench := SOURCE BENCH_SOURCE PRESETS $(KNOB_VARIABLES) QUIET
TAKES_venv := GPU ENGINE TENSORBOARD
TAKES_lock := UPGRADE
TAKES_clean := QUIET
TAKES_clean-cache := QUIET
TAKES_clean-all := QUIET
# test, test-fast and lint take none; help and a file target (.venv/.installed) any.
$(foreach target,test test-fast lint,$(eval TAKES_$(target) :=))
takes = $(if $(filter undefined,$(origin TAKES_$(1))),$(KNOWN),$(TAKES_$(1)) PYTHON VENV)
GOALS := $(or $(MAKECMDGOALS),help)
NOT_TAKEN := $(filter-out $(foreach goal,$(GOALS),$(call takes,$(goal))),$(GIVEN))
TAKING_TARGETS = $(sort $(patsubst TAKES_%,%,$(filter TAKES_%,$(.VARIABLES))))
takers = $(subst $(space),$(comma) ,$(strip $(foreach target,$(TAKING_TARGETS),$(if $(filter $(1),$(TAKES_$(target))),$(target)))))
not_taken = $(1) (an option of $(call takers,$(1)))
space := $(subst ,, )
comma := ,
ifneq ($(NOT_TAKEN),)
# "A (an option of x, y)| B (...)|" -> "A (an option of x, y), B (...)"
NOT_TAKEN_TEXT := $(patsubst %|,%,$(subst | ,$(comma) ,$(foreach name,$(NOT_TAKEN),$(call not_taken,$(name))|)))
# The near miss worth a word: bench compares presets, named in PRESETS (PRESET is every other target's).
PRESETS_HINT := $(if $(and $(filter bench,$(GOALS)),$(filter PRESET,$(NOT_TAKEN))),; bench takes PRESETS=quick$(comma)default)
$(error make $(GOALS) does not take $(NOT_TAKEN_TEXT)$(PRESETS_HINT); `make help` lists each target's options)
endif
# Values reach the CLI as typed: $(value ...) is never expanded by make (MESSAGE='cost $$5' stays so),
# and command-line variables are not exported, since exporting expands them ($(shell ...) would run).
unexport $(GIVEN)

# Options given on the make command line become the CLI's options; unset ones keep its defaults.
# Each value is one shell word, single-quoted (a quote inside it as '\''): SOURCE="my data/x.zip" works.
given = $(if $(filter command line,$(origin $(1))),$(value $(1)))
opt = $(if $(call given,$(1)),$(2) $(call quote,$(call given,$(1))),)
# A list of words (RUNS="A B"): each its own argument, quoted like opt's values.
each_word = $(foreach word,$(call given,$(1)),$(call quote,$(word)))
# A switch's value when it is one word (filter takes any word of several: FORCE='no 1' gave --force).
switch_word = $(if $(word 2,$(call given,$(1))),,$(call given,$(1)))
# $(call switch,VAR,ON,OFF): ON for VAR=1 (yes, true), OFF for VAR=0 (no, false), nothing unset; any other value is
# refused.
switch = $(if $(filter 1 yes true,$(call switch_word,$(1))),$(2),$(if $(filter 0 no false,$(call switch_word,$(1))),\
	$(3),$(if $(call given,$(1)),$(error $(1)=$(call given,$(1)): expected 1 or 0 (yes/no, true/false)),)))
# A switch: VAR=1 gives --NAME, VAR=0 gives --no-NAME, unset keeps the preset's choice.
flag = $(call switch,$(1),--$(2),--no-$(2))
# An option that is only ever on: VAR=1 gives it, VAR=0 does not (FORCE=off gave --force: every stage ran again).
on = $(call switch,$(1),$(2),)
DOWNLOAD_OPTS = $(call opt,SOURCE,--source) $(call opt,COMPETITION,--competition)
SPLIT_ONLY_OPTS = $(call opt,VAL_FRACTION,--val-fraction) $(call opt,FOLDS,--folds)
SPLIT_OPTS = $(SPLIT_ONLY_OPTS) $(call opt,SEED,--seed)
# A training option: a switch (bool) VAR=1|0, else VAR=value; $(1): its KNOBS word.
knob_opt = $(if $(filter bool,$(call knob_field,$(1),3)),$(call flag,$(call knob_field,$(1),1),$(call knob_field,$(1),2)),\
	$(call opt,$(call knob_field,$(1),1),--$(call knob_field,$(1),2)))
KNOB_OPTS = $(foreach knob,$(KNOBS),$(call knob_opt,$(knob)))
# tune's trials draw around the recipe these options set (the model on all rows, pseudo-labels and TTA do not apply).
TUNE_KNOB_OPTS = $(foreach knob,$(KNOBS),$(if $(filter 1,$(call knob_field,$(knob),4)),$(call knob_opt,$(knob))))
ENGINE_OPTS = $(call opt,WORKERS,--workers) $(call opt,RAY_ADDRESS,--ray-address) $(call opt,DEVICE,--device)
TRAIN_OPTS = $(call opt,PRESET,--preset) $(KNOB_OPTS) $(call on,TENSORBOARD,--tensorboard) $(call opt,ENGINE,--engine) \
	$(ENGINE_OPTS)
TUNE_OPTS = $(DOWNLOAD_OPTS) $(SPLIT_ONLY_OPTS) $(call opt,PRESET,--preset) $(call opt,TRIALS,--trials) \
	$(call opt,SEARCH_SEED,--search-seed) $(TUNE_KNOB_OPTS) $(ENGINE_OPTS)
# One variable, not a recipe line continued: make would echo the continuation as a line of its own.
SUBMIT_OPTS = $(call opt,FILE,--file) $(call opt,RUN,--run) $(call opt,MESSAGE,--message) \
	$(call opt,COMPETITION,--competition) $(call flag,WAIT,wait) $(call opt,TIMEOUT,--timeout) $(FORCE_OPT)
BENCH_OPTS = $(if $(and $(call given,SOURCE),$(call given,BENCH_SOURCE)),$(error make bench: SOURCE and BENCH_SOURCE\
	name the same option; give one)) $(call opt,SOURCE,--source) $(call opt,BENCH_SOURCE,--source) \
	$(call opt,PRESETS,--presets) $(KNOB_OPTS)
FORCE_OPT = $(call on,FORCE,--force)
# predict's options: changing them predicts again, they never train.
PREDICT_OPTS = $(call flag,TTA,tta) $(call opt,FINAL_WEIGHT,--final-weight)
ALL_OPTS = $(DOWNLOAD_OPTS) $(SPLIT_ONLY_OPTS) $(TRAIN_OPTS) $(call opt,FINAL_WEIGHT,--final-weight) \
	$(call flag,REPORT,report) $(FORCE_OPT)
# QUIET=1: not even make's echo of the command (a recipe line that starts with @).
PIPELINE = $(Q)$(PYTHON) -m pipeline $(call on,QUIET,--quiet)

.DEFAULT_GOAL := help
.PHONY: help all download prepare split train predict report runs runs-diff blend submit submissions tune test test-fast lint lock bench clean clean-cache clean-all venv

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  presets (PRESET=), what each trains and about how long on a 2-core CPU:"
	@python3 -m pipeline.core.config 2>/dev/null || echo "    default, best, quick, baseline: see README.md"
	@echo "  options of all (and of the stage that takes each), unset: the preset's value:"
	@echo "    SOURCE=auto|kaggle|sample|PATH COMPETITION=NAME PRESET=quick|default|best|baseline VAL_FRACTION=F FOLDS=K"
	@echo "    FINAL_WEIGHT=W (also predict's, with TTA=1|0: the model on all rows' weight in the average)"
	@echo "    TENSORBOARD=1 REPORT=1|0 DEVICE=auto|cpu|gpu ENGINE=local|ray WORKERS=N RAY_ADDRESS=HOST:PORT FORCE=1 QUIET=1"
	@echo "  training options of train and all, bench and tune (SEED: also the split's):"
	@python3 -m pipeline.training.settings 2>/dev/null || echo "    $(KNOB_VARIABLES)"
	@echo "  tune: SOURCE PRESET VAL_FRACTION FOLDS WORKERS RAY_ADDRESS DEVICE as above, TRIALS=N SEARCH_SEED=N,"
	@echo "    the training options but $(strip $(NOT_TUNE_VARIABLES))"
	@echo "  bench: PRESETS=baseline,default SOURCE=sample|PATH (or BENCH_SOURCE=PATH), the training options"
	@echo "  runs: WIDE=1 ALL=1 SORT=estimate|leaderboard|time    runs-diff, blend: RUNS=\"A B\" WEIGHTS=2,1"
	@echo "  report: RUN=ID    submit: FILE=PATH RUN=ID MESSAGE=TEXT WAIT=1|0 TIMEOUT=SECONDS    venv: GPU=1 ENGINE=ray TENSORBOARD=1  lock: UPGRADE=1"
	@echo "  an unknown variable, or one the target does not take, is refused; only the command line's count (not the environment's)"

# QUIET=1 (given to the target that needs the environment): the set-up's commands are not echoed either.
Q = $(call on,QUIET,@)
$(STAMP): requirements.txt pyproject.toml
	$(Q)python3 -m venv $(VENV)
	$(Q)$(PIP_INSTALL) -r requirements.txt
	$(Q)$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation --editable .
	$(Q)touch $(STAMP)

# GPU=1: the same TensorFlow with NVIDIA's CUDA libraries on top (Linux x86-64), from requirements-gpu.txt.
$(GPU_STAMP): $(STAMP) requirements-gpu.txt
	$(Q)$(PIP_INSTALL) -r requirements-gpu.txt
	$(Q)touch $(GPU_STAMP)

$(RAY_STAMP): $(STAMP) requirements-ray.txt
	$(Q)$(PIP_INSTALL) -r requirements-ray.txt
	$(Q)touch $(RAY_STAMP)

$(TENSORBOARD_STAMP): $(STAMP) requirements-tensorboard.txt
	$(Q)$(PIP_INSTALL) -r requirements-tensorboard.txt
	$(Q)touch $(TENSORBOARD_STAMP)

# The tests run the Ray engine and --tensorboard too.
$(DEV_STAMP): $(STAMP) $(RAY_STAMP) $(TENSORBOARD_STAMP) tests/requirements.txt
	$(PIP_INSTALL) -r tests/requirements.txt
	touch $(DEV_STAMP)

venv: $(STAMP) $(call on,GPU,$(GPU_STAMP)) $(EXTRA_STAMPS) ## Create .venv from the lock (every target does); GPU=1 CUDA, ENGINE=ray Ray, TENSORBOARD=1

lock: $(DEV_STAMP) ## Refresh the lock files from pyproject.toml (after adding a dependency there)
	$(VENV)/bin/uv pip compile pyproject.toml --group pyproject.toml:setup $(LOCK_OPTIONS) -o requirements.txt
	for extra in gpu ray tensorboard; do \
		$(VENV)/bin/uv pip compile pyproject.toml --extra $$extra --group pyproject.toml:setup -c requirements.txt \
			$(LOCK_OPTIONS) -o requirements-$$extra.txt || exit 1; \
	done
	$(VENV)/bin/uv pip compile --group pyproject.toml:test --group pyproject.toml:dev -c requirements.txt \
		-c requirements-ray.txt -c requirements-tensorboard.txt $(LOCK_OPTIONS) -o tests/requirements.txt

all: $(STAMP) $(EXTRA_STAMPS) ## download -> prepare -> split -> train -> predict -> report: a submission CSV
	$(PIPELINE) all $(ALL_OPTS)

download: $(STAMP) ## Fetch train.csv and test.csv (Kaggle API, a zip or folder, or the bundled sample)
	$(PIPELINE) download $(DOWNLOAD_OPTS) $(FORCE_OPT)

prepare: $(STAMP) ## Validate the CSVs and write the image arrays
	$(PIPELINE) prepare $(FORCE_OPT)

split: $(STAMP) ## Stratified holdout split, or FOLDS=K cross-validation folds
	$(PIPELINE) split $(SPLIT_OPTS) $(FORCE_OPT)

train: $(STAMP) $(EXTRA_STAMPS) ## Train the model (resumes an interrupted run)
	$(PIPELINE) train $(TRAIN_OPTS) $(FORCE_OPT)

predict: $(STAMP) ## Write submissions/<run>.csv (TTA=1|0, FINAL_WEIGHT=W: predicts again, never trains)
	$(PIPELINE) predict $(PREDICT_OPTS) $(FORCE_OPT)

report: $(STAMP) ## Write the report of the latest run, or of RUN=id (data/reports/<run>/index.html)
	$(PIPELINE) report $(call opt,RUN,--run) $(FORCE_OPT)

tune: $(STAMP) $(RAY_STAMP) ## Search learning rate, epochs, augmentation, dropout, width on Ray; print the best options
	$(PIPELINE) tune $(TUNE_OPTS) $(FORCE_OPT)

runs: $(STAMP) ## List the runs, best first, in 100 columns (WIDE=1 all columns, ALL=1 sample runs too, SORT=...)
	$(PIPELINE) runs $(call on,WIDE,--wide) $(call on,ALL,--all) $(call opt,SORT,--sort)

# The runs are make's RUNS="A B": without it the CLI's own words (Missing argument 'RUN RUN...') named no variable.
need_runs = $(if $(word 2,$(call given,RUNS)),,$(error make $(1) needs RUNS="A B" ($(2) from `make runs`)))

runs-diff: $(STAMP) ## What two runs differ in: parameters, data, estimate, score (RUNS="A B")
	$(call need_runs,runs-diff,two run ids)$(PIPELINE) runs diff $(call each_word,RUNS)

blend: $(STAMP) ## Average runs' test probabilities into a new submission and run (RUNS="A B", WEIGHTS=2,1)
	$(call need_runs,blend,two or more run ids)$(PIPELINE) blend $(call each_word,RUNS) $(call opt,WEIGHTS,--weights)

submit: $(STAMP) ## Send the last all or predict's submission to Kaggle and wait for its score (FILE=path or RUN=id to choose)
	$(PIPELINE) submit $(SUBMIT_OPTS)

submissions: $(STAMP) ## The competition's submissions and their scores, matched to runs; records new scores
	$(PIPELINE) submissions $(call opt,COMPETITION,--competition)

bench: $(STAMP) ## Presets side by side (baseline, default) on the zip `download` cached, else the sample
	$(PIPELINE) bench $(BENCH_OPTS)

# Two pytest-xdist workers, each test file on one of them: half the suite waits on processes, servers and timeouts,
# so two files at once finish sooner even on 2 cores; a file's tests stay in order, in one process.
TEST_WORKERS = -n 2 --dist loadfile

test: $(DEV_STAMP) ## The test suite (about 8 minutes on 2 cores, two workers)
	$(PYTHON) -m pytest $(TEST_WORKERS)

test-fast: $(DEV_STAMP) ## The tests not marked slow
	$(PYTHON) -m pytest $(TEST_WORKERS) -m "not slow"

lint: $(DEV_STAMP) ## ruff's checks of the code (CI runs them too)
	$(VENV)/bin/ruff check pipeline tests

# Where the pipeline writes: PIPELINE_ROOT's data/ when it is set (as the CLI does), else this folder's.
DATA_DIR = $(or $(PIPELINE_ROOT),.)/data
# What the pipeline wrote, removed under its lock (refused while a command runs there): pipeline/core/clean.py, by
# the system's python3 (standard library only), so that cleaning never sets up .venv.
clean: ## Remove the folders the pipeline writes under data/ (the sent log, submissions/ and your files beside them stay)
	python3 -m pipeline.core.clean "$(DATA_DIR)" $(call on,QUIET,--quiet)

clean-cache: ## Forget the results the run cache keeps (data/.cache/store); current outputs stay
	python3 -m pipeline.core.clean "$(DATA_DIR)" --cache $(call on,QUIET,--quiet)

clean-all: clean ## Also remove the virtual environment
	rm -rf $(VENV)
