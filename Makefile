# Hilo — one entry point for developers, CI and ops.
# `make test` on a fresh clone installs everything, starts the infrastructure the tests need,
# runs every test and stops what it started.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# `make test` runs the tests in this many pytest-xdist workers, each with servers of its own:
# most of a run waits on brokers, databases and browsers rather than using the CPU, so three
# finish sooner than two even on 2 cores (11 min 37 s against 14 min for 2,085 tests).
TEST_WORKERS ?= 3
PROMTOOL := $(HOME)/.cache/hilo/bin/promtool

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install test test-fast faults fuzz lint fmt schema infra-prepare browser-prepare alerts-prepare load-prepare infra-up infra-down run simulate run-profile bench bench-profile bench-database bench-desk env-example compose-images compose-test clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) uv.lock pyproject.toml shared/pyproject.toml devkit/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed ## Create .venv with every package at its locked version

infra-prepare: install ## Fetch Kafka's jars and install SecantusDB into ~/.cache/hilo (once)
	$(BIN)/hilo-infra prepare

browser-prepare: ## Install Debian's chromium for the browser tests of the agent desk (once; needs root)
	@command -v chromium >/dev/null 2>&1 || [ -x "$${CHROMIUM_PATH:-/usr/lib/chromium/chromium}" ] || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing chromium (Debian package) for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is missing: run 'sudo apt-get install chromium' (or set CHROMIUM_PATH)" >&2; exit 1; \
		fi; }

alerts-prepare: ## Fetch promtool (from Debian's prometheus package, unpacked: no server installed) for the tests of the shipped alerts (once)
	@command -v promtool >/dev/null 2>&1 || [ -x "$${PROMTOOL_PATH:-$(PROMTOOL)}" ] || { \
		echo "fetching promtool (Debian's prometheus package, unpacked into $(dir $(PROMTOOL)))"; \
		tmp=$$(mktemp -d) && cd "$$tmp" && \
		{ apt-get download prometheus >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; } || \
			{ echo "cannot download Debian's prometheus package: run 'sudo apt-get update' (or set PROMTOOL_PATH)" >&2; exit 1; }; } && \
		dpkg-deb -x prometheus_*.deb unpacked && mkdir -p "$(dir $(PROMTOOL))" && \
		cp unpacked/usr/bin/promtool "$(PROMTOOL)" && cd / && rm -rf "$$tmp"; }

load-prepare: ## Install wrk (Debian package) for the webhooks' saturation run of make bench (once; optional)
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing wrk (Debian package) for the saturation run"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
				|| echo "wrk could not be installed: the saturation run uses the Python generator" >&2; \
		else \
			echo "wrk is missing ('sudo apt-get install wrk'): the saturation run uses the Python generator" >&2; \
		fi; }

test: install infra-prepare browser-prepare alerts-prepare ## Run every test against real Kafka and a MongoDB-wire server
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope

faults: install infra-prepare ## The fault matrix: each injection point x20, 20 kill -9 runs, an erasure with Kafka down 30 s, 6 kill -9 runs of channel-sms in a MongoDB outage
	HILO_FAULT_RUNS=$${HILO_FAULT_RUNS:-20} HILO_KILL_RUNS=$${HILO_KILL_RUNS:-20} \
	HILO_READ_BACK_KILL_RUNS=$${HILO_READ_BACK_KILL_RUNS:-6} \
	HILO_ERASURE_KAFKA_DOWN_SECONDS=$${HILO_ERASURE_KAFKA_DOWN_SECONDS:-30} $(BIN)/pytest -s \
		services/customer-profile/tests/test_fault_injection.py \
		services/customer-profile/tests/test_crash_recovery.py \
		services/customer-profile/tests/test_erasure.py \
		services/customer-profile/tests/test_split.py \
		services/channel-sms/tests/test_sms_kill_during_outage.py

test-fast: install alerts-prepare ## Only the tests that need no Kafka or MongoDB (the alerts' need promtool)
	$(BIN)/pytest -m "not infra"

