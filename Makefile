# calohls: set up, simulate the default data set, test.
#
#   make run     set up .venv, simulate data/clusters.h5, train runs/default, evaluate it (each step once)
#   make test    set up .venv, run the tests and the linter
#   make bench   set up .venv, run the benchmarks (JSON under benchmarks/out/)
#   make clean   remove caches and the default data set; `make distclean` also removes .venv
#
# The virtual environment is (re)installed only when pyproject.toml changes (stamp file inside .venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.calohls-installed

# The built-in default data set and run of `make run`.
DATA   := data/clusters.h5
RUN    := runs/default
EVENTS ?= 60000
SEED   ?= 1

.DEFAULT_GOAL := run
.PHONY: run test bench clean distclean

run: $(RUN)/eval/metrics.json | $(STAMP)

$(RUN)/eval/metrics.json: $(RUN)/run.json
	$(BIN)/calohls evaluate $(RUN) --overwrite

$(RUN)/run.json: $(DATA)
	$(BIN)/calohls train $(DATA) -o $(RUN) --overwrite

$(DATA): | $(STAMP)
	@mkdir -p $(@D)
	$(BIN)/calohls simulate --events $(EVENTS) --seed $(SEED) -o $@
	$(BIN)/calohls inspect $@

test: | $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

bench: | $(STAMP)
	$(BIN)/python benchmarks/run.py

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "error: calohls needs Python 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." \
	       "Run with PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[all]'
	@touch $@

clean:
	rm -rf .pytest_cache .ruff_cache build dist benchmarks/out $(DATA) $(RUN)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
