# connvo-rtc: `make run` starts the hub, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=

# binary:debian-package pairs the tests need on the machine
SYSTEM_DEPS := redis-server:redis-server turnserver:coturn chromium:chromium \
               espeak-ng:espeak-ng sox:sox

.PHONY: install run test test-fast system-deps lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[tap,loadtest,test,dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the hub with embedded defaults (in-memory state, dev auth, demo page) on 127.0.0.1:8080
run: $(STAMP)
	$(BIN)/connvo-rtc serve $(ARGS)

## system-deps: install the Debian packages the tests use, when missing
system-deps:
	@missing=""; \
	for pair in $(SYSTEM_DEPS); do \
	  bin=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

## test: everything, slow end-to-end tests included (what CI runs)
test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: skip the tests marked slow (real media, browsers, many processes)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check signaling media turn tests bench
	$(BIN)/mypy

bench: $(STAMP)
	@for b in bench/*.py; do m=$$(basename $$b .py); [ "$$m" = __init__ ] && continue; \
	  echo "== bench.$$m"; $(BIN)/python -m bench.$$m; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The Autobahn|Testsuite runs on Python 2.7: python2.7 on PATH, else pyenv's (pyenv install 2.7.18).
PYTHON27 ?= python2.7
AUTOBAHN := .venv-autobahn
AUTOBAHN_STAMP := $(AUTOBAHN)/.installed
AUTOBAHN_REQS := tests/conformance/requirements-autobahn.txt

$(AUTOBAHN_STAMP): $(AUTOBAHN_REQS)
	@py27=""; \
	for p in $(PYTHON27) $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/2.7*/bin/python2.7 2>/dev/null); do \
	  if "$$p" -c 'import sys; assert sys.version_info[:2] == (2, 7)' >/dev/null 2>&1; then py27=$$p; break; fi; \
	done; \
	if [ -z "$$py27" ]; then \
	  echo "make conformance needs Python 2.7 for the Autobahn|Testsuite: pyenv install 2.7.18," \
	       "or PYTHON27=/path/to/python2.7"; exit 1; \
	fi; \
	echo "building $(AUTOBAHN)/ with $$py27"; \
	export PIP_NO_PYTHON_VERSION_WARNING=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore; \
	rm -rf $(AUTOBAHN) && \
	"$$py27" -m pip install --quiet --target $(AUTOBAHN)/bootstrap virtualenv==16.7.12 && \
	PYTHONPATH=$(AUTOBAHN)/bootstrap "$$py27" -m virtualenv --quiet $(AUTOBAHN) && \
	$(AUTOBAHN)/bin/pip install --quiet -r $(AUTOBAHN_REQS) && \
	$(AUTOBAHN)/bin/python -c 'import autobahntestsuite' && touch $@

.PHONY: conformance
## conformance: RFC 6455 conformance, the Autobahn|Testsuite (not in make test)
conformance: $(STAMP) $(AUTOBAHN_STAMP)
	$(BIN)/python -m tests.conformance.autobahn --wstest $(AUTOBAHN)/bin/wstest
