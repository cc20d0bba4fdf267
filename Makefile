# digest: `make run` installs into .venv and runs the demo; `make test` runs the tests.
# Both install from the lock files in requirements/ (every package pinned, with the hashes
# of its files); `make lock` regenerates them from pyproject.toml. See "Reproducible
# installs" in README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
APP_LOCK := requirements/app.txt
TEST_LOCK := requirements/test.txt

.PHONY: run test check lint typecheck readme messages bench bench-million lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The dependencies of a lock file, each file checked against its hashes (pip and setuptools
# among them); then digest itself, built by that setuptools, taking no dependency of its
# own choosing; then `pip check`, which names what a lock older than pyproject.toml misses.
define install_locked
	$(BIN)/python -m pip install --quiet --require-hashes -r $(1)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
endef

$(STAMP): $(APP_LOCK) pyproject.toml | $(BIN)/python
	$(call install_locked,$(APP_LOCK))
	touch $@

# The test lock holds every pin of the app lock, at the same version.
$(TEST_STAMP): $(TEST_LOCK) pyproject.toml | $(BIN)/python
	$(call install_locked,$(TEST_LOCK))
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

# Regenerate the lock files from pyproject.toml (and requirements/tools.in) with uv, for
# Python 3.11 on Linux x86_64 whatever machine runs it. Every pin moves to the newest
# release allowed; `make lock LOCK_UPGRADE=` keeps the pins that still fit and changes only
# what an edit of pyproject.toml needs, `LOCK_UPGRADE='--upgrade-package NAME'` moves one.
UV_VERSION := 0.13.9
LOCK_UPGRADE ?= --upgrade
LOCK_OPTIONS = --quiet --generate-hashes --no-header --python-version 3.11 \
	--python-platform x86_64-unknown-linux-gnu $(LOCK_UPGRADE)
# $(call lock_header,FILE,WHAT): the lines that open a lock file, written before uv's output.
define lock_header
	@{ printf '%s\n' '# $(2).' \
		'# Every package is pinned with the hashes of its files, resolved for Python 3.11 on' \
		'# Linux x86_64. Generated from pyproject.toml and requirements/tools.in by `make lock`' \
		'# (uv pip compile): do not edit. How to update: "Reproducible installs" in README.md.' \
		&& cat $(1); } > $(1).new && mv $(1).new $(1)
endef
TEST_LOCK_IS := What `make test` and CI install: digest with its extras test, cluster and postgres
APP_LOCK_IS := What `make run` and a deployment install: digest with its extras cluster and postgres

lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile $(LOCK_OPTIONS) --extra test --extra cluster --extra postgres \
		-o $(TEST_LOCK) pyproject.toml requirements/tools.in
	$(call lock_header,$(TEST_LOCK),$(TEST_LOCK_IS))
	$(BIN)/uv pip compile $(LOCK_OPTIONS) --extra cluster --extra postgres -c $(TEST_LOCK) \
		-o $(APP_LOCK) pyproject.toml requirements/tools.in
	$(call lock_header,$(APP_LOCK),$(APP_LOCK_IS))

clean:
	rm -rf $(VENV) digest.db digest.db-* outbox .pytest_cache .mypy_cache .ruff_cache
