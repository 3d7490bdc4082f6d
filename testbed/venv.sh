#!/usr/bin/env bash
# Makes (once) the Python venv with moto's server, boto3 and prometheus_client that the test bed
# uses, at ${XDG_CACHE_HOME:-~/.cache}/k8s-job-worker/venv-moto-<MOTO_VERSION>.
# Safe to run concurrently (flock). Prints the venv's python on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
root=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-job-worker
venv=$root/venv-moto-$MOTO_VERSION
# tests/observability.rs parses /metrics with prometheus_client's own parser.
PROMETHEUS_CLIENT_VERSION=0.26.0
mkdir -p "$root"
ok() {
  [ -x "$venv/bin/moto_server" ] &&
    "$venv/bin/python" -c "import boto3, moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('prometheus_client') != '$PROMETHEUS_CLIENT_VERSION')" 2>/dev/null
}
if ! ok; then
  exec 9>"$venv.lock"
  flock 9
  if ! ok; then
    echo "[testbed] creating $venv (moto[server]==$MOTO_VERSION, prometheus_client==$PROMETHEUS_CLIENT_VERSION)..." >&2
    t0=$SECONDS
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
      "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
    ok || { echo "[testbed] $venv is not usable after pip install" >&2; exit 1; }
    echo "[testbed] venv ready in $((SECONDS - t0)) s" >&2
  fi
fi
echo "$venv/bin/python"
