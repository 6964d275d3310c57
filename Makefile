# A tiny task runner. `make test` on a fresh machine installs everything and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a GPU machine set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test serve summary export bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[serve,train,dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Serve the embedded default model from model_repository/. While no trained model is committed
# there (the default-model issue), serve an UNTRAINED export from build/ instead, and say so.
MODEL ?= margipose-lite
serve: install
	@if [ -d model_repository/$(MODEL) ]; then \
	    $(BIN)/serve --model-name $(MODEL) --model-repository model_repository; \
	else \
	    echo "No trained $(MODEL) in model_repository/: serving an UNTRAINED export"; \
	    [ -d build/model_repository/$(MODEL) ] || \
	        $(BIN)/margipose-export --variant $(MODEL) --repository build/model_repository; \
	    $(BIN)/serve --model-name $(MODEL) --model-repository build/model_repository; \
	fi

summary: install
	$(BIN)/margipose-summary

export: install
	$(BIN)/margipose-export --variant margipose-lite --repository model_repository

bench: install
	$(BIN)/python bench/model_cpu.py
	$(BIN)/python bench/marginal_vs_volumetric.py
