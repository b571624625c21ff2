# Two commands on a fresh machine (no GPU, no model hub):
#   make demo   install, then run the default evolutionary merge on the embedded zoo
#   make test   install, then run the whole test suite
PY_BASE ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: demo test install zoo bench clean-venv

$(STAMP): pyproject.toml
	$(PY_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel; a bare "torch" would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m evo_ps

test: $(STAMP)
	$(PY) -m pytest -q

# Rebuild the committed zoo from its recipe (2,370 training steps; about 45 min measured on a busy 2-core box).
zoo: $(STAMP)
	$(PY) -m zoo.build

clean-venv:
	rm -rf $(VENV)
