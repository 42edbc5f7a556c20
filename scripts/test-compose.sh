#!/bin/bash
# scripts/test-compose.sh [prepare|run|stop]: Docker Compose for real, as a user would.
#
#   prepare  installs docker.io, docker-compose and debootstrap when missing; starts a dockerd
#            when none answers (data, pidfile and socket under $RQ_COMPOSE_DIR, default
#            /var/tmp/relayq-compose, left running for `run`); builds the base images when
#            debian:bookworm / debian:bookworm-slim cannot be pulled (debootstrap minbase from
#            this machine's Debian mirror + docker import), the broker and Prometheus
#            stand-ins (tests/compose/, Debian's rabbitmq-server and prometheus) tagged with
#            the names docker-compose.yml uses, and the relayq image (`compose build`).
#            Images already present are kept (stand-ins: rebuilt only when their folder changed).
#   run      on a copy of the tree (no .env): `make up` (creates .env, `up -d --build`), waits
#            for /health/ready, scripts/test_system.py against 127.0.0.1:5000, `make
#            scale-consumer N=3`, 3 consumers on request_queue (rabbitmqctl and the management
#            API), 300 messages spread over the 3 replicas (each replica's /metrics), 3
#            consumer targets up in Prometheus, `compose logs consumer` shows each replica,
#            `compose down -v` leaves no container, network or volume. Once per installed
#            compose (`docker compose` v2, `docker-compose` v1). Then stops the dockerd that
#            prepare started. Grafana is not tested (no Debian package, image not pullable):
#            tests/compose/docker-compose.test.yml moves it to a profile.
#   stop     stops the dockerd a previous prepare started (by its pidfile), nothing else.
#   (none)   prepare, then run.
#
# Bounded: the whole script runs under `timeout` (RQ_COMPOSE_TIMEOUT, default 1800 s; the
# cleanup runs on expiry). RQ_COMPOSE_OPTIONAL=1: when no engine can be had (not root, no
# packages, dockerd fails), print `SKIP: why` and exit 0 (for `make test`); otherwise fail.
# Prints one line per step; exit 0 when every check passed.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${RQ_COMPOSE_DIR:-/var/tmp/relayq-compose}
PHASE=${1:-all}
case "$PHASE" in prepare | run | stop | all) ;; *)
	echo "usage: $0 [prepare|run|stop]" >&2
	exit 2
	;;
esac

if [ -z "${RQ_COMPOSE_INNER:-}" ]; then
	exec timeout -k 120 "${RQ_COMPOSE_TIMEOUT:-1800}" env RQ_COMPOSE_INNER=1 bash "$0" "$@"
fi

OURSOCK="unix://$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
OURS="$STATE/dockerd.started" # holds the pid of a dockerd this script started
T0=$(date +%s)
PROJECT=""
WORK=""

