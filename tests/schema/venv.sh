#!/usr/bin/env bash
# Makes (once) the Python venv with the JSON Schema validator that tests/schema.rs uses, at
# ${XDG_CACHE_HOME:-~/.cache}/k8s-job-worker/venv-jsonschema-<JSONSCHEMA_VERSION>.
# Safe to run concurrently (flock). Prints the venv's python on stdout.
set -euo pipefail
# Pinned with its dependencies, so every machine validates with the same code.
JSONSCHEMA_VERSION=4.26.0
PINS=(
  "jsonschema==$JSONSCHEMA_VERSION"
  "jsonschema-specifications==2025.9.1"
  "referencing==0.37.0"
  "rpds-py==2026.9.1"
  "attrs==26.1.0"
  "typing_extensions==4.16.0"
)
root=${XDG_CACHE_HOME:-$HOME/.cache}/k8s-job-worker
venv=$root/venv-jsonschema-$JSONSCHEMA_VERSION
mkdir -p "$root"
ok() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('jsonschema') != '$JSONSCHEMA_VERSION')" 2>/dev/null
}
if ! ok; then
  exec 9>"$venv.lock"
  flock 9
  if ! ok; then
    echo "[schema] creating $venv (jsonschema==$JSONSCHEMA_VERSION)..." >&2
    t0=$SECONDS
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
    ok || { echo "[schema] $venv is not usable after pip install" >&2; exit 1; }
    echo "[schema] venv ready in $((SECONDS - t0)) s" >&2
  fi
fi
echo "$venv/bin/python"
