# Two commands on a fresh machine (no GPU, no model hub):
#   make demo   install, then run the default evolutionary merge on the embedded zoo
#   make test   install, then run the whole test suite
#   make test-fast  the developer loop: the suite without the slow end-to-end runs (kills included)
#                   and the scale-out tests on real servers; CI runs `make test`, everything
#
# Installs come from requirements.lock (exact versions, sha256 hashes), so a fresh machine next
# month gets today's versions. Refreshing the lock is a deliberate step: `make lock`, run the
# suite, commit requirements.lock. `make test-latest` checks the exported DFS model against the
# newest transformers release in a throwaway venv, before the pin moves.
PY_BASE ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
LOCK    := requirements.lock
# torch stays outside the lock: 2.13.0 is the CPU wheel on our machines (a bare "torch" pulls a
# multi-GB CUDA build). With a GPU, set your own: make install TORCH='torch==2.13.0'
TORCH   ?= torch==2.13.0
UV      := uv==0.13.9

.PHONY: demo test test-fast install lock test-latest results zoo zoo-lora bench clean-venv system-deps

$(STAMP): pyproject.toml $(LOCK)
	$(PY_BASE) -m venv $(VENV)
	$(PY) -m pip install -q '$(TORCH)'
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m evo_ps

test: $(STAMP) system-deps
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --ignore=tests/scale

# What the scale-out and browser tests run besides Python (docs/scale-out.md): a PostgreSQL server
# (initdb, pg_ctl) and headless Chromium, both Debian's packages. Installed only when missing (the
# machine image carries PostgreSQL; Chromium costs one apt-get, measured in docs/scale-out.md);
# without root, sudo. Nothing is downloaded when both are present. Should apt fail, the suite
# still runs and the tests that need the missing part fail with one line naming it (never a skip).
PG_BIN  := $(firstword $(wildcard /usr/lib/postgresql/*/bin) $(dir $(shell command -v initdb 2>/dev/null)))
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
system-deps:
	@missing=""; \
	  [ -x "$(PG_BIN)/initdb" ] && [ -x "$(PG_BIN)/pg_ctl" ] || missing="$$missing postgresql"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "system-deps: apt-get install$$missing"; \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends$$missing \
	    || echo "system-deps: could not install$$missing; the tests that need it will fail, naming it"; \
	  fi

# Re-resolve every dependency (pyproject.toml + the dev extra) against today's registry.
lock:
	$(PY_BASE) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install -q '$(UV)'
	echo '$(TORCH)' > $(VENV)-lock/torch.txt
	$(VENV)-lock/bin/uv pip compile pyproject.toml --extra dev --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
	  --no-emit-package torch -c $(VENV)-lock/torch.txt --custom-compile-command 'make lock' -o $(LOCK)

# The layer-path model (in memory and exported) and the generation loop on the newest transformers
# release, in a throwaway venv: the locked set, then transformers upgraded past the pin. Any other
# release: make test-latest LATEST='transformers==5.23.0'. FutureWarnings count as failures.
LATEST  ?= transformers
LATEST_TESTS := tests/evo_dfs/test_dfs_model.py tests/evo_dfs/test_dfs_export.py tests/objectives/test_generation.py
test-latest:
	rm -rf $(VENV)-latest
	$(PY_BASE) -m venv $(VENV)-latest
	$(VENV)-latest/bin/pip install -q '$(TORCH)'
	$(VENV)-latest/bin/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(VENV)-latest/bin/pip install -q --no-deps -e .
	$(VENV)-latest/bin/pip install -q --upgrade '$(LATEST)'
	$(VENV)-latest/bin/python -c 'import transformers; print("transformers", transformers.__version__)'
	$(VENV)-latest/bin/python -m pytest -q -p no:cacheprovider -W error::FutureWarning $(LATEST_TESTS)
	rm -rf $(VENV)-latest

# Re-run the demo studies and rewrite the result tables in README.md and docs/ from their runs.
results: $(STAMP)
	$(PY) -m bench.results

# Rebuild the committed zoo from its recipe (2,370 training steps; about 45 min measured on a busy 2-core box).
zoo: $(STAMP)
	$(PY) -m zoo.build

# Rebuild the LoRA zoo (six PEFT LoRA experts on zoo/models/base, 240 steps; docs/zoo.md).
zoo-lora: $(STAMP)
	$(PY) -m zoo.build_lora

clean-venv:
	rm -rf $(VENV) $(VENV)-lock $(VENV)-latest
