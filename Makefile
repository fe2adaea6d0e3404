# The README's two commands: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install install-dev generate policy bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

# Runtime install: the package with the local runner and S3 support.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[s3,local,tracking]'
	touch $@

$(STAMP)-dev: pyproject.toml | $(BIN)/python
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e '.[s3,local,cluster,train,tracking,dev]'
	touch $@

install: $(STAMP)
install-dev: $(STAMP)-dev

## make demo: install, then run the embedded default pipeline on this machine.
demo: $(STAMP)
	$(BIN)/maskgrpo run pipelines/toy-text.yaml

## make test: install the test dependencies, then run the whole suite.
test: $(STAMP)-dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## make generate: regenerate components/*.yaml and the chart's values.schema.json.
generate: $(STAMP)-dev
	$(BIN)/python scripts/generate.py

## make policy: checkov policy scan of the chart and Dockerfiles (its own venv: its pins clash with kfp).
policy:
	bash scripts/policy.sh

## make bench: the benchmarks in bench/ (JSON under bench/results/).
bench: $(STAMP)-dev
	$(BIN)/python bench/sampler.py

## make gpu-check: on a CUDA machine, the tiny pipeline on GPU, a ZeRO-2 NCCL update and 8B-shaped
## throughput (JSON in bench/results/gpu.json); exits 0 with {"skipped": ...} without CUDA.
gpu-check: $(STAMP)-dev
	$(BIN)/python bench/gpu.py --out bench/results/gpu.json

clean:
	rm -rf $(VENV) runs bench/results .pytest_cache
