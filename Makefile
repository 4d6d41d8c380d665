# Every target calls the `yap` CLI or pip; the logic lives in Python (yap_server/cli.py).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.yap-installed

.PHONY: install test serve lint demo

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e .
	$(BIN)/yap install
	$(BIN)/yap demo build
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

serve: install
	$(BIN)/yap serve $(if $(ENGINE),--engine $(ENGINE)) $(if $(MODEL),--model $(MODEL))

demo: install
	$(BIN)/yap demo build --force

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
