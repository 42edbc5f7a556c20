# shellcheck shell=bash
# lib.sh - shell helpers shared by the integration tests (source it; bash only).
#
# Counters: pass/fail/step print one line each and count; summary prints `N passed, N failed`
# and returns 1 when anything failed. Processes are tracked by PID only (never by name).

RQ_PASSED=${RQ_PASSED:-0}
RQ_FAILED=${RQ_FAILED:-0}
PY=${PY:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1

# log TEXT: a progress line on stderr-free stdout.
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# pass NAME / fail NAME [DETAIL]: count and print one result.
pass() { RQ_PASSED=$((RQ_PASSED + 1)); printf 'PASS  %s\n' "$1"; }
fail() {
	RQ_FAILED=$((RQ_FAILED + 1))
	printf 'FAIL  %s%s\n' "$1" "${2:+: $2}"
}

# check NAME CMD...: runs CMD; pass when it exits 0, fail otherwise.
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name" "exit $?"; fi
}

# summary: prints the counters; returns 1 when anything failed.
summary() {
	printf '%d passed, %d failed\n' "$RQ_PASSED" "$RQ_FAILED"
	[ "$RQ_FAILED" -eq 0 ]
}

# free_port: prints a TCP port on 127.0.0.1 free a moment ago, below the kernel's ephemeral range
# less 1000 (scripts/rq_ports.py): no client socket can take it before a service or broker binds
# it, and scripts/broker.sh keeps those last 1000 ports for Erlang distribution.
RQ_PORTS_PY="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/rq_ports.py"
free_port() {
	"$PY" "$RQ_PORTS_PY"
}

# free_broker_port: a port for a broker's AMQP listener (the same rule as free_port).
free_broker_port() {
	free_port
}

# http_status URL [MAX_SECONDS]: prints the HTTP status of GET URL (000 when unreachable).
http_status() {
	curl -s -o /dev/null -w '%{http_code}' --max-time "${2:-3}" "$1" 2>/dev/null || true
}

# wait_ready URL SECONDS: waits until GET URL answers 200; returns 1 after SECONDS.
wait_ready() {
	local url=$1 limit=$2 start
	start=$(date +%s)
	while [ $(($(date +%s) - start)) -lt "$limit" ]; do
		[ "$(http_status "$url" 2)" = 200 ] && return 0
		sleep 0.2
	done
	return 1
}

# proc_alive PID: 0 when PID runs (a zombie counts as exited).
proc_alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

# wait_exit PID SECONDS: waits for PID (a child of this shell) to exit; sets RQ_RC to its
# exit status and returns 0, or returns 1 when it still runs after SECONDS. Not in a $(...)
# subshell: only the parent shell can collect a child's status.
wait_exit() {
	local pid=$1 limit=$2 i
	for ((i = 0; i < limit * 10; i++)); do
		proc_alive "$pid" || break
		sleep 0.1
	done
	proc_alive "$pid" && return 1
	RQ_RC=0
	wait "$pid" 2>/dev/null || RQ_RC=$?
	return 0
}

# stop_pid PID NAME [SECONDS]: SIGTERM, wait up to SECONDS (10) for exit; counts a check
# "NAME exits 0 on SIGTERM within SECONDS s"; SIGKILLs it when it hangs.
stop_pid() {
	local pid=$1 name=$2 limit=${3:-10} rc
	if ! proc_alive "$pid"; then
		rc=0
		wait "$pid" 2>/dev/null || rc=$?
		fail "$name still running before SIGTERM" "it already exited with status $rc"
		return 1
	fi
	kill -TERM "$pid" 2>/dev/null || true
	if wait_exit "$pid" "$limit"; then
		if [ "$RQ_RC" = 0 ]; then
			pass "$name exits 0 on SIGTERM within ${limit} s"
		else
			fail "$name exits 0 on SIGTERM within ${limit} s" "exit status $RQ_RC"
			return 1
		fi
	else
		fail "$name exits 0 on SIGTERM within ${limit} s" "still running; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		return 1
	fi
}

# my_child PID: 0 when PID is a running child of this shell (so a recycled PID is never hit).
my_child() {
	local ppid
	ppid=$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')
	[ "$ppid" = "$$" ] && proc_alive "$1"
}

# kill_quietly PID...: SIGTERM, then SIGKILL after 5 s, for cleanup paths (no checks). Only
# running children of this shell are signalled.
kill_quietly() {
	local pid i
	for pid in "$@"; do
		[ -n "$pid" ] && my_child "$pid" && kill -TERM "$pid" 2>/dev/null
	done
	for pid in "$@"; do
		[ -n "$pid" ] || continue
		for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
		my_child "$pid" && kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null || true
	done
	return 0
}

# resolve_build_dir: makes BUILD_DIR (default build) absolute against $root and sets
# bin=$BUILD_DIR/bin. Call after setting root.
resolve_build_dir() {
	BUILD_DIR=${BUILD_DIR:-build}
	case $BUILD_DIR in /*) ;; *) BUILD_DIR=$root/$BUILD_DIR ;; esac
	bin=$BUILD_DIR/bin
}
