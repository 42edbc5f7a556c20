#!/usr/bin/env bash
# Installs the Debian packages relayq needs to build, test and run locally.
#
#   scripts/install-deps.sh          install what is missing (idempotent; silent when nothing is)
#   scripts/install-deps.sh --list   print the package list and exit
#   scripts/install-deps.sh --check  exit 1 (listing them) when packages are missing; install nothing
#
# apt-get runs only when something is missing, and `apt-get update` only then. Runs as root
# directly, otherwise through sudo. Daemons shipped by packages (rabbitmq-server, prometheus)
# are not started by the install: relayq starts its own broker bound to 127.0.0.1.
set -euo pipefail

# The one list of packages (build, unit tests, local broker, tools, promtool, fuzzing).
PACKAGES=(
	build-essential cmake pkg-config
	librabbitmq-dev libmicrohttpd-dev libjansson-dev uuid-dev libcriterion-dev
	libssl-dev # libcrypto (OpenSSL 3): JWT signatures, producer/api/jwt.c
	libcurl4-openssl-dev # the consumer's webhook handler (libcurl multi)
	rabbitmq-server
	curl wrk
	python3 python3-yaml python3-pika # python3-pika: the foreign-client test (test_pika.py)
	prometheus # ships promtool (Debian has no separate promtool package)
	clang libclang-rt-14-dev # libFuzzer builds (the runtime is only a Recommends of clang)
	openssl valgrind         # TLS test certificates; the memcheck run in make test
	python3-websockets       # the WebSocket client of the real-time tests (issue 18)
	chromium chromium-driver python3-selenium # /viewer and /docs in a headless browser
)

case "${1:-}" in
--list)
	printf '%s\n' "${PACKAGES[@]}"
	exit 0
	;;
--check | "") ;;
*)
	echo "usage: $0 [--list|--check]" >&2
	exit 2
	;;
esac

# npm packages (issue 18), pinned, into $BUILD_DIR/npm: swagger-ui-dist for GET /docs (the
# producer finds <bin>/../npm/node_modules/swagger-ui-dist) and @redocly/cli for
# tests/ops/check_openapi.py. Nothing is fetched when these versions are there (offline-safe).
NPM_DIR=${BUILD_DIR:-build}/npm
NPM_PKGS=(swagger-ui-dist@5.35.0 @redocly/cli@1.25.15)
npm_have() { # NAME@VERSION installed in $NPM_DIR?
	local name=${1%@*} version=${1##*@} f
	f="$NPM_DIR/node_modules/$name/package.json"
	[ -f "$f" ] && grep -q "\"version\": *\"$version\"" "$f"
}
npm_install() {
	local p npm_missing=()
	for p in "${NPM_PKGS[@]}"; do npm_have "$p" || npm_missing+=("$p"); done
	[ ${#npm_missing[@]} -eq 0 ] && return 0
	command -v npm >/dev/null || {
		echo "install-deps: npm is needed for ${npm_missing[*]} (apt-get install nodejs npm)" >&2
		exit 1
	}
	echo "install-deps: npm install ${npm_missing[*]} into $NPM_DIR"
	mkdir -p "$NPM_DIR"
	npm install --prefix "$NPM_DIR" --no-audit --no-fund --save-exact "${NPM_PKGS[@]}" >"$NPM_DIR/install.log" 2>&1 || {
		tail -n 20 "$NPM_DIR/install.log" >&2
		exit 1
	}
}

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	if [ "${1:-}" = --check ]; then
		echo "all ${#PACKAGES[@]} packages installed"
	else
		npm_install
	fi
	exit 0
fi
if [ "${1:-}" = --check ]; then
	echo "missing packages: ${missing[*]}"
	exit 1
fi

echo "install-deps: installing ${missing[*]}"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || {
		echo "install-deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
		exit 1
	}
	SUDO=(sudo)
fi

# Keep package maintainer scripts from starting rabbitmq-server / prometheus as system
# services (they would listen on every interface and take port 5672). A policy-rc.d that
# answers 101 is Debian's documented switch for this; add one only for the duration of the
# install when the machine has none.
policy=/usr/sbin/policy-rc.d
added_policy=0
cleanup() {
	if [ "$added_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# added by relayq install-deps.sh during apt-get install\nexit 101\n' |
		"${SUDO[@]}" tee "$policy" >/dev/null
	"${SUDO[@]}" chmod 755 "$policy"
	added_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

still=()
for p in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || still+=("$p")
done
if [ ${#still[@]} -ne 0 ]; then
	echo "install-deps: still missing after apt-get: ${still[*]}" >&2
	exit 1
fi
npm_install
echo "install-deps: done"
