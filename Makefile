# The developer interface. `make test` and `make demo` work on a fresh machine of this kind:
# they install what they need (Debian packages, the virtualenv, the Go-built stack) first.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: test demo stack-up stack-down stack-env crds bench lint system-deps venv unit chaos

system-deps:
	@bash devstack/install-system-deps.sh

$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@rm -f .venv/.installed-* && touch $(VENV_STAMP)

venv: $(VENV_STAMP)

stack-up: system-deps venv
	@$(PY) -m devstack.stack up

stack-down: venv
	@$(PY) -m devstack.stack down

stack-env: venv
	@$(PY) -m devstack.stack env

crds: venv
	@$(PY) -m capstan.api.crdgen crds
	@cp crds/capstan.dev_*.yaml charts/capstan/crds/

lint: venv
	@$(PY) -m ruff check capstan devstack tests bench
	@$(PY) -m mypy

unit: venv
	@$(PY) -m pytest -m 'not stack' -q

# The whole suite against the real local stack (built on first run, reused after). Most stack tests
# wait on real time (rooms, failovers, timeouts), so they run in 2 parallel sessions: each has its own
# namespaces, buckets and pod runner (TEST_WORKERS=1 for a serial run).
TEST_WORKERS ?= 2
test: stack-up
	@$(PY) -m ruff check capstan devstack tests bench
	@$(PY) -m mypy
	@$(PY) -m pytest -q -n $(TEST_WORKERS)

# ROOM=janus records a Janus VideoRoom instead of a LiveKit room.
ROOM ?= livekit
demo: stack-up
	@$(PY) -m devstack.demo --room $(ROOM)

# The long chaos run of issue 9 (make test runs one short run per room backend): 4 runs x 3 SIGKILLs
# of the recorder per backend, MinIO frozen up to 120 s around some; failover gaps in chaos.jsonl.
CHAOS_RUNS ?= 4
chaos: stack-up
	@CAPSTAN_CHAOS_RUNS=$(CHAOS_RUNS) CAPSTAN_CHAOS_KILLS=3 CAPSTAN_CHAOS_MAX_FREEZE_SECONDS=120 \
	  CAPSTAN_CHAOS_REPORT=bench/results/chaos.jsonl $(PY) -m pytest -q -p no:xdist tests/recorder/test_chaos.py

bench: stack-up
	@$(PY) -m bench
