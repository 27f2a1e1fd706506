# The README's two commands: `make demo` and `make test`. Both create .venv and install everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.qualmet-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test bench clean lock

install: $(STAMP)

# torch/torchvision are pinned to the releases pip takes from this machine's disk (others download GBs);
# constraints.txt pins every other package, so each fresh .venv computes the same numbers.
$(STAMP): pyproject.toml Makefile constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@touch $(STAMP)

# Re-pin constraints.txt to what .venv holds now (after adding or upgrading a dependency on purpose).
lock: install
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e '.[dev,bench]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^qualmet'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

demo: install
	$(BIN)/qualmet demo --out $(DEMO_OUT)

# The report's browser test drives Debian's chromium (installed here when missing; Playwright's own
# browser download is not used).
test: install
	./scripts/install-browser.sh
	$(BIN)/python -m pytest -q

bench: install
	set -o pipefail; $(BIN)/pip install -q -c constraints.txt -e '.[bench]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
