#!/usr/bin/env bash
# Checks the images `make image` built, one per architecture:
#   platform linux/<arch>; at most MAX_IMAGE_BYTES (default 5 MB = 5,000,000
#   bytes); user 65532:65532; entrypoint /k8s-job-worker; exactly the expected
#   files (no shell, no package manager, nothing else); the binary and the SBOM
#   are byte for byte those `make static` checked and `make sbom` wrote;
#   `--version` answers (read-only, no capabilities, no network; another
#   architecture's binary runs under qemu-user); /bin/sh cannot be started.
# With podman, the manifest list NAME holds exactly linux/amd64 and linux/arm64.
#   scripts/check-image.sh            (make image-check; after make image)
# Environment as scripts/image.sh (IMAGE, IMAGE_ARCHS, IMAGE_ENGINE).
set -euo pipefail
cd "$(dirname "$0")/.."
TD=${CARGO_TARGET_DIR:-target}
IMAGE=${IMAGE:-k8s-job-worker:0.1.0}
ARCHS=${IMAGE_ARCHS:-amd64 arm64}
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-5000000}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
engine=${IMAGE_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1 && scripts/podman.sh info >/dev/null 2>&1; then engine=podman
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
  else echo "check-image: neither podman nor docker works (apt-get install -y podman runc)" >&2; exit 2; fi
fi
if [ "$engine" = podman ]; then E=(scripts/podman.sh); else E=(docker); fi
host=$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
tmp=$(mktemp -d)
cid=
cleanup() { [ -n "$cid" ] && "${E[@]}" rm -f "$cid" >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT

expected='etc/group
etc/passwd
etc/ssl/certs/ca-certificates.crt
k8s-job-worker
usr/share/doc/k8s-job-worker/sbom.cdx.json'

for arch in $ARCHS; do
  case $arch in
    amd64) t=x86_64-unknown-linux-musl; qemu=qemu-x86_64-static ;;
    arm64) t=aarch64-unknown-linux-musl; qemu=qemu-aarch64-static ;;
    *) echo "check-image: unknown architecture $arch" >&2; exit 2 ;;
  esac
  img=$IMAGE-$arch
  if ! "${E[@]}" image inspect "$img" >/dev/null 2>&1; then
    bad "$img: no such image (make image)"; continue
  fi
  insp() { "${E[@]}" image inspect --format "$1" "$img"; }

  plat="$(insp '{{.Os}}')/$(insp '{{.Architecture}}')"
  [ "$plat" = "linux/$arch" ] && ok "$img platform: $plat" || bad "$img platform: $plat, want linux/$arch"

  size=$(insp '{{.Size}}')
  human=$(awk -v s="$size" 'BEGIN { printf "%.2f MB", s / 1000000 }')
  [ "$size" -le "$MAX_IMAGE_BYTES" ] && ok "$img size: $size bytes ($human) <= $MAX_IMAGE_BYTES" \
    || bad "$img size: $size bytes ($human) > $MAX_IMAGE_BYTES"

  user=$(insp '{{.Config.User}}')
  [ "$user" = "65532:65532" ] && ok "$img user: $user" || bad "$img user: ${user:-<none, root>}, want 65532:65532"

  ep=$(insp '{{json .Config.Entrypoint}}')
  [ "$ep" = '["/k8s-job-worker"]' ] && ok "$img entrypoint: $ep" || bad "$img entrypoint: $ep"

  # The file system, read without running anything.
  cid=$("${E[@]}" create --platform "linux/$arch" "$img" 2>/dev/null)
  rm -rf "$tmp/root" && mkdir -p "$tmp/root"
  "${E[@]}" export "$cid" | tar -x -C "$tmp/root" 2>/dev/null
  "${E[@]}" rm -f "$cid" >/dev/null; cid=
  # What the engine itself adds to every container (mount points, empty
  # resolv.conf/hosts/hostname, /run/.containerenv) is not in the image.
  files=$(cd "$tmp/root" && find . \( -type f -o -type l \) ! -empty -printf '%P\n' \
    | grep -vxE 'etc/(hosts|hostname|resolv\.conf)|run/\.containerenv' | sort)
  if [ "$files" = "$expected" ]; then
    ok "$img files: exactly $(wc -l <<<"$files") ($(paste -sd ' ' <<<"$files"))"
  else
    bad "$img files differ from the expected set:"; diff <(echo "$expected") <(echo "$files") | sed 's/^/       /' || true
  fi
  found=$(cd "$tmp/root" && find . \( -type f -o -type l \) -printf '%f\n' \
    | grep -xE 'sh|ash|bash|dash|busybox|apk|apt|apt-get|dpkg|rpm|yum|dnf|microdnf|opkg|pip|pip3' || true)
  [ -z "$found" ] && ok "$img: no shell or package manager" || bad "$img contains: $(paste -sd ' ' <<<"$found")"
  perm=$(stat -c '%a %u:%g' "$tmp/root/k8s-job-worker")
  [ "$perm" = "755 0:0" ] && ok "$img /k8s-job-worker: mode 755, owned by root (not writable by 65532)" \
    || bad "$img /k8s-job-worker: $perm"

  bin=$TD/$t/release/k8s-job-worker
  sbom=$TD/sbom/k8s-job-worker-$t.cdx.json
  cmp -s "$tmp/root/k8s-job-worker" "$bin" && ok "$img binary = $bin (checked by check-static.sh)" \
    || bad "$img binary differs from $bin"
  cmp -s "$tmp/root/usr/share/doc/k8s-job-worker/sbom.cdx.json" "$sbom" && ok "$img SBOM = $sbom" \
    || bad "$img SBOM differs from $sbom"

  want="k8s-job-worker $VERSION"
  if [ "$arch" = "$host" ]; then
    got=$("${E[@]}" run --rm --network none --read-only --cap-drop ALL \
      --security-opt no-new-privileges "$img" --version 2>&1) || true
    how="$engine run --read-only --cap-drop ALL"
    if "${E[@]}" run --rm --network none --entrypoint /bin/sh "$img" -c true >/dev/null 2>&1; then
      bad "$img: /bin/sh ran"
    else
      ok "$img: /bin/sh cannot be started"
    fi
  elif command -v "$qemu" >/dev/null 2>&1; then
    got=$("$qemu" "$tmp/root/k8s-job-worker" --version 2>&1) || true
    how="$qemu (the image's binary)"
  else
    bad "$img --version: $qemu missing (apt-get install qemu-user-static)"; continue
  fi
  [[ "$got" == "$want"* ]] && ok "$img --version ($how): $got" || bad "$img --version ($how): got '$got', want '$want'"
done

if [ "$engine" = podman ] && [ "$(tr ' ' '\n' <<<"$ARCHS" | sort | tr '\n' ' ')" = "amd64 arm64 " ]; then
  plats=$("${E[@]}" manifest inspect "$IMAGE" 2>/dev/null | python3 -c \
    'import json,sys; print(" ".join(sorted(m["platform"]["os"] + "/" + m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"])))' \
    || true)
  [ "$plats" = "linux/amd64 linux/arm64" ] && ok "$IMAGE manifest list: $plats" || bad "$IMAGE manifest list: '${plats}', want linux/amd64 linux/arm64"
fi
exit $fail
