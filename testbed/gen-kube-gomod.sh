#!/usr/bin/env bash
# Regenerates testbed/kube/go.mod for KUBE_VERSION from the proxied go.mod of
# k8s.io/kubernetes: every `k8s.io/X => ./staging/...` line becomes a replace to
# the published v0.<minor>.<patch>. Run by hand when the pin changes, then commit
# go.mod and go.sum.
set -euo pipefail
cd "$(dirname "$0")/kube"
. ../versions.env
v=${KUBE_VERSION#v1.}
modfile=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
{
  echo "module k8s-job-worker/testbed/kube"
  echo
  grep -E '^go |^godebug ' "$modfile"
  echo
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  echo
  echo "replace ("
  grep -E '=> \./staging/' "$modfile" | awk -v v="v0.${v}" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
echo "staging replaces: $(grep -c '=> k8s.io' go.mod)"
GOFLAGS=-mod=mod go mod tidy
