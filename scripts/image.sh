#!/usr/bin/env bash
# Builds the shipped image from what `make static` and `make sbom` produced,
# pulling nothing (deploy/Containerfile.scratch is FROM scratch, COPY only):
#   podman: NAME-amd64, NAME-arm64 and the manifest list NAME (linux/amd64 + linux/arm64)
#   docker: NAME-amd64, NAME-arm64, and NAME tagged to the host's architecture
#           (a local manifest list needs the containerd image store: push the
#           two images and run `docker manifest create` against your registry)
# The context is staged per architecture under $CARGO_TARGET_DIR/image/<arch>/.
#   scripts/image.sh                       (make image)
# Environment: IMAGE (k8s-job-worker:0.1.0), IMAGE_ARCHS ("amd64 arm64"),
# IMAGE_ENGINE (podman|docker; default: the first that works), CA_BUNDLE
# (/etc/ssl/certs/ca-certificates.crt), SOURCE_DATE_EPOCH (default: last commit).
set -euo pipefail
cd "$(dirname "$0")/.."
TD=${CARGO_TARGET_DIR:-target}
IMAGE=${IMAGE:-k8s-job-worker:0.1.0}
ARCHS=${IMAGE_ARCHS:-amd64 arm64}
CA=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
t0=$(date +%s.%N)

triple() {
  case $1 in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) echo "image: unknown architecture $1 (amd64 or arm64)" >&2; exit 2 ;;
  esac
}

engine=${IMAGE_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1 && scripts/podman.sh info >/dev/null 2>&1; then
    engine=podman
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  else
    echo "image: neither podman nor docker works here." >&2
    echo "  Debian/Ubuntu: apt-get install -y podman runc   (then: make image)" >&2
    command -v podman >/dev/null 2>&1 && { scripts/podman.sh info 2>&1 | tail -3 >&2 || true; }
    exit 1
  fi
fi
case $engine in
  podman) E=(scripts/podman.sh) ;;
  docker) E=(docker) ;;
  *) echo "image: IMAGE_ENGINE=$engine: podman or docker" >&2; exit 2 ;;
esac

if [ ! -s "$CA" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "image: installing ca-certificates for $CA" >&2
    apt-get install -y -qq ca-certificates >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq ca-certificates >/dev/null 2>&1; }
  fi
  [ -s "$CA" ] || { echo "image: no CA bundle at $CA (apt-get install ca-certificates, or set CA_BUNDLE)" >&2; exit 1; }
fi

# Stage every context first, so a missing input fails before anything is built.
for arch in $ARCHS; do
  t=$(triple "$arch")
  bin=$TD/$t/release/k8s-job-worker
  sbom=$TD/sbom/k8s-job-worker-$t.cdx.json
  [ -x "$bin" ] || { echo "image: $bin missing: make static" >&2; exit 1; }
  [ -s "$sbom" ] || { echo "image: $sbom missing: make sbom" >&2; exit 1; }
  ctx=$TD/image/$arch
  rm -rf "$ctx" && mkdir -p "$ctx"
  install -m 0755 "$bin" "$ctx/k8s-job-worker"
  install -m 0644 deploy/passwd deploy/group "$ctx/"
  install -m 0644 "$CA" "$ctx/ca-certificates.crt"
  install -m 0644 "$sbom" "$ctx/sbom.cdx.json"
done

old_ids() { for arch in $ARCHS; do "${E[@]}" image inspect --format '{{.Id}}' "$IMAGE-$arch" 2>/dev/null || true; done; }
before=$(old_ids)

for arch in $ARCHS; do
  args=(build --quiet --platform "linux/$arch" -f deploy/Containerfile.scratch
        --build-arg "VERSION=$VERSION" -t "$IMAGE-$arch")
  # podman: no intermediate images, file times and creation date from the commit.
  [ "$engine" = podman ] && args+=(--layers=false --timestamp "$EPOCH")
  echo "image: $engine build linux/$arch -> $IMAGE-$arch" >&2
  "${E[@]}" "${args[@]}" "$TD/image/$arch" >/dev/null
done
if [ "$engine" = podman ]; then
  # The manifest list from the finished images (podman 4.3's `build --manifest`
  # leaves a list whose instance `podman images` cannot resolve).
  if "${E[@]}" manifest exists "$IMAGE" 2>/dev/null; then
    "${E[@]}" manifest rm "$IMAGE" >/dev/null
  elif "${E[@]}" image exists "$IMAGE" 2>/dev/null; then
    "${E[@]}" rmi "$IMAGE" >/dev/null
  fi
  "${E[@]}" manifest create "$IMAGE" >/dev/null
  for arch in $ARCHS; do
    id=$("${E[@]}" image inspect --format "{{.Id}}" "$IMAGE-$arch")
    "${E[@]}" manifest add "$IMAGE" "containers-storage:$id" >/dev/null
  done
else
  host=$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
  if [[ " $ARCHS " == *" $host "* ]]; then docker tag "$IMAGE-$host" "$IMAGE"; fi
fi

# Drop the images these tags pointed to before (vfs keeps a full copy of
# each), unless another tag still names them.
for id in $before; do
  tags=$("${E[@]}" image inspect --format '{{len .RepoTags}}' "$id" 2>/dev/null || echo 1)
  [ "$tags" = 0 ] && { "${E[@]}" rmi "$id" >/dev/null 2>&1 || true; }
done

for arch in $ARCHS; do
  size=$("${E[@]}" image inspect --format '{{.Size}}' "$IMAGE-$arch")
  awk -v a="$arch" -v n="$IMAGE-$arch" -v s="$size" \
    'BEGIN { printf "image: %s %s: %d bytes (%.2f MB)\n", n, a, s, s / 1000000 }'
done
if [ "$engine" = podman ]; then
  echo "image: manifest list $IMAGE: $("${E[@]}" manifest inspect "$IMAGE" \
    | python3 -c 'import json,sys; print(" ".join(m["platform"]["os"] + "/" + m["platform"]["architecture"] for m in json.load(sys.stdin)["manifests"]))')"
fi
awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "image: built in %.1f s\n", b - a }'
