#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, for the docker executor and its tests.
#   - installs Debian's docker.io (engine) and busybox-static (the test image's rootfs) when missing;
#   - starts dockerd in the background when nothing answers on its socket.
# dockerd runs with the vfs storage driver and without iptables: they work inside an
# unprivileged-looking sandbox (no overlayfs mounts, no NAT rules) at the cost of slower
# image layers, which our tiny test images do not notice.
# Idempotent; needs root for the install and for dockerd. Usage: bash scripts/docker-engine.sh
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null || ! [ -x /bin/busybox ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "docker-engine: dockerd is not installed; run as root or install docker.io" >&2
        exit 1
    fi
    echo "docker-engine: installing docker.io and busybox-static (apt)" >&2
    for attempt in 1 2 3; do  # a mirror hiccup should not fail a CI run
        if apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq docker.io busybox-static >/dev/null; then
            break
        fi
        [ "$attempt" = 3 ] && { echo "docker-engine: apt-get failed 3 times" >&2; exit 1; }
        sleep 5
    done
fi
if ! docker info >/dev/null 2>&1; then
    log=${DOCKERD_LOG:-/tmp/bflow-dockerd.log}
    echo "docker-engine: starting dockerd (log: $log)" >&2
    nohup dockerd --storage-driver=vfs --iptables=false >"$log" 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
fi
if ! docker info >/dev/null 2>&1; then
    echo "docker-engine: dockerd did not come up; see ${DOCKERD_LOG:-/tmp/bflow-dockerd.log}" >&2
    exit 1
fi
echo "docker-engine: ready ($(docker version --format '{{.Server.Version}}'))" >&2
