# segloss-bench: `make demo` (main job on the embedded synthetic data) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean-demo

# Creates .venv if missing and installs the project with the test extras, pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

# A small loss sweep (ce, dice, focal) on CPU, then the survey-style table in results/demo/.
# Completed runs are skipped when re-run (outputs/demo); `make clean-demo` starts afresh.
demo: $(STAMP)
	$(BIN)/python -m bench -m +experiment=demo '+loss=ce,dice,focal'
	$(BIN)/python -m bench.results outputs/demo --out results/demo

# The whole suite, in TEST_WORKERS pytest-xdist processes (2: one per core of a 2-core machine;
# `make test TEST_WORKERS=8` on a bigger one, TEST_WORKERS=0 for one process).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# Development loop: the suite without the end-to-end subprocess runs (marker `slow`).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-demo:
	rm -rf outputs/demo
