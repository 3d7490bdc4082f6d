#!/usr/bin/env bash
# Builds (or finds cached) the test-bed binaries: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, and the Kueue manager, from
# the Go module proxy through the wrapper modules beside this script. Binaries go
# to $TESTBED_CACHE/<version>-<key>/bin where <key> hashes the pins and go.sum
# files, so they are rebuilt only when a pin changes. Kueue has its own
# directory and key ($TESTBED_CACHE/kueue-<version>-<key>/bin), so a Kueue pin
# never invalidates the others. Concurrent runs wait for each other (flock).
#
#   build.sh           build/find everything; print the etcd/kube/kwok bin dir last
#   build.sh --kueue   build/find only Kueue; print its bin dir last
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
cache_root=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-job-worker/testbed}
key=$( (grep -E "^(KUBE|ETCD|KWOK)_VERSION=" "$here/versions.env"; cat "$here"/{kube,etcd,kwok}/go.mod "$here"/{kube,etcd,kwok}/go.sum) | sha256sum | cut -c1-12)
dir="$cache_root/${KUBE_VERSION}-${key}"
bin="$dir/bin"
kueue_key=$( (grep -E "^KUEUE_VERSION=" "$here/versions.env"; cat "$here"/kueue/go.mod "$here"/kueue/go.sum) | sha256sum | cut -c1-12)
kueue_dir="$cache_root/kueue-${KUEUE_VERSION}-${kueue_key}"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
log() { echo "[testbed $(date +%H:%M:%S)] $*" >&2; }

build() { # cache-dir name module-dir ldflags pkgs...
  local d=$1 name=$2 moddir=$3 ldflags=$4; shift 4
  if [ -f "$d/.ok-$name" ]; then log "$name: cached in $d/bin"; return; fi
  mkdir -p "$d/bin"
  # One builder per cache dir; a second run waits here, then finds it cached.
  exec 8>"$d/.lock"
  flock 8
  if [ -f "$d/.ok-$name" ]; then exec 8>&-; log "$name: cached in $d/bin"; return; fi
  log "$name: building (cold builds take minutes on 2 cores)..."
  local t0=$SECONDS
  ( cd "$here/$moddir" && go build -trimpath -ldflags "$ldflags" -o "$d/bin/" "$@" ) &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do sleep 30; kill -0 $pid 2>/dev/null && log "$name: still building ($((SECONDS - t0)) s)"; done
  wait $pid
  touch "$d/.ok-$name"
  exec 8>&-
  log "$name: built in $((SECONDS - t0)) s"
}

# Kueue: the manager, plus the CRDs, webhook manifests and default manager
# configuration from the same module version (copied to <kueue dir>/config, so
# bed.py needs no Go at run time).
build_kueue() {
  build "$kueue_dir" kueue kueue "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" sigs.k8s.io/kueue/cmd/kueue
  [ -x "$kueue_dir/bin/kueue" ] || { log "missing $kueue_dir/bin/kueue"; exit 1; }
  if [ ! -f "$kueue_dir/.ok-config" ]; then
    exec 8>"$kueue_dir/.lock"
    flock 8
    local src c="$kueue_dir/config.tmp"
    src=$(cd "$here/kueue" && go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$src/config/components/crd/bases" ] || { log "kueue: no config/components/crd/bases under '$src'"; exit 1; }
    rm -rf "$c"
    mkdir -p "$c/crd/bases" "$c/webhook" "$c/manager"
    cp "$src"/config/components/crd/bases/*.yaml "$c/crd/bases/"
    cp "$src/config/components/webhook/manifests.yaml" "$c/webhook/"
    cp "$src/config/components/manager/controller_manager_config.yaml" "$c/manager/"
    chmod -R u+w "$c"
    rm -rf "$kueue_dir/config" && mv "$c" "$kueue_dir/config"
    touch "$kueue_dir/.ok-config"
    exec 8>&-
    log "kueue: CRDs, webhook manifests and default config copied from $src"
  fi
}

if [ "${1:-}" = "--kueue" ]; then
  build_kueue
  echo "$kueue_dir/bin"
  exit 0
fi

kv=${KUBE_VERSION#v}; kmaj=${kv%%.*}; krest=${kv#*.}; kmin=${krest%%.*}
vpkg=k8s.io/component-base/version
kflags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=$kmaj -X $vpkg.gitMinor=$kmin -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
kflags="$kflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$kmaj -X k8s.io/client-go/pkg/version.gitMinor=$kmin"

build "$dir" etcd etcd "-s -w" go.etcd.io/etcd/server/v3
[ -f "$bin/server" ] && mv "$bin/server" "$bin/etcd"
build "$dir" kwok kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build "$dir" kube kube "$kflags" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
for b in etcd kwok kube-apiserver kube-controller-manager kube-scheduler; do
  [ -x "$bin/$b" ] || { log "missing $bin/$b"; exit 1; }
done
build_kueue
echo "$bin"
