#!/usr/bin/env bash
# Makes cargo-zigbuild and zig available for the aarch64 musl cross build
# (ring's C and assembly need a cross C compiler; zig is one, shipped on PyPI as
# `ziglang`) and prints the directory to put first on PATH. Installs what is
# missing: ziglang into a venv under ~/.cache/k8s-job-worker, cargo-zigbuild with
# `cargo install --locked`.
#   PATH="$(scripts/zig-toolchain.sh):$PATH" cargo zigbuild --target aarch64-unknown-linux-musl
set -euo pipefail
ZIG_VERSION=${ZIG_VERSION:-0.17.0}
ZIGBUILD_VERSION=${ZIGBUILD_VERSION:-0.24.1}
cache=$(eval echo "${XDG_CACHE_HOME:-~/.cache}")/k8s-job-worker
venv=$cache/venv-zig-$ZIG_VERSION
mkdir -p "$cache"
say() { echo "zig-toolchain: $*" >&2; }

exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c 'import ziglang' >/dev/null 2>&1; then
  say "installing ziglang==$ZIG_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIG_VERSION" >&2
fi
zigdir=$("$venv/bin/python" -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))')
[ -x "$zigdir/zig" ] || { say "no zig executable in $zigdir"; exit 1; }

if ! command -v cargo-zigbuild >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-zigbuild" ]; then
  say "installing cargo-zigbuild $ZIGBUILD_VERSION (cargo install --locked)"
  nice -n 10 cargo install --locked --quiet cargo-zigbuild --version "$ZIGBUILD_VERSION" >&2
fi
flock -u 9
echo "$zigdir"
