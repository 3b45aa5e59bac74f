# `make demo` and `make test` each set everything up on a fresh machine, then run.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Keep the two CPU cores busy with math, not with thread hand-offs.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test docs install clean
MODEL   ?= runs/demo

# The web page's tests drive Debian's chromium through playwright (no browser download).
$(STAMP): pyproject.toml Makefile
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,digits]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -x

# Train a small model on procedural shapes for 5 minutes, then draw a grid for four prompts.
demo: $(STAMP)
	test -f runs/demo/config.json || $(BIN)/diffuse train --data shapes --out runs/demo --minutes 5 --preview-every 0
	$(BIN)/diffuse generate "a red circle on a white background" --model runs/demo -n 4 --seed 0 --grid --out outputs/demo
	$(BIN)/diffuse generate "a large blue square on a black background" --model runs/demo -n 4 --seed 0 --grid --out outputs/demo
	$(BIN)/diffuse generate "a yellow star on a navy background" --model runs/demo -n 4 --seed 0 --grid --out outputs/demo
	$(BIN)/diffuse generate "a green triangle on a gray background" --model runs/demo -n 4 --seed 0 --grid --out outputs/demo

# Regenerate the tutorial's pictures (docs/tutorial.md) with MODEL (default: the demo model).
docs: $(STAMP)
	test -f $(MODEL)/config.json || $(BIN)/diffuse train --data shapes --out $(MODEL) --minutes 5 --preview-every 0
	$(BIN)/python docs/build_tutorial.py $(MODEL)

clean:
	rm -rf $(VENV) outputs runs/demo .pytest_cache
