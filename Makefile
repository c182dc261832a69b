# compara: `make demo` runs the whole pipeline on the shipped sample; `make test` runs the fast tests.
# Both create .venv on first use (python3 -m venv + pip) and re-install only when the
# requirements change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests and demos never touch the network: a missing model file fails fast instead of hanging.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
PYTEST_ARGS ?=

.PHONY: help install demo test test-all bench lint app app-check clean sample-bz2

help:
	@echo "make demo      run the whole pipeline on the shipped sample and print what it produced"
	@echo "make test      run the fast test suite (what CI runs)"
	@echo "make test-all  the fast suite plus slow tests (real bundled models)"
	@echo "make bench     run the benchmarks in bench/ (see BENCHMARKS.md)"
	@echo "make lint      ruff"
	@echo "make app       open the Streamlit app on localhost"
	@echo "make app-check open the app in headless Chromium, ask a question, save bench/out/app.png"
	@echo "make install   create .venv and install everything (done by the targets above)"

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/compara demo

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

bench: $(STAMP)
	$(OFFLINE) $(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .

app: $(STAMP)
	$(OFFLINE) $(BIN)/compara app

# The real-browser check: Debian's chromium (installed here if missing), the app on a free
# localhost port, a question asked, screenshots in bench/out/. APP_CHECK_ARGS="-s model.base=..."
app-check: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -qq && $$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y -qq chromium; }
	$(OFFLINE) $(BIN)/python -m compara.app.check $(APP_CHECK_ARGS)

sample-bz2: $(STAMP)
	$(BIN)/python data/sample/build.py --bz2

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
