# The two commands the README opens with: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

# The exact versions tested; pyproject.toml holds the ranges a library user installs against.
CONSTRAINTS := constraints.txt

.PHONY: demo test lint venv compat clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first on its own so pip takes the pinned CPU build.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(CONSTRAINTS) torch
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(DEV_STAMP): pyproject.toml $(CONSTRAINTS) $(STAMP)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamrec demo

# The layers contract (pyproject.toml [tool.importlinter], docs/architecture.md) runs in both.
lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/pytest -q

# Another Python (make compat COMPAT_PYTHON=python3.13): the parts that do not need torch, in
# .venv-compat (this machine has torch wheels for 3.11 only; see docs/architecture.md).
COMPAT_PYTHON ?= python3.12
COMPAT_TESTS := tests/test_config.py tests/test_quality.py tests/profiles/test_store.py tests/profiles/test_sql.py \
	tests/profiles/test_query_bruteforce.py tests/log tests/joiner
compat:
	rm -rf .venv-compat && $(COMPAT_PYTHON) -m venv .venv-compat
	.venv-compat/bin/pip install -q -c $(CONSTRAINTS) numpy numba msgspec zstandard typer click rich pyarrow fastapi \
		uvicorn grpcio protobuf prometheus-client lmdb redis usearch sqlglot psutil tomli-w pytest pytest-timeout \
		hypothesis httpx
	PYTHONPATH=src .venv-compat/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS) \
		--deselect tests/test_config.py::test_a_ttl_a_window_and_a_sync_interval_read_1w_alike \
		--deselect tests/joiner/test_joiner_log.py::test_cli_runs_once_and_prints_counters \
		--deselect tests/joiner/test_joiner_log.py::test_cli_rejects_a_bad_rate_naming_it

clean:
	rm -rf $(VENV) .venv-compat build dist src/*.egg-info .pytest_cache .ruff_cache
