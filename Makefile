# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test unit lint bench bench-quick reliability clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/notifier dev

# Headless Chromium (and CJK fonts) for the outbox page and console tests (the console test
# drives it with Playwright), from Debian's packages when we may install them; without it
# those tests are skipped, with their reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk \
	  fonts-noto-color-emoji >/dev/null; } || echo "chromium not installed: the browser tests are skipped"

test: install browser
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

# The reliability suite at the issue's full sizes (5,000-person broadcasts, 30 s of 500s).
reliability: install
	NOTIFIER_RELIABILITY_FULL=1 $(BIN)/python -m pytest tests/reliability

bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .notifier .pytest_cache .mypy_cache .ruff_cache *.egg-info
