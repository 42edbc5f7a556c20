# relayq: build, test and operate.
#
#   make run                 install missing packages, build, start broker + producer + consumer locally
#   make up | down | logs    docker-compose / docker compose when an engine answers, else local mode
#   make scale-consumer N=3  reach N consumers (local processes, or compose replicas)
#   make monitor             live terminal view (health, queue depth, rates, consumers, DLQ)
#   make test                everything CI runs (unit, sanitizers, integration, system, ops checks)
#   make status              local mode: what runs, with pids and URLs
#   make chaos [SEED=n] [DURATION=s]  randomized fault campaign (proxy, kills, disk full, checker)
#   make test-compose        Docker Compose for real (own dockerd, images built without a registry)
#   make test-cluster        relayq on a 3-node RabbitMQ cluster: node kills, no quorum, rolling restart,
#                            a minority partition; and the confirm-stall rule on one node
#   make bench | fuzz | clean | deps | build | env-example | prometheusrule | help
#
# Local mode keeps pidfiles, logs and the broker's data in $(RUN_DIR); it binds only 127.0.0.1.
# Ports: AMQP_PORT (5672), MGMT_PORT (15672), PRODUCER_PORT (5000), CONSUMER_PORT (8000: the
# first consumer; the next ones take 8001, 8002, ...). .env is read when present.

SHELL := /bin/bash
.DEFAULT_GOAL := help

BUILD_DIR ?= build
ASAN_DIR ?= build-asan
RUN_DIR ?= run
N ?= 3
FUZZ_SECONDS ?= 60
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON ?= /usr/bin/python3

export BUILD_DIR ASAN_DIR RUN_DIR JOBS PYTHON

# True (exit 0) when a Docker engine answers; bounded so a hung socket cannot stall make.
DOCKER_UP = timeout 10 docker info >/dev/null 2>&1

.PHONY: help deps build test test-compose test-cluster run up down logs scale-consumer monitor bench fuzz chaos clean status prometheusrule env-example

help:
	@sed -n '2,18p' Makefile | sed 's/^# \{0,1\}//'

deps:
	@bash scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) -DRQ_WERROR=ON
	cmake --build $(BUILD_DIR) -j$(JOBS) -- --no-print-directory
	@test -x $(BUILD_DIR)/bin/producer && test -x $(BUILD_DIR)/bin/consumer && \
		echo "built $(BUILD_DIR)/bin/producer and $(BUILD_DIR)/bin/consumer"

test: deps build
	@bash scripts/make-test.sh

run: deps build
	@bash scripts/local.sh up

up:
	@if $(DOCKER_UP); then \
		[ -f .env ] || { [ -f .env.example ] && cp .env.example .env && echo "created .env from .env.example"; } ; \
		bash scripts/compose.sh up -d --build && bash scripts/compose.sh ps; \
	else \
		echo "no Docker engine answers: local mode"; \
		$(MAKE) --no-print-directory run; \
	fi

down:
	@bash scripts/local.sh down
	@if $(DOCKER_UP); then bash scripts/compose.sh down; fi

status:
	@bash scripts/local.sh status

logs:
	@if ! bash scripts/local.sh running && $(DOCKER_UP); then \
		bash scripts/compose.sh logs -f; \
	else \
		bash scripts/local.sh logs; \
	fi

scale-consumer:
	@if ! bash scripts/local.sh running && $(DOCKER_UP); then \
		bash scripts/compose.sh up -d --no-recreate --scale consumer=$(N) && bash scripts/compose.sh ps consumer; \
	else \
		bash scripts/local.sh scale $(N); \
	fi

# MONITOR_ARGS=--once prints one frame (exit 0 when everything is ready).
monitor:
	@if ! bash scripts/local.sh running && $(DOCKER_UP); then \
		$(PYTHON) scripts/monitor.py --producer http://127.0.0.1:$${RQ_COMPOSE_PRODUCER_PORT:-5000} \
			--mgmt http://127.0.0.1:$${RQ_COMPOSE_MGMT_PORT:-15672} \
			--prometheus http://127.0.0.1:$${RQ_COMPOSE_PROMETHEUS_PORT:-9090} $(MONITOR_ARGS); \
	else \
		$(PYTHON) scripts/monitor.py --run-dir $(RUN_DIR) $(MONITOR_ARGS); \
	fi

# make test-cluster: relayq on a three-node RabbitMQ cluster (every scenario of
# tests/integration/test_cluster.py: node kills, quorum leader kill, no quorum, rolling restart,
# maintenance, a minority partition cut with iptables), then the confirm-stall rule on one node
# (tests/integration/test_confirm_stall.py: not under load or an alarm, fires on a stalled queue).
test-cluster: deps build
	@$(PYTHON) tests/integration/test_cluster.py --build-dir $(BUILD_DIR)
	@$(PYTHON) tests/integration/test_confirm_stall.py --build-dir $(BUILD_DIR)

# make test-compose: Docker Compose for real (installs docker.io/docker-compose, starts its own
# dockerd when none answers, builds base and stand-in images, checks, cleans up).
test-compose:
	@bash scripts/test-compose.sh

fuzz:
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

# make chaos [SEED=n] [DURATION=s] [CHAOS_TABLE=file]: the randomized fault campaign
# (tests/chaos) against the ASan+UBSan services; without SEED, one random seed (printed).
SEED ?= random
DURATION ?= 90
chaos: deps build
	cmake -S . -B $(ASAN_DIR) -DRQ_SANITIZE=ON -DRQ_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(ASAN_DIR) -j$(JOBS) -- --no-print-directory
	DURATION=$(DURATION) CHAOS_TABLE=$(CHAOS_TABLE) bash scripts/chaos.sh $(SEED)

bench:
	@if [ -f scripts/bench.sh ]; then \
		bash scripts/bench.sh; \
	else \
		echo "scripts/bench.sh is not there (yet): no benchmark to run"; exit 1; \
	fi

# deploy/base/prometheusrule.yaml is generated from prometheus/alerts.yml (make test checks it).
prometheusrule:
	@$(PYTHON) scripts/gen-prometheusrule.py

# .env.example is generated from the settings table (make test checks it).
env-example: build
	$(BUILD_DIR)/bin/producer --print-env-example >.env.example

clean: down
	rm -rf build build-* $(BUILD_DIR) $(ASAN_DIR) $(RUN_DIR)
