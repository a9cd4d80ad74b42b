# README's two commands: `make demo` and `make test`. Only CPython 3.11 and the package
# registries are needed; everything else is installed into .venv here, from requirements.lock.
#
# requirements.lock is the one lock: every package with its exact version and hashes, for
# CPython 3.11 on Linux x86_64, generated from pyproject.toml by `make lock` (uv pip compile).
# The venv, CI and every container image install from it (the images a subset of it, written
# by `make lock` too: containers/requirements-<image>.txt). Nothing installs from a range.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
# The lock pins the CPU build of torch (torch==2.13.0+cpu), a wheel that is not on PyPI. On the
# target machines it lies in /opt/wheels; elsewhere point FIND_LINKS at a folder holding it, or
# set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
FIND_LINKS ?= /opt/wheels
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
PIP_FROM_LOCK = $(PIP) install --require-hashes --no-deps $(if $(wildcard $(FIND_LINKS)),--find-links $(FIND_LINKS))
# uv pip compile for `make lock`: one resolution for the lock's platform, not this machine's.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
	$(if $(wildcard $(FIND_LINKS)),--find-links $(FIND_LINKS))
# image requirement sets: md (core + the md extra), core (the reference and ml images)
IMAGE_EXTRAS := md:--extra=md core:

.PHONY: demo test test-slow lint lock images bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the lock or pyproject.toml changes. --no-build-isolation: the project builds
# with the locked setuptools already in the venv.
$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(PIP_FROM_LOCK) -r $(LOCK)
	$(PIP) install --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# The main job: the embedded default campaign (the paper's four materials, reduced to ~15 min on 2 cores).
demo: $(VENV)/.installed
	$(BIN)/ramanscreen screen deployments/campaigns/default.toml

# The test suite: lint (ruff over the project, mypy over tasks/), then pytest (doctests of every
# module included: tests/test_doctests.py). Tests that need a system
# package (CP2K data, QE, Chromium, SLURM, podman) skip here with a one-line reason; .ci/run
# installs those packages and runs them by name with --fail-on-skip.
test: $(VENV)/.installed lint
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

# Slow real-code tests (CP2K, QE, SLURM, deployments, browser, containers), run by name in CI.
test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow --fail-on-skip

# Regenerate the lock from pyproject.toml, then the images' subsets of it (same versions, same
# hashes: compiled with the lock's pins as constraints). Needs a venv (uv is in the test extra).
lock: | $(BIN)/python
	test -x $(BIN)/uv || $(PIP) install --no-deps "$$(sed -n 's/^\(uv==[^ ]*\).*/\1/p' $(LOCK))"
	$(UV_COMPILE) --all-extras --group build -o $(LOCK) pyproject.toml
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' $(LOCK) > $(VENV)/lock-pins.txt
	for spec in $(IMAGE_EXTRAS); do \
	  image=$${spec%%:*}; extra=$${spec#*:}; \
	  $(UV_COMPILE) $$extra --group build -c $(VENV)/lock-pins.txt \
	    -o containers/requirements-$$image.txt pyproject.toml || exit 1; \
	done

# The per-stage OCI images (podman), saved as archives, and SIFs where apptainer exists.
images: $(VENV)/.installed
	containers/build.sh

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
