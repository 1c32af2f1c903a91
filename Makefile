# The two commands a new user needs (README): `make demo` and `make test`.
# Both run scripts/bootstrap.sh first, which installs what is missing and is a
# no-op when everything is already there.
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: bootstrap demo test test-fast bench lint clean-services

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m pipeline.cli demo

test: bootstrap
	$(PY) -m pytest -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not slow"

bench: bootstrap
	$(PY) bench/bench_detector.py --arch ViT-L-14 --batch-sizes 1,8,32
	$(PY) bench/bench_frames_faces.py
	$(PY) bench/bench_stream.py

lint: bootstrap
	$(PY) -m ruff check .

clean-services:
	$(PY) -m pipeline.cli services reap
