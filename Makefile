# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test processes (pytest-xdist): one per core
TEST_WORKERS ?= auto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

.PHONY: install demo test bench bench-follow example-copy
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/eventmig demo

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python -m bench

# follow's throughput and end-to-end lag at a steady 1,000 and 10,000 appended events/s
bench-follow: $(STAMP)
	$(BIN)/python -m bench.follow --rates 1000,10000 --store sqlite
	$(BIN)/python -m bench.follow --rates 1000,10000 --store postgres

# the wheel's copy of the reference service, for `eventmig init --example shop`;
# tests/test_scaffold.py fails when it differs from upcasters/ and projections/
example-copy:
	rm -rf eventmig/scaffold/shop
	mkdir -p eventmig/scaffold/shop
	cp -r upcasters projections eventmig/scaffold/shop/
	find eventmig/scaffold/shop -name __pycache__ -prune -exec rm -rf {} +
