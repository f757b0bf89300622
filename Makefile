# otel-mta — every step a newcomer or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help setup setup-stack setup-tools setup-backends run demo test test-python test-plugin docs monitoring bench bench-system-python fuzz clean

help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml $(wildcard otel_mta/*.c otel_mta/*/*.c)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,top]'
	touch $@

tests/fixtures/msgpack_js/node_modules: tests/fixtures/msgpack_js/package-lock.json
	cd tests/fixtures/msgpack_js && npm ci --no-audit --no-fund --silent
	touch $@

tests/gelf/node/node_modules: tests/gelf/node/package-lock.json
	cd tests/gelf/node && npm ci --no-audit --no-fund --silent
	touch $@

setup: $(STAMP) tests/fixtures/msgpack_js/node_modules tests/gelf/node/node_modules  ## create .venv, build the C speedups, install Python and node test deps

setup-stack: setup  ## Redis (apt), FerretDB (Go), ZoneMTA, WildDuck + Node 22 (npm), SMTP sink — cached in .cache/
	PYTHON=$(abspath $(PY)) STACK_SKIP_PY=1 bash tests/stack/setup.sh

setup-tools:  ## the Collector (ocb) and Helm, built from Go modules into .cache/
	collector-config/build.sh >/dev/null
	helm/install-helm.sh >/dev/null

BACKENDS := prometheus promtool victoria-metrics vmalert victoria-logs jaeger
setup-backends:  ## Prometheus, promtool, VictoriaMetrics, vmalert, VictoriaLogs, Jaeger, built from Go modules into .cache/backends/
	@for b in $(BACKENDS); do tools/backends.sh $$b >/dev/null || exit 1; done

run: setup  ## run the sidecar on its embedded default: OTLP JSON files under ./otel-mta-data/otlp
	OTEL_METRIC_EXPORT_INTERVAL=$${OTEL_METRIC_EXPORT_INTERVAL:-10000} $(VENV)/bin/otel-mta run

demo: setup  ## send realistic ZoneMTA remote-log traffic to a running sidecar (make run in another terminal)
	$(PY) tools/replay.py --rate 50 --messages 200

test: setup setup-stack setup-tools setup-backends test-plugin test-python  ## set up and run every test
	@echo "all tests passed"

test-python: setup  ## the Python tests alone (pytest; needs setup-stack, setup-tools and setup-backends done)
	CI=$${CI:-true} $(PY) -m pytest -q -p no:cacheprovider

test-plugin:  ## the plugins' own tests (node --test): ZoneMTA's real plugin host, a real Haraka 3.3.4
	zonemta-plugin/scripts/ci.sh
	haraka-plugin/scripts/ci.sh

docs: setup  ## regenerate docs/metrics.md from the catalog
	$(PY) -m otel_mta.docs

monitoring: setup  ## regenerate the dashboards, alert and recording rules from monitoring/config.yaml, copy them into the chart
	$(PY) -m monitoring
	bash helm/sync-monitoring.sh

bench: setup  ## throughput per CPU-second, loss, RSS and latency, each beside its baseline (OTel SDK; Collector udplog)
	$(PY) bench/remote_log.py
	$(PY) bench/gelf.py
	$(PY) bench/events.py
	$(PY) bench/grpc_batch.py
	$(PY) bench/footprint.py
	$(PY) bench/wildduck_poll.py
	cd zonemta-plugin && npm run bench
	cd haraka-plugin && npm run bench

SYSTEM_PYTHON ?= /usr/bin/python3
SYSTEM_VENV := .cache/venv-system
bench-system-python: setup  ## bench/remote_log.py on the system CPython (Debian's has PGO + LTO, like the Docker image's)
	test -x $(SYSTEM_VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(SYSTEM_VENV)
	$(SYSTEM_VENV)/bin/pip install -q '.[test,top]'
	$(SYSTEM_VENV)/bin/python bench/remote_log.py --runs 3

fuzz: setup  ## one million hostile inputs through the decoders (C and Python must agree, no crash)
	$(PY) bench/fuzz_decoders.py --inputs 1000000

clean:  ## remove .venv, build outputs and ./otel-mta-data (keeps .cache/)
	rm -rf $(VENV) build *.egg-info otel_mta/sources/*.so .pytest_cache otel-mta-data
