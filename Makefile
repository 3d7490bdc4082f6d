# k8s-job-worker: build, unit tests, and integration tests on the local test bed.
# See testbed/README.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
CACHE_ROOT := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/k8s-job-worker

.PHONY: all build test unit integration testbed testbed-up venv fmt fmt-check clippy clean-testbed

all: build

build:
	$(CARGO) build --release

# Unit tests first (no bed), then every integration test binary; each of those
# starts its own bed once (tests/support) and shares it among its tests.
test: unit integration

unit:
	$(CARGO) test --lib --bins

integration: testbed
	@export TESTBED_BIN="$$(bash testbed/build.sh | tail -n1)"; \
	 export TESTBED_PYTHON="$$(bash testbed/venv.sh)"; \
	 echo "TESTBED_BIN=$$TESTBED_BIN"; \
	 $(CARGO) test --test '*'

# Builds (or finds cached) etcd, kube-apiserver/-controller-manager/-scheduler,
# kwok, and the moto venv. Cold: ~10 min on 2 cores; cached: instant.
testbed: venv
	@command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server" >&2; exit 1; }
	bash testbed/build.sh

venv:
	@bash testbed/venv.sh >/dev/null

# Starts a bed in the foreground and prints how to reach it; Ctrl-C tears it down.
testbed-up: testbed
	"$$(bash testbed/venv.sh)" testbed/bed.py --foreground --bin "$$(bash testbed/build.sh 2>/dev/null | tail -n1)"

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

# Removes the cached test-bed binaries, the moto venv and stale bed dirs.
clean-testbed:
	rm -rf "$(CACHE_ROOT)/testbed" "$(CACHE_ROOT)"/venv-moto-*
	rm -rf "$${TMPDIR:-/tmp}"/k8s-job-worker-bed-*
-include mk/*.mk
