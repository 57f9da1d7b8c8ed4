# The two commands of the README: `make serve` (main job) and `make test`.
# Each creates .venv when missing and installs what it needs, torch==2.13.0 first.
# The Python that creates .venv: 3.11 (pyproject's requires-python), checked before anything else.
PYTHON ?= python3.11
# Where torch comes from: empty = the default index (PyPI: on Linux x86_64 the CUDA build, several GB);
# TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build (after make clean-venv if .venv exists).
TORCH_INDEX ?=
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test demo clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || { found=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); \
		[ "$$found" = 3.11 ] || { echo "SpecRoute needs Python 3.11 (found $${found:-no $(PYTHON)}): set PYTHON=python3.11" >&2; exit 1; }; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m serving --model default --policy checkpoints/router --host 127.0.0.1 --port 8000

demo: $(STAMP)
	$(PY) -m engine generate --prompt "Write a haiku about the sea." --chain 'ngram>target' --k 4

test: $(STAMP)
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean-venv:
	rm -rf $(VENV)