fuzz: install infra-prepare ## Many random and broken requests at every channel route (HILO_FUZZ_EXAMPLES per route)
	HILO_FUZZ_EXAMPLES=$${HILO_FUZZ_EXAMPLES:-2000} $(BIN)/pytest tests/test_channels_never_fail_on_bad_input.py --timeout=0

lint: install ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared/src shared/tests devkit/src devkit/tests services/*/src services/*/tests tests docs/analytics

fmt: install ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: install ## Regenerate the committed JSON Schemas and the AsyncAPI document of every topic
	$(BIN)/python -m hilo.contract.schema docs/schemas
	$(BIN)/python -m customer_profile.records docs/schemas
	$(BIN)/python -m hilo_devkit.asyncapi docs/asyncapi.json shared/src/hilo/contract/asyncapi.json --schemas docs/schemas

infra-up: install infra-prepare ## Start local Kafka and SecantusDB in the background; print their URLs
	$(BIN)/hilo-infra up

infra-down: ## Stop what infra-up started
	@if [ -x $(BIN)/hilo-infra ]; then $(BIN)/hilo-infra down; else echo "nothing to stop"; fi

run: install infra-prepare ## Run the whole platform: docker compose if Docker answers, else local processes
	$(BIN)/hilo-run

simulate: install ## Play customers' journeys through a running `make run` and read them back
	@test -f .hilo/platform.env || { echo "no .hilo/platform.env: make simulate plays against make run's local processes; with Docker, run: docker compose --profile demo up offers-demo traffic-simulator" >&2; exit 2; }
	$(BIN)/traffic-simulator --env-file .hilo/platform.env

run-profile: install ## Run the customer-profile service against `make infra-up`'s Kafka and SecantusDB
	@eval "$$($(BIN)/hilo-infra env)" && HILO_LOG_FORMAT=$${HILO_LOG_FORMAT:-console} $(BIN)/customer-profile serve

env-example: install ## Regenerate .env.example from the services' settings
	$(BIN)/hilo-env-example .env.example

# webhook → profile at 200/s: 10 s warm-up, then 30 s measured
END_TO_END = $(BIN)/python services/customer-profile/bench/end_to_end.py --rate 200 --seconds 30 --warm-up 10

bench: install infra-prepare browser-prepare load-prepare ## Measure throughput, latency and where the time goes (results in docs/benchmarks.md)
	$(BIN)/python services/customer-profile/bench/report.py --sizes 1000 10000 50000
	$(BIN)/python services/customer-profile/bench/database_time.py --events 10000
	$(BIN)/python services/customer-profile/bench/late_entry.py --entries 50000
	$(BIN)/python services/channel-whatsapp/bench/webhooks.py --floors --lingers 0,5,10,20
	$(BIN)/python services/channel-sms/bench/spool_drain.py --requests 2000
	$(END_TO_END) --runs 3
	$(END_TO_END) --profile .bench/profiles
	$(BIN)/python services/agent-desk/bench/live_latency.py --messages 60 --interval 0.5

bench-profile: install infra-prepare ## Where each service's CPU goes at 200 webhooks/s (py-spy; raw stacks in .bench/profiles/run1)
	$(END_TO_END) --profile .bench/profiles

bench-database: install infra-prepare ## Where the database's time goes: per batch step and store operation, and inside SecantusDB (py-spy)
	$(BIN)/python services/customer-profile/bench/database_time.py --events 10000

bench-desk: install infra-prepare browser-prepare ## How long a WhatsApp message takes to appear on an agent's open page
	$(BIN)/python services/agent-desk/bench/live_latency.py --messages 60 --interval 0.5

compose-images: ## Build every image compose runs from packages alone (deploy/offline; needs a Docker engine)
	deploy/offline/engine.sh
	deploy/offline/build.sh

compose-test: install infra-prepare ## docker compose for real: up, simulate, scale, crash, observe, down (~6 min)
	deploy/offline/engine.sh
	$(BIN)/python -m hilo_devkit.official_images || deploy/offline/build.sh
	$(BIN)/pytest -m compose -s -p no:cacheprovider tests/test_compose.py

clean: ## Remove the virtual environment and local state (not the download cache)
	rm -rf $(VENV) $(TOOLS) .hilo .pytest_cache .mypy_cache .ruff_cache .hypothesis
