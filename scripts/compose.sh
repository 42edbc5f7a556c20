#!/bin/bash
# scripts/compose.sh ARGS...: runs Docker Compose with ARGS, whichever of the two is installed:
# `docker compose` (v2, the CLI plugin) when it answers, else `docker-compose` (v1, as packaged
# by Debian and Ubuntu; v2 also ships a `docker-compose` binary on some systems). RQ_COMPOSE
# in the environment picks one explicitly (e.g. RQ_COMPOSE=docker-compose).
#
#   scripts/compose.sh --which    prints the command it would run (exit 1: none installed)
#   scripts/compose.sh up -d      and every other compose command
#
# Used by the Makefile targets up/down/logs/scale-consumer and by scripts/test-compose.sh.
# Before `up`, creates .env from .env.example when .env is missing (both versions require the
# env_file to exist). Exit status: the compose command's, or 127 when none is installed.
set -euo pipefail

compose_cmd() {
	if [ -n "${RQ_COMPOSE:-}" ]; then
		echo "$RQ_COMPOSE"
	elif docker compose version >/dev/null 2>&1; then
		echo "docker compose"
	elif command -v docker-compose >/dev/null 2>&1; then
		echo "docker-compose"
	else
		return 1
	fi
}

if ! cmd=$(compose_cmd); then
	echo "compose.sh: neither 'docker compose' nor 'docker-compose' is installed" \
		"(apt-get install docker-compose, or the docker-compose-plugin)" >&2
	exit 127
fi
if [ "${1:-}" = "--which" ]; then
	echo "$cmd"
	exit 0
fi
if [ "${1:-}" = "up" ] && [ ! -f .env ] && [ -f .env.example ]; then
	cp .env.example .env
	echo "created .env from .env.example" >&2
fi
# shellcheck disable=SC2086 # $cmd is one or two words
exec $cmd "$@"
