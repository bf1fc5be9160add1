# calm-mail: `make demo` and `make test` work on a fresh clone with nothing but Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean install

# The runtime, plus the `dev` extra: the sandbox, demo and bench dependencies and the test tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/calm-mail demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check calm_mail tests benchmarks
	$(BIN)/ruff format --check calm_mail tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# BENCH_ARGS: e.g. --quick, --only edition,plan, --baseline REV (the code the edition is
# compared with; default 84ac4e5, before issue #13), --json FILE
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data out .bench *.egg-info calm_mail.db
	git worktree prune
