# Everything runs in a project-local virtualenv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DSVC := $(abspath $(VENV)/bin/dsvc)
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
DEMO := demo-data

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PY) -m benchmarks.datagen generate $(DEMO)/cars --frames 500 --media-size 20000
	cd $(DEMO)/cars && $(DSVC) init
	cd $(DEMO)/cars && $(DSVC) hash-object -w images/000/frame_000000.jpg images/000/frame_000001.jpg
	cd $(DEMO)/cars && $(DSVC) cat-object --json $$($(DSVC) hash-object images/000/frame_000000.jpg)
	cd $(DEMO)/cars && $(DSVC) fsck

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.tree --sizes 100000,1000000 --edits 1000
	$(PY) -m benchmarks.store

lint: $(STAMP)
	$(VENV)/bin/ruff check dsvc tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO) bench-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
