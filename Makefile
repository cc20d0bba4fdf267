# digest: `make run` installs into .venv and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test check lint typecheck readme messages bench bench-million clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(BIN)/digest demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

lint: $(TEST_STAMP)
	$(BIN)/ruff check digest tests benchmarks
	$(BIN)/ruff format --check digest tests benchmarks

typecheck: $(TEST_STAMP)
	$(BIN)/mypy digest

check: lint typecheck test

# Figures, not pass/fail: messages per second over real SMTP to a sink in another process.
bench: $(STAMP)
	$(BIN)/python benchmarks/send_throughput.py --subscribers 20000
	$(BIN)/python benchmarks/import_subscribers.py --rows 100000

# The same, plus 1,000,000 recipients (seeding them takes minutes): peak RSS, first message.
bench-million: $(STAMP)
	$(BIN)/python benchmarks/send_throughput.py --subscribers 20000 --million

# Figures: a burst of one-click unsubscribe POSTs and /healthz against a real digest serve.
.PHONY: bench-web
bench-web: $(STAMP)
	$(BIN)/python benchmarks/web_burst.py

# Regenerate the configuration reference in README.md from digest/config/.
readme: $(STAMP)
	$(BIN)/python -m digest.config --update-readme

# Extract the texts readers see (babel.cfg) into digest/locale/digest.pot and bring every
# catalogue up to date with it. New entries are empty until translated, and
# tests/core/test_i18n.py fails until they are. A new locale: see "Languages" in README.md.
POT := digest/locale/digest.pot
messages: $(STAMP)
	$(BIN)/pybabel extract --mapping-file babel.cfg --keywords N_ --add-comments TRANSLATORS: \
		--add-location file --sort-by-file --no-wrap --omit-header --output-file $(POT) .
	$(BIN)/pybabel update --input-file $(POT) --output-dir digest/locale --domain digest \
		--no-fuzzy-matching --ignore-obsolete --no-wrap

clean:
	rm -rf $(VENV) digest.db digest.db-* outbox .pytest_cache .mypy_cache .ruff_cache