log() { printf '[compose %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() {
	log "FAIL: $*"
	exit 1
}
# No engine to be had: a SKIP for `make test` when RQ_COMPOSE_OPTIONAL=1, else a failure.
no_engine() {
	if [ "${RQ_COMPOSE_OPTIONAL:-0}" = 1 ]; then
		echo "SKIP: $*"
		exit 0
	fi
	die "$*"
}
# Runs a command in the background and waits, so a TERM from `timeout` runs the trap at once.
bg() {
	"$@" &
	wait $!
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

# The pid of the dockerd this script started, when it still runs; else nothing (status 1).
our_dockerd() {
	local pid
	[ -f "$OURS" ] || return 1
	pid=$(cat "$OURS")
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--pidfile $PIDFILE" || return 1
	echo "$pid"
}

stop_dockerd() {
	local pid m
	pid=$(our_dockerd) || {
		rm -f "$OURS"
		return 0
	}
	log "stopping the dockerd this script started (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 60); do
		[ -d "/proc/$pid" ] || break
		sleep 0.5
	done
	if [ -d "/proc/$pid" ]; then
		log "dockerd $pid still runs after 30 s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$OURS"
	if [ -f "$STATE/docker0.ours" ]; then
		ip link delete docker0 2>/dev/null || true
		rm -f "$STATE/docker0.ours"
	fi
	# Mounts dockerd can leave under its data-root and exec-root (ours only), deepest first.
	for m in $(awk -v d="$STATE/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

install_missing() {
	local pkgs=()
	command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
	bash "$ROOT/scripts/compose.sh" --which >/dev/null 2>&1 || pkgs+=(docker-compose)
	command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
	[ ${#pkgs[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || no_engine "not root: cannot install ${pkgs[*]}"
	log "installing ${pkgs[*]}"
	if ! DEBIAN_FRONTEND=noninteractive bg apt-get install -y -q --no-install-recommends \
		"${pkgs[@]}" >"$STATE/apt.log" 2>&1; then
		bg apt-get update -q >>"$STATE/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive bg apt-get install -y -q --no-install-recommends \
			"${pkgs[@]}" >>"$STATE/apt.log" 2>&1 ||
			no_engine "apt-get install ${pkgs[*]} failed ($(tail -1 "$STATE/apt.log"))"
	fi
}

# Uses an engine that answers (DOCKER_HOST or the default socket), else ours (started now
# when it does not run). Exports DOCKER_HOST when it is ours.
ensure_engine() {
	local pid
	if our_dockerd >/dev/null; then
		export DOCKER_HOST="$OURSOCK"
		engine_up && return 0
	fi
	if [ -z "${DOCKER_HOST:-}" ] || [ "$DOCKER_HOST" != "$OURSOCK" ]; then
		if engine_up; then
			log "using the Docker engine that answers (${DOCKER_HOST:-default socket})"
			return 0
		fi
	fi
	[ "$(id -u)" = 0 ] || no_engine "no Docker engine answers and not root: cannot start dockerd"
	command -v dockerd >/dev/null 2>&1 || no_engine "dockerd is not installed"
	log "starting dockerd (data-root $STATE/data, socket $STATE/docker.sock)"
	mkdir -p "$STATE/data" "$STATE/exec"
	# dockerd leaves its docker0 bridge behind: delete it on stop when it creates it now.
	if ip link show docker0 >/dev/null 2>&1; then rm -f "$STATE/docker0.ours"; else touch "$STATE/docker0.ours"; fi
	setsid dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$PIDFILE" \
		-H "$OURSOCK" >"$STATE/dockerd.log" 2>&1 </dev/null 9>&- &
	pid=$!
	echo "$pid" >"$OURS"
	export DOCKER_HOST="$OURSOCK"
	for _ in $(seq 1 60); do
		engine_up && {
			log "dockerd $pid answers"
			return 0
		}
		[ -d "/proc/$pid" ] || break
		sleep 0.5
	done
	local why
	why=$(grep -E 'level=(error|fatal)' "$STATE/dockerd.log" | tail -1 | cut -c1-300)
	stop_dockerd
	no_engine "dockerd did not start: ${why:-see $STATE/dockerd.log}"
}

# The Debian mirror this machine's apt uses (deb822 URIs: or one-line deb entries).
debian_mirror() {
	local m
	m=$(grep -hs -E '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources |
		awk '{for (i = 2; i <= NF; i++) print $i}' | grep -E '/debian/?$' | head -1 || true)
	[ -n "$m" ] || m=$(grep -hs -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list \
		/etc/apt/sources.list.d/*.list | sed 's/\[[^]]*\]//' |
		awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
	echo "${m:-http://deb.debian.org/debian}"
}

# debian:bookworm and debian:bookworm-slim: kept when present, pulled when a registry answers,
# else one debootstrap --variant=minbase (what the official images are built from) imported
# twice: as is, and without documentation for -slim.
base_images() {
	local need=() t mirror rootfs
	for t in debian:bookworm debian:bookworm-slim; do
		if docker image inspect "$t" >/dev/null 2>&1; then
			log "$t present (cached)"
		elif bg timeout 60 docker pull -q "$t" >/dev/null 2>&1; then
			log "$t pulled"
		else
			need+=("$t")
		fi
	done
	[ ${#need[@]} -eq 0 ] && return 0
	mirror=$(debian_mirror)
	rootfs="$STATE/rootfs"
	rm -rf "$rootfs"
	log "debootstrap --variant=minbase bookworm from $mirror (for ${need[*]})"
	bg debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 ||
		die "debootstrap failed: $(tail -1 "$STATE/debootstrap.log")"
	rm -f "$rootfs/etc/apt/sources.list"
	cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<-EOF
		Types: deb
		URIs: ${mirror%/}
		Suites: bookworm bookworm-updates
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

		Types: deb
		URIs: ${mirror%/}-security
		Suites: bookworm-security
		Components: main
		Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
	EOF
	# As in the official images: no apt caches or translations left in layers.
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<-'EOF'
		DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
		Dir::Cache::pkgcache "";
		Dir::Cache::srcpkgcache "";
	EOF
	echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
	chroot "$rootfs" apt-get clean
	rm -f "$rootfs"/var/cache/apt/*.bin
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
	local change=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
		--change 'CMD ["bash"]')
	if [[ " ${need[*]} " == *" debian:bookworm "* ]]; then
		tar --numeric-owner -C "$rootfs" -cf - . | docker import "${change[@]}" - debian:bookworm >/dev/null
		log "debian:bookworm imported"
	fi
	if [[ " ${need[*]} " == *" debian:bookworm-slim "* ]]; then
		# What the official -slim images drop: documentation, manual pages, translations.
		cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<-'EOF'
			path-exclude /usr/share/doc/*
			path-include /usr/share/doc/*/copyright
			path-exclude /usr/share/man/*
			path-exclude /usr/share/info/*
			path-exclude /usr/share/locale/*
		EOF
		find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
		rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
		tar --numeric-owner -C "$rootfs" -cf - . | docker import "${change[@]}" - debian:bookworm-slim >/dev/null
		log "debian:bookworm-slim imported"
	fi
	rm -rf "$rootfs"
}

# The image a service of docker-compose.yml names.
service_image() {
	sed -n "/^  $1:/,/^  [a-z]/p" "$ROOT/docker-compose.yml" | awk '$1 == "image:" {print $2; exit}'
}

# The broker and Prometheus stand-ins, tagged with the compose file's names. An image with
# that name and no stand-in label (the real one) is kept; a stand-in is rebuilt only when its
# folder (or the base image) changed.
standins() {
	local svc tag want have
	for svc in rabbitmq prometheus; do
		tag=$(service_image "$svc")
		[ -n "$tag" ] || die "no image for service $svc in docker-compose.yml"
		want=$(cd "$ROOT/tests/compose/$svc" && { docker image inspect -f '{{.Id}}' debian:bookworm-slim; cat ./*; } | sha256sum | cut -c1-16)
		if have=$(docker image inspect -f '{{index .Config.Labels "relayq.standin"}}' "$tag" 2>/dev/null); then
			if [ "$have" = "$want" ]; then
				log "$tag stand-in present (cached)"
				continue
			elif [ -z "$have" ] || [ "$have" = "<no value>" ]; then
				log "$tag present (not a stand-in): kept"
				continue
			fi
		fi
		log "building the $tag stand-in (tests/compose/$svc)"
		bg docker build -q --label "relayq.standin=$want" -t "$tag" "$ROOT/tests/compose/$svc" \
			>"$STATE/build-$svc.log" 2>&1 || die "stand-in $tag: $(tail -3 "$STATE/build-$svc.log" | tr '\n' ' ')"
	done
}

# A fresh copy of the tree to run compose in: no .env, nothing written into the work tree.
make_work_copy() {
	WORK="$STATE/work/relayq"
	rm -rf "$STATE/work"
	mkdir -p "$WORK"
	tar -C "$ROOT" --exclude=./.git --exclude=./build --exclude='./build-*' --exclude=./run \
		--exclude=./.env -cf - . | tar -C "$WORK" -xf -
}

compose_env() {
	export COMPOSE_FILE="docker-compose.yml:tests/compose/docker-compose.test.yml"
	export COMPOSE_PROJECT_NAME="$1"
}

prepare() {
	mkdir -p "$STATE"
	install_missing
	ensure_engine
	base_images
	standins
	make_work_copy
	(cd "$WORK" && cp .env.example .env && compose_env relayqprep &&
		log "$(bash scripts/compose.sh --which) build (relayq image)" &&
		bg bash scripts/compose.sh build >"$STATE/build-relayq.log" 2>&1) ||
		die "compose build: $(tail -5 "$STATE/build-relayq.log" | tr '\n' ' ')"
	# Our own engine only: drop the images earlier builds left untagged (never on another engine).
	if our_dockerd >/dev/null && [ "${DOCKER_HOST:-}" = "$OURSOCK" ]; then
		docker image prune -f >/dev/null 2>&1 || true
	fi
	log "images: $(docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' |
		grep -E '^(relayq|debian|rabbitmq|prom)' | tr '\n' ',' | sed 's/,$//;s/,/, /g')"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
	/usr/bin/python3 "$ROOT/scripts/rq_ports.py"
}

# docker ps/network/volume entries of the compose project $1 (by label and by name).
leftovers() {
	{
		docker ps -a -q --filter "label=com.docker.compose.project=$1"
		docker network ls -q --filter "label=com.docker.compose.project=$1"
		docker network ls -q --filter "name=^${1}_"
		docker volume ls -q --filter "label=com.docker.compose.project=$1"
		docker volume ls -q --filter "name=^${1}_"
	} 2>/dev/null | sort -u
}

cleanup_project() {
	[ -n "$PROJECT" ] || return 0
	(cd "$WORK" && compose_env "$PROJECT" && timeout 120 bash scripts/compose.sh down -v -t 10 \
		>>"$STATE/down.log" 2>&1) || true
	PROJECT=""
}

# The user-style checks with one compose command ($1: "docker-compose" or "docker compose").
run_with() {
	local cc=$1 p c n
	export RQ_COMPOSE="$cc"
	p="relayqtest$$"
	if [ "$cc" = "docker compose" ]; then p="${p}v2"; else p="${p}v1"; fi
	make_work_copy
	cd "$WORK"
	compose_env "$p"
	PROJECT=$p
	log "== $cc (project $p, in $WORK)"
	rm -f .env
	bg make --no-print-directory up >"$STATE/up.log" 2>&1 || die "make up: $(tail -5 "$STATE/up.log" | tr '\n' ' ')"
	[ -f .env ] || die "make up did not create .env"
	grep -q 'created .env from .env.example' "$STATE/up.log" || die "make up did not say it created .env"
	log "make up: .env created, $cc up -d --build done"
	bg /usr/bin/python3 tests/compose/checks.py wait-ready http://127.0.0.1:5000 180 ||
		die "producer not ready: $(bash scripts/compose.sh logs --no-color --tail 5 producer 2>&1 | tr '\n' ' ')"
	log "system test: scripts/test_system.py --url http://127.0.0.1:5000"
	bg /usr/bin/python3 scripts/test_system.py --url http://127.0.0.1:5000 --threads 4 --requests 50 \
		>"$STATE/system.log" 2>&1 || die "test_system.py: $(grep -E 'FAIL|passed' "$STATE/system.log" | head -5 | tr '\n' ' ')"
	log "system test: $(tail -1 "$STATE/system.log")"

	bg make --no-print-directory scale-consumer N=3 >"$STATE/scale.log" 2>&1 ||
		die "make scale-consumer N=3: $(tail -5 "$STATE/scale.log" | tr '\n' ' ')"
	mapfile -t cons < <(bash scripts/compose.sh ps -q consumer | xargs -r docker inspect -f '{{.Name}}' | sed 's#^/##' | sort)
	[ ${#cons[@]} -eq 3 ] || die "make scale-consumer N=3: ${#cons[@]} consumer containers (${cons[*]})"
	log "make scale-consumer N=3: ${cons[*]}"
	n=0
	for c in "${cons[@]}"; do
		for _ in $(seq 1 60); do
			[ "$(docker inspect -f '{{.State.Health.Status}}' "$c")" = healthy ] && break
			sleep 1
		done
		[ "$(docker inspect -f '{{.State.Health.Status}}' "$c")" = healthy ] || die "$c not healthy"
		n=$((n + 1))
	done
	log "$n consumer replicas healthy"
	n=""
	for _ in $(seq 1 60); do
		n=$(bash scripts/compose.sh exec -T rabbitmq rabbitmqctl -q list_queues name consumers 2>/dev/null |
			awk '$1 == "request_queue" {print $2}')
		[ "$n" = 3 ] && break
		sleep 1
	done
	[ "$n" = 3 ] || die "rabbitmqctl: request_queue has ${n:-?} consumers, want 3"
	log "rabbitmqctl list_queues: request_queue 3 consumers"
	bg /usr/bin/python3 tests/compose/checks.py queue-consumers "http://127.0.0.1:$MGMT" request_queue 3 30 ||
		die "management API consumer count"
	bg /usr/bin/python3 tests/compose/checks.py spread http://127.0.0.1:5000 300 90 "${cons[@]}" ||
		die "load spread over the 3 replicas"
	bg /usr/bin/python3 tests/compose/checks.py prom-targets "http://127.0.0.1:$PROM" relayq-consumer 3 120 ||
		die "Prometheus consumer targets"
	bg /usr/bin/python3 tests/compose/checks.py prom-targets "http://127.0.0.1:$PROM" relayq-producer 1 60 ||
		die "Prometheus producer target"
	bg /usr/bin/python3 tests/compose/checks.py prom-targets "http://127.0.0.1:$PROM" rabbitmq 1 60 ||
		die "Prometheus rabbitmq target"
	# monitor.py gives each HTTP call 1.5 s: on a loaded machine one frame in a few can miss.
	local try
	for try in 1 2 3 4 5; do
		bg make --no-print-directory monitor MONITOR_ARGS=--once >"$STATE/monitor.log" 2>&1 && break
		[ "$try" = 5 ] && die "make monitor MONITOR_ARGS=--once: $(tr '\n' ' ' <"$STATE/monitor.log" | cut -c1-600)"
		sleep 2
	done
	log "make monitor MONITOR_ARGS=--once: exit 0 (attempt $try, $(grep -c . "$STATE/monitor.log") lines)"
	bash scripts/compose.sh logs --no-color consumer >"$STATE/logs-consumer.log" 2>&1 || die "compose logs consumer"
	bg /usr/bin/python3 tests/compose/checks.py logs-show "$STATE/logs-consumer.log" "${cons[@]}" ||
		die "compose logs consumer does not show every replica"

	# Stop first (SIGTERM, 10 s grace) to see how each container ended, then down -v.
	local t1 all ends
	mapfile -t all < <(bash scripts/compose.sh ps -q)
	t1=$(date +%s)
	bg bash scripts/compose.sh stop -t 10 >"$STATE/stop.log" 2>&1 || die "compose stop: $(tail -3 "$STATE/stop.log")"
	ends=$(docker inspect -f '{{.Name}}={{.State.ExitCode}}' "${all[@]}" | sed 's#^/##' | sort | tr '\n' ' ')
	log "$cc stop: $(($(date +%s) - t1)) s; exit codes: $ends"
	for c in "${cons[@]}" "${p}_producer_1" "${p}-producer-1"; do
		case " $ends" in *" $c=137 "*) die "$c did not stop on SIGTERM within 10 s (killed)" ;; esac
	done
	bg bash scripts/compose.sh down -v -t 10 >"$STATE/down.log" 2>&1 || die "compose down -v: $(tail -3 "$STATE/down.log")"
	PROJECT=""
	local left
	left=$(leftovers "$p")
	[ -z "$left" ] || die "left behind after down -v: $left"
	log "$cc down -v: no container, network or volume of $p left"
	cd "$ROOT"
}

run() {
	local cc list=()
	[ -d "$STATE" ] || mkdir -p "$STATE"
	ensure_engine
	# Prepared? (fast when it was: everything is cached)
	prepare
	if port_busy 5000; then
		die "127.0.0.1:5000 is in use (the system test needs it): stop what listens there"
	fi
	MGMT=15672 PROM=9090
	port_busy "$MGMT" && MGMT=$(free_port)
	port_busy "$PROM" && PROM=$(free_port)
	export RQ_COMPOSE_MGMT_PORT=$MGMT RQ_COMPOSE_PROMETHEUS_PORT=$PROM
	[ "$MGMT" = 15672 ] || log "15672 busy: management on $MGMT"
	[ "$PROM" = 9090 ] || log "9090 busy: Prometheus on $PROM"
	docker compose version >/dev/null 2>&1 && list+=("docker compose")
	command -v docker-compose >/dev/null 2>&1 && ! docker-compose version 2>/dev/null | grep -q 'v2\.' &&
		list+=("docker-compose")
	[ ${#list[@]} -gt 0 ] || die "no compose installed"
	for cc in "${list[@]}"; do
		run_with "$cc"
	done
	log "PASS: ${list[*]}"
}

on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	cleanup_project
	# prepare alone leaves its dockerd for `run`; everything else stops it.
	if [ "$PHASE" != prepare ] || [ "$rc" != 0 ]; then stop_dockerd; fi
	[ -z "$WORK" ] || rm -rf "$STATE/work"
	log "exit $rc"
	exit "$rc"
}

mkdir -p "$STATE"
trap 'exit 124' INT TERM
exec 9>"$STATE/lock"
flock -w 300 9 || die "another scripts/test-compose.sh holds $STATE/lock"
trap on_exit EXIT
trap 'log "interrupted (timeout?)"; exit 124' INT TERM

case "$PHASE" in
prepare) prepare ;;
run | all) run ;;
stop) stop_dockerd ;;
esac
