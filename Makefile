# Two commands run everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# -qq: errors only (pip's notes about this machine's package mirrors and setuptools' editable-install
# warning are not the user's to act on)
PIP     = PYTHONWARNINGS=ignore $(BIN)/python -m pip install -qq

.PHONY: install demo test lint clean

install: $(STAMP)

# Re-installs only when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/python -m pipelines.cli.demo

test: install
	$(BIN)/ruff check --quiet .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/python -m pytest -q --durations=15

# the linter alone (make test runs it first); `ruff format .` fixes the formatting
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) demo_output .pytest_cache
