PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/vaekit: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/vaekit

demo: $(BIN)/vaekit
	$(BIN)/vaekit demo -o demo

test: $(BIN)/vaekit
	$(BIN)/ruff check src tests scripts examples
	$(BIN)/ruff format --check src tests scripts examples
	$(BIN)/python scripts/benchmarks_doc.py --check
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo .pytest_cache
