# Every target calls the `yap` CLI or pip; the logic lives in Python (yap_cli/).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.yap-installed
# `make serve` is the local development entry point: it supplies a development key and a connection
# cap when the environment has none. `yap serve` itself requires both to be set.
TEXT_API_KEY ?= yap-dev-key
MAX_CONCURRENT_CONNECTIONS ?= 16

.PHONY: install test serve lint demo quant-env build-engine fuzz quant-quality

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e .
	$(BIN)/yap install
	$(BIN)/yap demo build
	touch $(STAMP)

# The quantization quality suite on SmolLM2 (every format built and scored) takes an hour or more of
# CPU, so `make test` leaves it to `make quant-quality`.
test: install
	$(BIN)/yap install --test-tools
	$(BIN)/python -m pytest -m "not quant_quality" $(PYTEST_ARGS)

quant-quality: install
	$(BIN)/python -m pytest -m quant_quality -s $(PYTEST_ARGS)

# Protocol fuzzing over a real socket; `make test` runs the same tests with a few hundred frames.
FUZZ_FRAMES ?= 10000
fuzz: install
	YAP_FUZZ_FRAMES=$(FUZZ_FRAMES) $(BIN)/python -m pytest tests/fuzz -q -s $(PYTEST_ARGS)

# Nothing set: the embedded default (SmolLM2-135M-Instruct) and the demo tool classifier; MODEL=demo serves
# the tiny random-weight test model; MODEL=<HF id or path> any other model.
serve: install
	TEXT_API_KEY=$(TEXT_API_KEY) MAX_CONCURRENT_CONNECTIONS=$(MAX_CONCURRENT_CONNECTIONS) \
		$(BIN)/yap serve $(if $(ENGINE),--engine $(ENGINE)) $(if $(MODEL),--model $(MODEL)) $(if $(QUANT),--quant $(QUANT))

demo: install
	$(BIN)/yap demo build --force

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint docker/trt/Dockerfile docker/vllm/Dockerfile

quant-env: install
	$(BIN)/yap quant env

build-engine: install
	$(BIN)/yap quant build --model $(MODEL) --backend $(ENGINE) --mode $(QUANT) $(if $(SM),--sm $(SM)) $(if $(PUSH),--push)
