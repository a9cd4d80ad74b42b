# README's two commands: `make demo` and `make test`. Only Python >= 3.11 and the
# package registries are needed; everything else is installed into .venv here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Stamps: reinstall when pyproject.toml changes.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[md]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[md,test]'
	touch $@

# The main job: the embedded default campaign (paper's four materials, reduced; ~15 min on 2 cores).
demo: $(VENV)/.installed-demo
	$(BIN)/ramanscreen screen deployments/campaigns/default.toml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Slow real-code tests (CP2K, QE, SLURM, deployments, browser), run by name in CI.
test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow

bench: $(VENV)/.installed-test
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
