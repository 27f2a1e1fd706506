# The README's two commands: `make demo` and `make test`. Both create .venv and install everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.qualmet-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-fast bench clean lock

install: $(STAMP)

# torch/torchvision are pinned to the releases pip takes from this machine's disk (others download GBs);
# constraints.txt pins every other package, so each fresh .venv computes the same numbers.
$(STAMP): pyproject.toml Makefile constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)

# Re-pin constraints.txt on purpose: resolve pyproject's ranges afresh in a throw-away venv (the newest
# versions they allow, torch as above), freeze it, then run the tests and commit the new pins.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	set -o pipefail; .lock-venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; .lock-venv/bin/pip install -q -e '.[dev,bench]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; { grep '^#' constraints.txt; .lock-venv/bin/pip list --format=freeze --exclude-editable --exclude pip --exclude setuptools --exclude wheel | grep -v '^qualmet=='; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf .lock-venv

demo: install
	$(BIN)/qualmet demo --out $(DEMO_OUT)

# The report's browser test drives Debian's chromium (installed here when missing; Playwright's own
# browser download is not used).
test: install
	./scripts/install-browser.sh
	$(BIN)/python -m pytest -q

# The edit loop (docs/development.md): every test but those marked slow (they train a detector, run a
# whole experiment or the demo, or drive the browser). `make test` still runs everything.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e '.[bench]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
