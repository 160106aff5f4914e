# swreg — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev chromium fonts-noto-cjk

.PHONY: setup test demo lint typecheck clean bench

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
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: setup
	$(PY) -m ruff check engine plugins readers tests
	$(PY) -m ruff format --check engine plugins readers tests
	$(PY) -m mypy engine
	PY=$(PY) scripts/with-pcscd $(PY) -m pytest -q

demo: setup
	PY=$(PY) scripts/with-pcscd $(VENV)/bin/swreg demo --serve

lint: setup
	$(PY) -m ruff check engine plugins readers tests
	$(PY) -m ruff format --check engine plugins readers tests

typecheck: setup
	$(PY) -m mypy engine

bench: setup
	$(PY) bench/turnkey.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
