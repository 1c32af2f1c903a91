# The two commands a new user needs (README): `make demo` and `make test`.
# Both run scripts/bootstrap.sh first, which installs what is missing and is a
# no-op when everything is already there.
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
# The model directory (clipguard/model_files.py): the demo and benchmarks use the shared assets' SCRFD model.
CLIPGUARD_ASSETS ?= $(abspath ../shared/assets)
export CLIPGUARD_MODEL_DIR ?= $(CLIPGUARD_ASSETS)/models

.PHONY: bootstrap demo test test-fast bench lint lock clean-services

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m pipeline.cli demo

test: bootstrap
	$(PY) -m pytest -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not slow"

bench: bootstrap
	$(PY) -m bench.bench_detector --arch ViT-L-14 --batch-sizes 1,8,32
	$(PY) -m bench.bench_frames_faces
	$(PY) -m bench.bench_stream

lint: bootstrap
	$(PY) -m ruff check .

# Re-resolve requirements/*.lock (hashed, with uv) after a change to pyproject.toml's dependencies;
# the next `make test` builds the new dependency venv. `make lock ARGS=--upgrade` moves every pin.
lock: bootstrap
	bash scripts/lock.sh $(ARGS)

clean-services:
	$(PY) -m pipeline.cli services reap
