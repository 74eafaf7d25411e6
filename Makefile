# cimnas: `make demo` runs the HAWIS pipeline on the embedded digits data; `make test` runs the tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= runs/demo

.PHONY: demo test bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: pip takes the CPU build from this machine's disk
	$(BIN)/pip install -q torch==2.13.0
	# the distributed (Ray), groups (torch-pruning) and tensorboard extras too: their tests run in CI, not skip
	$(BIN)/pip install -q -e '.[dev,distributed,groups,tensorboard]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cimnas hawis run --config configs/hawis/demo.yaml --out $(OUT) --resume
	# one self-contained page of the run (docs/report.md); prints its path
	$(BIN)/cimnas report $(OUT) --html $(OUT)/report.html

test: $(STAMP)
	# two workers on two cores; Ray / torchrun tests share one worker (tests/conftest.py)
	$(BIN)/python -m pytest tests -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
