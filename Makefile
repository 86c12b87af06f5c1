# Two commands do all the set-up: `make test` and `make search`. Both create (or update) a local
# virtual environment in .venv first. torch is installed pinned before anything else so that the
# local CPU wheel is used instead of the registry's newest build with gigabytes of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_PIN ?= torch==2.13.0

.PHONY: install executorch test test-slow lint search clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The optional ExecuTorch runtime (XNNPACK; about 300 MB of packages): its tests run once it is in.
executorch: $(STAMP)
	$(PY) -m pip install -q -e ".[test,executorch]"

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# A real search end to end: the synthetic motion benchmark (written once into data/motion), the
# tiny space, embedded local Ray; a few minutes on a laptop. It prints the run folder at the end.
search: $(STAMP)
	@test -f data/motion/synth.json || $(VENV)/bin/tvnsearch data synth --task motion --out data/motion
	$(VENV)/bin/tvnsearch search runners/local.toml

# Style (ruff) and the direction of dependence between the package's rooms (import-linter
# contracts in pyproject.toml: layers, torch-free genomes and strategies, one Ray module, no cycles).
lint: $(STAMP)
	$(VENV)/bin/ruff check tvnsearch tests bench
	$(VENV)/bin/ruff format --check tvnsearch tests bench
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
