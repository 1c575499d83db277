# coursekit: one entry point for setup, tests, the lab and the data.
#   make setup   create or refresh .venv from pyproject.toml + constraints.txt
#   make test    everything CI runs: pytest over tests/ and nbval over notebooks/
#   make lab     JupyterLab on notebooks/
#   make data    fetch and verify every dataset, then print a status table
#   make notebooks   re-execute the notebooks in the ci profile (refreshes stored outputs), then re-measure the
#                    tolerances of their training numbers on simulated machines (NOTEBOOKS=... for some only)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.coursekit-installed
PYTEST_ARGS ?=
NOTEBOOKS ?= $(wildcard notebooks/[0-9][0-9]_*.ipynb)
# Notebook runs use the ci profile. Thread counts are left to the environment: the numbers that depend on
# them (training) are compared within measured tolerances (coursekit.regression), everything else exactly.
NOTEBOOK_ENV := env -u MPLBACKEND COURSEKIT_PROFILE=ci

.PHONY: setup test test-unit test-notebooks lab data notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (coursekit)" >/dev/null
	@touch $(STAMP)

test: test-unit test-notebooks

test-unit: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) -m pytest -p no:cacheprovider -p coursekit.nbval_tolerance --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout 600 notebooks $(PYTEST_ARGS)

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks

data: $(STAMP)
	$(PY) -m coursekit data

notebooks: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) -m coursekit execute --profile ci $(NOTEBOOKS)
	$(NOTEBOOK_ENV) $(PY) -m coursekit tolerances $(NOTEBOOKS)

clean:
	rm -rf $(VENV) .pytest_cache
