# Two entry points: `make demo` and `make test`. Each creates/reuses .venv and installs what it needs.
# torch==2.13.0 is installed first so that the project's `torch>=2.3` pulls nothing more (no CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_CORE := $(VENV)/.installed-core
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo loop-demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_CORE): pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml $(STAMP_CORE)
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps torchattacks==3.5.1 pytorch-ood==0.4.0  # test-only references (see pyproject)
	touch $@

demo: $(STAMP_CORE)
	$(VENV)/bin/assay demo --out assay-out

# The feedback loop on digits with a planted shift: serve, queue, label, import, dataset, fine-tune, compare, promote.
loop-demo: $(STAMP_CORE)
	$(PY) examples/feedback_loop.py

test: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/mypy src/assay
	$(PY) -m pytest -n 2 -q --durations=25

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check src tests bench docs
	$(VENV)/bin/mypy src/assay

bench: $(STAMP_DEV)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) assay-out .pytest_cache
