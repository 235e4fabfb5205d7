# The companion's commands. `make book` and `make test` are the README's set-up; each target is thin.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODEL ?=
CONTINUOUS_MODEL ?= ising-dit
DEVICE ?= cpu
SAMPLES ?=
JOBS ?=
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: venv book execute html test train train-ladder train-regime measure-regime train-beyond bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

book: execute html          ## execute every notebook on the embedded default, then build the HTML

execute: venv               ## papermill: notebooks/*.md -> book/*.ipynb (MODEL=, CONTINUOUS_MODEL=, DEVICE=, SAMPLES=, JOBS=)
	$(PY) tools/book.py execute $(if $(MODEL),--model $(MODEL)) --continuous-model $(CONTINUOUS_MODEL) --device $(DEVICE) $(if $(SAMPLES),--samples $(SAMPLES)) $(if $(JOBS),--jobs $(JOBS))

html: venv                  ## build _build/html from the committed executed notebooks (no execution)
	$(PY) tools/book.py check
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going

test: venv                  ## pytest, CPU and offline: every test (the quick loop: pytest -m "not slow")
	$(PY) -m pytest -q tests

train: venv                 ## retrain the shipped organisms (runs/ resumable; --install replaces the shipped ones)
	$(PY) -m bottleneck_utils.organisms.cli organism mnist-classifier --install
	$(PY) -m bottleneck_utils.organisms.cli organism mnist-dit --install
	$(PY) -m bottleneck_utils.organisms.cli organism mnist-sit --install
	$(PY) -m bottleneck_utils.organisms.cli organism ising-dit --install

train-ladder: venv          ## the regime ladder, one rung after another, 1 thread (hours; never in CI)
	OMP_NUM_THREADS=1 $(PY) -m bottleneck_utils.organisms.cli ladder train

train-regime: venv          ## the in-regime recipe's three seed replicates, one after another (2 threads; never in CI)
	$(PY) -m bottleneck_utils.organisms.cli regime train --threads 2

measure-regime: venv        ## the regime chapter's in-regime study of each replicate into results/in_regime (resumable; never in CI)
	$(PY) -m bottleneck_utils.chapters.in_regime measure --threads 2

train-beyond: venv          ## the bottleneck-trained variants and the U-Net, one after another, 1 thread (never in CI)
	OMP_NUM_THREADS=1 $(PY) -m bottleneck_utils.organisms.cli beyond train
	OMP_NUM_THREADS=1 $(PY) -m bottleneck_utils.organisms.cli organism mnist-unet --install

bench: venv                 ## side-by-side benchmark ratios
	$(PY) benchmarks/bench_core.py
	$(PY) benchmarks/bench_pruning.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_fid.py

clean:
	rm -rf _build
