# Every target creates .venv and installs the project itself, so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: demo test test-fast lint bench clean venv examples browser node-client screenshots

NODE_CLIENT := tests/node/node_modules/.package-lock.json

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples]'
	touch $(STAMP)

venv: $(STAMP)

## The example pods (examples/pods/*.c) compiled to wasm32-wasi in examples/build/; incremental.
examples: $(STAMP)
	$(PY) examples/build.py

## The browser node's bundle in p2pkube/browser/dist/ (Pyodide, msgpack wheel, yjs, WASI shim,
## the agent's sources; needs node/npm); incremental. `p2pkube signal` serves it.
browser: $(STAMP)
	$(PY) p2pkube/browser/build.py

## The official Kubernetes JavaScript client (@kubernetes/client-node), pinned in
## tests/node/package-lock.json, for the test that drives an agent's Kubernetes API from Node.js.
$(NODE_CLIENT): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund

node-client: $(NODE_CLIENT)

## A local 3-peer cluster on loopback doing real work; Ctrl-C stops it (DEMO_ARGS="--duration 30").
demo: $(STAMP) examples browser
	$(PY) examples/demo.py $(DEMO_ARGS)

## The dashboard's pictures in docs/images/ (docs/dashboard.md), taken in headless Chromium from
## a local cluster that examples/screenshots.py starts and stops.
screenshots: $(STAMP) examples browser
	$(PY) examples/screenshots.py

## Lint, then the whole test suite (real processes, real aiortc, real pycrdt): first every test
## but the serial ones, spread over two processes (each module's tests on one of them, the
## NodePort modules on the same one: tests/conftest.py), then the serial ones one at a time
## (they time liveness, failover or stalls, or need the network lab: the machine is theirs).
test: $(STAMP) lint examples browser node-client
	$(PY) -m pytest -q -p no:cacheprovider -m "not serial" -n 2 --dist loadgroup --durations=15
	$(PY) -m pytest -q -p no:cacheprovider -m serial --durations=15

## The inner loop (under a minute): lint and every test that starts no agent process, browser or
## network namespace (tests/conftest.py marks those slow), spread over two processes (pytest-xdist).
test-fast: $(STAMP) lint examples
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" -n 2

## Style (ruff), the layers (import-linter contracts in pyproject.toml) and the types (mypy on
## p2pkube/ and signaling/, zero errors).
lint: $(STAMP)
	$(VENV)/bin/ruff check p2pkube signaling tests bench harness examples hatch_build.py
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

## Every benchmark; rewrites docs/benchmarks.md.
bench: $(STAMP) examples browser
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) demo-data .pytest_cache examples/build p2pkube/browser/dist p2pkube/browser/.cache p2pkube/browser/web/node_modules tests/node/node_modules
