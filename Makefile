# coursekit: one entry point for setup, tests, the lab and the data.
#   make setup   create or refresh .venv from pyproject.toml + constraints.txt (the kit with its lab and test
#                extras); TORCH_INDEX=https://download.pytorch.org/whl/cpu takes torch's CPU-only build
#   make course  the course build (coursekit build): every solution notebook executed in the default profile
#                (COURSEKIT_PROFILE), its solution PDF, the student versions, a summary; COURSE_ARGS=... adds
#                options (e.g. COURSE_ARGS="--only 01 --no-pdf")
#   make test    everything CI runs: pytest over tests/ and nbval over notebooks/
#   make system-packages  the Debian packages the PDFs and their tests need (Chromium, MathJax, poppler)
#   make lab     JupyterLab on notebooks/
#   make data    fetch and verify every dataset, then print a status table
#   make notebooks   re-execute the notebooks in the ci profile (refreshes stored outputs), then re-measure the
#                    tolerances of their training numbers on simulated machines (NOTEBOOKS=... for some only)
#   make bench   every benchmark in benchmarks/ at its default size (each prints its ratio last; not part of test)
#   make test-install  build the wheel, install it alone in a fresh venv, import what the notebooks import
#   make test-floor  the unit tests and a run of every notebook on the oldest declared Python with the oldest
#                    declared releases (constraints-floor.txt)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.coursekit-installed
PYTEST_ARGS ?=
NOTEBOOKS ?= $(wildcard notebooks/[0-9][0-9]_*.ipynb)
# Notebook runs use the ci profile. Thread counts are left to the environment: the numbers that depend on
# them (training) are compared within measured tolerances (coursekit.regression), everything else exactly.
NOTEBOOK_ENV := env -u MPLBACKEND COURSEKIT_PROFILE=ci

# The oldest Python that pyproject.toml admits (python3.10 on PATH, else pyenv's), with the releases of
# constraints-floor.txt.
FLOOR_VERSION := 3.10
FLOOR_PYTHON ?= $(shell for p in python$(FLOOR_VERSION) $(HOME)/.pyenv/versions/$(FLOOR_VERSION).*/bin/python; do \
                  "$$p" -c 'import sys' 2>/dev/null && { echo "$$p"; break; }; done)
FLOOR_VENV := .venv-floor
INSTALL_VENV := build/install-check

BENCHMARKS := $(sort $(filter-out benchmarks/timing.py,$(wildcard benchmarks/*.py)))

# What the solution PDFs need (rendered by Chromium with a local MathJax) and their tests (poppler-utils).
SYSTEM_PACKAGES := chromium libjs-mathjax fonts-mathjax poppler-utils
COURSE_ARGS ?=

.PHONY: course system-packages setup test test-unit test-notebooks test-install test-floor floor-python bench lab data notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet -c constraints.txt --index-url $(TORCH_INDEX) torch torchvision)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[lab,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (coursekit)" >/dev/null
	@touch $(STAMP)

course: $(STAMP)
	$(PY) -m coursekit build $(COURSE_ARGS)

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $$missing"; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) -m pytest -p no:cacheprovider -p coursekit.nbval_tolerance --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout 600 notebooks $(PYTEST_ARGS)

test-install:
	rm -rf $(INSTALL_VENV) build/dist
	$(PYTHON) -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INSTALL_VENV)/bin/python -m pip wheel --quiet --no-deps --wheel-dir build/dist .
	$(INSTALL_VENV)/bin/python -m pip install --quiet -c constraints.txt build/dist/*.whl
	cd $(INSTALL_VENV) && ./bin/python $(CURDIR)/tests/install_check.py $(CURDIR)/notebooks $(CURDIR)/build/dist/*.whl

floor-python:
	@echo $(FLOOR_PYTHON)

test-floor:
	@test -n "$(FLOOR_PYTHON)" || { echo "make test-floor needs Python $(FLOOR_VERSION): set FLOOR_PYTHON=..."; exit 1; }
	@test -x $(FLOOR_VENV)/bin/python || $(FLOOR_PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install --quiet -c constraints-floor.txt -e ".[test]"
	$(FLOOR_VENV)/bin/python -m pip check
	$(FLOOR_VENV)/bin/python -m pytest tests -m "not pinned" -p no:cacheprovider $(PYTEST_ARGS)
	@echo "every notebook runs to its end (outputs not compared: they are stored under constraints.txt)"
	$(NOTEBOOK_ENV) $(FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout 600 notebooks $(PYTEST_ARGS)

bench: $(STAMP)
	@for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script || exit 1; done

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

data: $(STAMP)
	$(PY) -m coursekit data

notebooks: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) -m coursekit execute --profile ci $(NOTEBOOKS)
	$(NOTEBOOK_ENV) $(PY) -m coursekit tolerances $(NOTEBOOKS)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build .pytest_cache
