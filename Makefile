# `make run` and `make test` both create or reuse .venv and install what the project needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean venv compiled pure test-compiled

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kvmmu run

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/python -m pytest

# The hot modules compiled with mypyc when a C compiler is present (kvmmu/compiled.py lists them):
# the protocol group, then the explorer's group in a second mypyc run, so that the explorer treats
# the protocol's classes as plain Python classes (`kvmmu check` runs it compiled over the
# interpreted protocol). Without a compiler kvmmu stays pure Python; `make pure` removes the build.
# -O1: the C compiles in a fraction of -O3's time for most of its speed.
compiled: $(STAMP)
	@$(BIN)/python src/kvmmu/compiled.py clean >/dev/null
	@if command -v "$${CC:-cc}" >/dev/null 2>&1; then \
	    cd src && for group in protocol explorer; do \
	        MYPYC_OPT_LEVEL=$${MYPYC_OPT_LEVEL:-1} ../$(BIN)/mypyc \
	            $$(../$(BIN)/python kvmmu/compiled.py sources $$group) >/dev/null || exit 1; \
	    done; \
	    ../$(BIN)/python kvmmu/compiled.py status; \
	else echo "make compiled: no C compiler ($${CC:-cc}): kvmmu stays pure Python"; fi

pure: $(STAMP)
	$(BIN)/python src/kvmmu/compiled.py clean

# The suite on the compiled protocol (pytest --compiled stops if it did not load), then the
# explorer's tests (marked explorer; they read generator frames) on the compiled explorer over the
# interpreted protocol, as `kvmmu check` runs (--compiled-explorer stops if they did not load so;
# it samples the slowest test: tests/conftest.py says why). The build is removed afterwards, so
# that `make test` keeps testing the pure modules.
test-compiled: $(STAMP)
	$(MAKE) --no-print-directory compiled
	@if $(BIN)/python src/kvmmu/compiled.py status | grep -q "pure Python"; then \
	    echo "make test-compiled: nothing compiled (no C compiler); make test is the suite"; \
	else \
	    status=0; \
	    $(BIN)/python -m pytest --compiled || status=$$?; \
	    KVMMU_INTERPRETED=1 $(BIN)/python -m pytest --compiled-explorer || status=$$?; \
	    $(BIN)/python src/kvmmu/compiled.py clean >/dev/null; \
	    exit $$status; \
	fi

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	test ! -x $(BIN)/python || $(BIN)/python src/kvmmu/compiled.py clean
	rm -rf $(VENV) kvmmu-out .pytest_cache .mypy_cache .ruff_cache
