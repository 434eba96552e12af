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
	cp $(DEMO)/cars/annotations/instances.json $(DEMO)/v0-instances.json
	@echo "== version the dataset"
	cd $(DEMO)/cars && $(DSVC) init
	cd $(DEMO)/cars && $(DSVC) source add annotations/instances.json --format coco --media images
	cd $(DEMO)/cars && $(DSVC) add . && $(DSVC) commit -m "initial import"
	@echo "== two models' predictions, evaluated on checkpoint create"
	cd $(DEMO)/cars && $(DSVC) infer import model_a predictions/model_a.json --format coco --model detector-s
	cd $(DEMO)/cars && $(DSVC) infer import model_b predictions/model_b.json --format coco --model detector-m
	cd $(DEMO)/cars && $(DSVC) checkpoint create v0 -m "initial labels" --meta provider=acme
	@echo "== labels come back: relabel 2% of the frames, curate 25 new ones"
	$(PY) -m benchmarks.datagen mutate $(DEMO)/cars --relabel 0.02 --add 25 --seed 1
	cd $(DEMO)/cars && $(DSVC) status | head -8
	cd $(DEMO)/cars && $(DSVC) add . && $(DSVC) commit -m "relabel and curate"
	cd $(DEMO)/cars && $(DSVC) infer import model_a predictions/model_a.json --format coco -m "with the new frames"
	cd $(DEMO)/cars && $(DSVC) infer import model_b predictions/model_b.json --format coco -m "with the new frames"
	cd $(DEMO)/cars && $(DSVC) checkpoint create v1 -m "relabeled"
	@echo "== what changed from v0 to v1: frames, labels, classes"
	cd $(DEMO)/cars && $(DSVC) diff v0 v1
	cd $(DEMO)/cars && $(DSVC) diff v0 v1 --labels | grep -A4 -m1 "(labels)$$"
	cd $(DEMO)/cars && $(DSVC) log && $(DSVC) checkpoint list && $(DSVC) stats v1
	@echo "== evaluation at both checkpoints (cached cells: only changed frames are recomputed)"
	cd $(DEMO)/cars && $(DSVC) eval model_a --at v0 | head -3 && $(DSVC) eval model_a --at v1 | head -3
	@echo "== relabel, retrain and combined effects, then on the frames in both checkpoints only"
	cd $(DEMO)/cars && $(DSVC) compare v0 v1 --model model_a --model model_b
	cd $(DEMO)/cars && $(DSVC) compare v0 v1 --model model_a --model model_b --overlap
	@echo "== time travel back to v0"
	cd $(DEMO)/cars && $(DSVC) checkout v0 && $(DSVC) status
	$(PY) -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); \
	  key=lambda x: json.dumps(x, sort_keys=True); \
	  same=all(sorted(map(key,a[k]))==sorted(map(key,b[k])) for k in ('images','categories','annotations')); \
	  print('v0 annotations restored exactly:', same)" \
	  $(DEMO)/v0-instances.json $(DEMO)/cars/annotations/instances.json
	cd $(DEMO)/cars && $(DSVC) checkout main && $(DSVC) fsck
	@echo "== share: push to a folder remote, clone it elsewhere, check out v0 there"
	cd $(DEMO)/cars && $(DSVC) remote add origin ../remote && $(DSVC) push origin
	$(DSVC) clone $(DEMO)/remote $(DEMO)/teammate
	cd $(DEMO)/teammate && $(DSVC) checkpoint list && $(DSVC) checkout v0 && $(DSVC) status && $(DSVC) fsck
	$(PY) -c "import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); \
	  key=lambda x: json.dumps(x, sort_keys=True); \
	  same=all(sorted(map(key,a[k]))==sorted(map(key,b[k])) for k in ('images','categories','annotations')); \
	  print('v0 annotations in the clone:', same)" \
	  $(DEMO)/v0-instances.json $(DEMO)/teammate/annotations/instances.json

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.tree --sizes 100000,1000000 --edits 1000
	$(PY) -m benchmarks.store
	$(PY) -m benchmarks.workdir
	$(PY) -m benchmarks.metrics
	$(PY) -m benchmarks.diff
	$(PY) -m benchmarks.remote

lint: $(STAMP)
	$(VENV)/bin/ruff check dsvc tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(DEMO) bench-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
