#!/usr/bin/env bash
# podman as it works on the build and test machines: vfs storage (no overlay
# mounts needed), runc (crun fails on their hybrid cgroup layout) and
# scripts/containers.conf (no default ulimits, cgroupfs).
#   scripts/podman.sh ARGS...        e.g. scripts/podman.sh images
# PODMAN_STORAGE_DRIVER / PODMAN_RUNTIME / CONTAINERS_CONF override the defaults.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
exec podman --storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}" \
  --runtime "${PODMAN_RUNTIME:-runc}" "$@"
