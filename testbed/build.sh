#!/usr/bin/env bash
# Builds (or finds cached) the test-bed binaries: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, from the Go module proxy
# through the wrapper modules beside this script. Binaries go to
# $TESTBED_CACHE/<key>/bin where <key> hashes the pins and go.sum files, so they
# are rebuilt only when a pin changes. Prints the bin directory on stdout's last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
cache_root=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-job-worker/testbed}
key=$( (grep -E "^(KUBE|ETCD|KWOK)_VERSION=" "$here/versions.env"; cat "$here"/{kube,etcd,kwok}/go.mod "$here"/{kube,etcd,kwok}/go.sum) | sha256sum | cut -c1-12)
dir="$cache_root/${KUBE_VERSION}-${key}"
bin="$dir/bin"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
log() { echo "[testbed $(date +%H:%M:%S)] $*" >&2; }

build() { # name module-dir ldflags pkgs...
  local name=$1 moddir=$2 ldflags=$3; shift 3
  if [ -f "$dir/.ok-$name" ]; then log "$name: cached in $bin"; return; fi
  log "$name: building (cold builds take minutes on 2 cores)..."
  local t0=$SECONDS
  ( cd "$here/$moddir" && go build -trimpath -ldflags "$ldflags" -o "$bin/" "$@" ) &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do sleep 30; kill -0 $pid 2>/dev/null && log "$name: still building ($((SECONDS - t0)) s)"; done
  wait $pid
  touch "$dir/.ok-$name"
  log "$name: built in $((SECONDS - t0)) s"
}

kv=${KUBE_VERSION#v}; kmaj=${kv%%.*}; krest=${kv#*.}; kmin=${krest%%.*}
vpkg=k8s.io/component-base/version
kflags="-s -w -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=$kmaj -X $vpkg.gitMinor=$kmin -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
kflags="$kflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$kmaj -X k8s.io/client-go/pkg/version.gitMinor=$kmin"

build etcd etcd "-s -w" go.etcd.io/etcd/server/v3
[ -f "$bin/server" ] && mv "$bin/server" "$bin/etcd"
build kwok kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build kube kube "$kflags" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
for b in etcd kwok kube-apiserver kube-controller-manager kube-scheduler; do
  [ -x "$bin/$b" ] || { log "missing $bin/$b"; exit 1; }
done
echo "$bin"
