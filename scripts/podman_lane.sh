#!/usr/bin/env bash
# Podman lane for the `docker` sandbox backend (no Docker engine or registry on CI machines).
#
#   scripts/podman_lane.sh env    install Podman + runc if missing (root + apt), start
#                                 `podman system service` on a private socket, build the offline
#                                 sandbox image; print DOCKER_HOST=... and RAO_SANDBOX_IMAGE=...
#   scripts/podman_lane.sh stop   stop the service this script started
#
# Idempotent and fast when already done. runc, not crun: crun refuses this host's hybrid
# cgroups. Explicit default ulimits: without them runc fails on RLIMIT_NOFILE.
set -euo pipefail

STATE="${RAO_PODMAN_STATE:-/tmp/rao_envs_podman}"
SOCK="$STATE/podman.sock"
CONF="$STATE/containers.conf"
IMAGE="${RAO_SANDBOX_IMAGE:-localhost/rao-envs-sandbox:latest}"
PY="${RAO_PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export CONTAINERS_CONF="$CONF"

log() { echo "podman_lane: $*" >&2; }

sock_ok() {
    "$PY" - "$SOCK" <<'PYEOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(3)
s.connect(sys.argv[1]); s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
sys.exit(0 if b"OK" in s.recv(4096) else 1)
PYEOF
}

cmd="${1:-env}"
if [ "$cmd" = "stop" ]; then
    if [ -f "$STATE/service.pid" ]; then
        kill "$(cat "$STATE/service.pid")" 2>/dev/null || true
        rm -f "$STATE/service.pid" "$SOCK"
    fi
    exit 0
fi

mkdir -p "$STATE"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing podman + runc with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends podman runc catatonit >&2 || \
            apt-get install -y -q podman runc >&2
    else
        log "Podman is not installed: run \`sudo apt-get install podman runc\` (or make test-slow as root)"
        exit 2
    fi
fi

cat > "$CONF" <<CONFEOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONFEOF

if ! sock_ok; then
    rm -f "$SOCK"
    log "starting podman system service on $SOCK"
    nohup podman system service --time=0 "unix://$SOCK" > "$STATE/service.log" 2>&1 < /dev/null &
    echo $! > "$STATE/service.pid"
    echo "PODMAN_STARTED=1"
    for _ in $(seq 1 100); do sock_ok && break; sleep 0.2; done
    sock_ok || { log "podman service did not come up: $(tail -5 "$STATE/service.log")"; exit 3; }
fi

if ! podman image exists "$IMAGE"; then
    log "building $IMAGE from this machine's Python (offline)"
    "$PY" -m rao_envs.sandboxes.image --tag "$IMAGE" --engine podman >&2
fi

echo "DOCKER_HOST=unix://$SOCK"
echo "RAO_SANDBOX_IMAGE=$IMAGE"
