#!/usr/bin/env bash
# Checks a shipped binary: statically linked (no PT_INTERP, `file` says
# static), built for the architecture its target directory names (x86_64 or
# aarch64), at most MAX_BYTES (default 3.5 MB = 3,500,000 bytes; the same budget
# for every architecture: with cancel, delayed start and caps the x86_64
# static-pie binary is 3.06 MB, 104 KB of it the relocations that give it
# ASLR; aarch64 2.50 MB), no aws-lc-rs in the dependency tree, at most
# MAX_CRATES (120) crates in the normal tree of that target.
#   scripts/check-static.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${1:-$TARGET_DIR/x86_64-unknown-linux-musl/release/k8s-job-worker}
MAX_BYTES=${MAX_BYTES:-3500000}
MAX_CRATES=${MAX_CRATES:-120}
fail=0

need() { # command, Debian package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "check-static: installing $2 for $1" >&2
    apt-get install -y -qq "$2" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$2" >/dev/null 2>&1; }
  fi
  command -v "$1" >/dev/null 2>&1 || { echo "check-static: $1 missing (apt-get install $2)" >&2; exit 2; }
}
need file file
need readelf binutils

[ -f "$BIN" ] || { echo "check-static: $BIN not found (make static)" >&2; exit 2; }

desc=$(file -b "$BIN")
case $BIN in
  */aarch64-*) TARGET=aarch64-unknown-linux-musl; MACHINE=AArch64 ;;
  *) TARGET=x86_64-unknown-linux-musl; MACHINE='Advanced Micro Devices X86-64' ;;
esac
machine=$(readelf -hW "$BIN" | sed -n 's/^ *Machine: *//p')
if [ "$machine" = "$MACHINE" ]; then
  echo "ok   architecture: $machine ($TARGET)"
else
  echo "FAIL architecture: $BIN is for '$machine', want '$MACHINE' ($TARGET)"; fail=1
fi
if readelf -lW "$BIN" | grep -q 'INTERP'; then
  echo "FAIL linkage: $BIN has a PT_INTERP (dynamically linked): $desc"; fail=1
elif ! grep -qE 'static(-pie)? linked|statically linked' <<<"$desc"; then
  echo "FAIL linkage: file(1) does not call it static: $desc"; fail=1
elif readelf -dW "$BIN" 2>/dev/null | grep -q '(NEEDED)'; then
  echo "FAIL linkage: $BIN has NEEDED shared libraries"; fail=1
else
  echo "ok   linkage: static ($desc)"
fi

size=$(stat -c %s "$BIN")
human=$(awk -v s="$size" 'BEGIN { printf "%.2f MB", s / 1000000 }')
if [ "$size" -gt "$MAX_BYTES" ]; then
  echo "FAIL size: $size bytes ($human) > $MAX_BYTES"; fail=1
else
  echo "ok   size: $size bytes ($human) <= $MAX_BYTES"
fi

# `cargo tree -i X` exits non-zero ("did not match any packages") when X is absent.
if out=$(cargo tree --target "$TARGET" -i aws-lc-rs 2>&1); then
  echo "FAIL aws-lc-rs: it is in the dependency tree:"; echo "$out" | head -20; fail=1
elif grep -q 'did not match any packages' <<<"$out"; then
  echo "ok   aws-lc-rs: not in the dependency tree"
else
  echo "FAIL aws-lc-rs: cargo tree failed: $out"; fail=1
fi

crates=$(cargo tree --target "$TARGET" -e normal --prefix none --no-dedupe \
  | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u | wc -l)
if [ "$crates" -gt "$MAX_CRATES" ]; then
  echo "FAIL crates: $crates in the shipped tree > $MAX_CRATES"; fail=1
else
  echo "ok   crates: $crates in the shipped tree ($TARGET) <= $MAX_CRATES"
fi

exit $fail
