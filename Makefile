# The two commands of the README: `make serve` (main job) and `make test`.
# Each creates .venv when missing and installs what it needs; torch is pinned to the CPU build.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test demo clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
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
