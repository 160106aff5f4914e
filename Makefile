# swreg — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev chromium fonts-noto-cjk postgresql-15 openssl opensc softhsm2 iproute2 \
  curl jq sqlite3

.PHONY: setup test demo lint typecheck clean bench fuzz

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=70.1'
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Each pass runs as two processes at once (scripts/test-split): the tests that use pcscd's
# readers one at a time in one, every other test in the other.
PYTEST := scripts/test-split $(PY) -m pytest -q

test: lint typecheck
	PY=$(PY) scripts/with-pcscd $(PYTEST)
	PY=$(PY) scripts/with-pcscd scripts/with-postgres env SWREG_TEST_DATABASE=postgresql $(PYTEST)

demo: setup
	PY=$(PY) scripts/with-pcscd $(VENV)/bin/swreg demo --serve

lint: setup
	$(PY) -m ruff check engine plugins readers tests
	$(PY) -m ruff format --check engine plugins readers tests
	$(VENV)/bin/lint-imports

typecheck: setup
	$(PY) -m mypy engine plugins readers

bench: setup
	@if [ -x /usr/lib/postgresql/15/bin/initdb ]; then \
	  PY=$(PY) scripts/with-postgres $(PY) bench/run.py $(BENCH_ARGS); \
	else \
	  echo "bench: no PostgreSQL 15 server, its figures will be reported as not measured"; \
	  $(PY) bench/run.py $(BENCH_ARGS); \
	fi

# A longer hostile-input run than the tests' (atheris on the parsers when it installs, then
# Hypothesis on every property); FUZZ_SECONDS=N sets the budget.
fuzz: setup
	$(PY) -m pip install -q atheris || echo "atheris did not install: Hypothesis only"
	$(PY) scripts/fuzz.py --seconds $(or $(FUZZ_SECONDS),300)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
