# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-stamp

.PHONY: run test lint bench clean install ci

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# Third-party dependencies change rarely: install them once per change of the project files.
$(DEPS_STAMP): $(BIN)/python pyproject.toml clients/python/pyproject.toml
	$(BIN)/pip install --quiet './clients/python' '.[dev]'
	touch $@

# Our own two distributions, reinstalled every time so tests always run the installed code.
install: $(DEPS_STAMP)
	@# setuptools never deletes from build/: a module removed from the source would ship on.
	rm -rf build clients/python/build
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --force-reinstall \
		./clients/python .

run: install
	$(BIN)/busd

# Two passes: the suite on $(TEST_WORKERS) workers (pytest-xdist), then the tests marked
# `serial` (timing assertions) alone on an otherwise idle machine. Plain `pytest` runs all.
TEST_WORKERS ?= 2
test: install
	$(BIN)/busd schemas check schemas
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" $(PYTEST_ARGS)
	$(BIN)/pytest -m serial $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check busd clients tests bench
	$(BIN)/ruff check busd clients/python tests bench
	$(BIN)/mypy busd clients/python/busd_client clients/python/busd_protocol
	$(BIN)/lint-imports

# Peers (nats-server, redis-server and their Python clients) are installed when missing; a
# peer that cannot be had is skipped and reported. BENCH_ARGS=--quick for a short run.
bench: install
	bash bench/install.sh $(BIN)/python
	$(BIN)/python -m bench $(BENCH_ARGS)

ci: lint test

clean:
	rm -rf $(VENV) var build dist *.egg-info clients/python/build clients/python/*.egg-info \
		.pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
