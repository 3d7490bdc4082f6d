# Shipping targets (included by the main Makefile: `include mk/*.mk`).
#   make static   static musl binary + scripts/check-static.sh (size, linkage, crates)
#   make image    container image from deploy/Dockerfile (needs a Docker engine)
#   make demo     the worker end to end on the local test bed (scripts/demo.sh)

SHIP_TARGET      ?= x86_64-unknown-linux-musl
SHIP_IMAGE       ?= k8s-job-worker:0.1.0
SHIP_TARGET_DIR  ?= $(or $(CARGO_TARGET_DIR),target)
SHIP_BIN         := $(SHIP_TARGET_DIR)/$(SHIP_TARGET)/release/k8s-job-worker

.PHONY: static image demo

# ring's C and assembly need a musl C compiler: musl-gcc (Debian: musl-tools).
static:
	@rustup target list --installed 2>/dev/null | grep -x '$(SHIP_TARGET)' >/dev/null \
	  || rustup target add $(SHIP_TARGET)
	@command -v musl-gcc >/dev/null 2>&1 || command -v x86_64-linux-musl-gcc >/dev/null 2>&1 \
	  || { echo "installing musl-tools (musl-gcc)"; apt-get install -y -qq musl-tools >/dev/null 2>&1 \
	       || { apt-get update -qq >/dev/null && apt-get install -y -qq musl-tools >/dev/null; }; } \
	  || { echo "make static: no musl C compiler: apt-get install musl-tools" >&2; exit 1; }
	CC_x86_64_unknown_linux_musl=$${CC_x86_64_unknown_linux_musl:-$$(command -v x86_64-linux-musl-gcc || echo musl-gcc)} \
	  cargo build --release --locked --target $(SHIP_TARGET)
	CARGO_TARGET_DIR=$(SHIP_TARGET_DIR) scripts/check-static.sh $(SHIP_BIN)

image:
	@if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then \
	  echo "make image: no Docker engine here (\`docker info\` fails), so no image can be built."; \
	  echo "  Use \`make static\` for the static binary ($(SHIP_BIN)), and on a machine with Docker:"; \
	  echo "  docker build -f deploy/Dockerfile -t $(SHIP_IMAGE) ."; \
	  exit 1; \
	fi
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t $(SHIP_IMAGE) .
	docker run --rm $(SHIP_IMAGE) --version

demo:
	scripts/demo.sh
