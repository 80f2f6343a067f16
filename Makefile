# calohls: set up, run the built-in study, test.
#
#   make run     set up .venv, run the built-in study into study/ (simulate → train → evaluate → PTQ → QAT →
#                firmware → study/report.html); a second `make run` redoes only what changed
#   make test    set up .venv, run the linter and the tests
#   make bench   set up .venv, run the benchmarks (JSON in benchmarks/results.json)
#   make clean   remove caches and the study folder; `make distclean` also removes .venv
#
# The virtual environment is (re)installed only when pyproject.toml changes (stamp file inside .venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.calohls-installed
STUDY  ?= study

.DEFAULT_GOAL := run
.PHONY: run test bench clean distclean

run: | $(STAMP)
	$(BIN)/calohls run -o $(STUDY)

test: | $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n auto --dist loadfile

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
	rm -rf .pytest_cache .ruff_cache build dist benchmarks/out $(STUDY)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
