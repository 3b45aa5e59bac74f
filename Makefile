# `make demo` and `make test` each set everything up on a fresh machine, then run.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SYSTEM  := $(VENV)/.system
# Keep the two CPU cores busy with math, not with thread hand-offs.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test docs install clean
MODEL   ?= diffuse/models/shapes
NOTO    := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,digits,emoji]"
	touch $(STAMP)

# Debian packages (root): the web page's tests drive Debian's chromium through playwright (no
# browser download), and the emoji data's noto style draws Debian's Noto Color Emoji font. Only
# the tests and `make install` need them; `make demo` never installs them.
$(SYSTEM): | $(STAMP)
	(command -v chromium >/dev/null && test -f $(NOTO)) || (apt-get update && apt-get install -y chromium fonts-noto-color-emoji)
	touch $(SYSTEM)

install: $(STAMP) $(SYSTEM)

test: $(STAMP) $(SYSTEM)
	$(BIN)/python -m pytest -q -x

# Draw with each bundled model into outputs/demo: shapes, four prompts x four seeds (and the same
# with shapes-fast, its 4-step distilled sibling); emoji, four subjects in each of its three styles
# (one row per style).
demo: $(STAMP)
	$(BIN)/diffuse explain prompt "a red circle on a white background" "a large blue square on a black background" \
		"a yellow star on a navy background" "a green triangle on a gray background" -n 4 --out outputs/demo/grid.png
	$(BIN)/diffuse explain prompt "a red circle on a white background" "a large blue square on a black background" \
		"a yellow star on a navy background" "a green triangle on a gray background" -n 4 --model shapes-fast \
		--out outputs/demo/fast.png
	$(BIN)/diffuse explain styles "a red apple" "a taxi" "a cat face" "a snowman" --model emoji --out outputs/demo/emoji.png

# Regenerate the tutorial's pictures (docs/tutorial.md) with MODEL (default: the bundled model).
docs: $(STAMP)
	$(BIN)/python docs/build_tutorial.py $(MODEL)

clean:
	rm -rf $(VENV) outputs .pytest_cache
