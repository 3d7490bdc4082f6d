# Shipping targets (included by the main Makefile: `include mk/*.mk`).
#   make static        static musl binaries for amd64 and arm64, each checked by
#                      scripts/check-static.sh (linkage, architecture, size, crates)
#   make static-amd64  x86_64-unknown-linux-musl only (musl-gcc)
#   make static-arm64  aarch64-unknown-linux-musl only (cargo-zigbuild + zig)
#   make sbom          CycloneDX 1.5 JSON of the shipped crate tree, per target (offline)
#   make image         scratch image per architecture + the manifest list, from the
#                      binaries and SBOMs above, with podman or docker, pulling nothing;
#                      then scripts/check-image.sh (IMAGE_ARCHS=amd64 for one platform)
#   make image-check   scripts/check-image.sh alone
#   make image-save    the manifest list as one OCI archive, for an air-gapped registry
#   make demo          the worker end to end on the local test bed (scripts/demo.sh)

SHIP_TARGET      ?= x86_64-unknown-linux-musl
SHIP_TARGET_ARM  ?= aarch64-unknown-linux-musl
SHIP_IMAGE       ?= k8s-job-worker:0.1.0
SHIP_TARGET_DIR  ?= $(or $(CARGO_TARGET_DIR),target)
SHIP_BIN         := $(SHIP_TARGET_DIR)/$(SHIP_TARGET)/release/k8s-job-worker
SHIP_BIN_ARM     := $(SHIP_TARGET_DIR)/$(SHIP_TARGET_ARM)/release/k8s-job-worker
SHIP_SBOM_DIR    := $(SHIP_TARGET_DIR)/sbom
IMAGE_ARCHS      ?= amd64 arm64
SHIP_ENV          = CARGO_TARGET_DIR=$(SHIP_TARGET_DIR) IMAGE=$(SHIP_IMAGE) IMAGE_ARCHS="$(IMAGE_ARCHS)"

.PHONY: static static-amd64 static-arm64 sbom image image-check image-save demo

static: static-amd64 static-arm64

# ring's C and assembly need a musl C compiler: musl-gcc (Debian: musl-tools).
static-amd64:
	@rustup target list --installed 2>/dev/null | grep -x '$(SHIP_TARGET)' >/dev/null \
	  || rustup target add $(SHIP_TARGET)
	@command -v musl-gcc >/dev/null 2>&1 || command -v x86_64-linux-musl-gcc >/dev/null 2>&1 \
	  || { echo "installing musl-tools (musl-gcc)"; apt-get install -y -qq musl-tools >/dev/null 2>&1 \
	       || { apt-get update -qq >/dev/null && apt-get install -y -qq musl-tools >/dev/null; }; } \
	  || { echo "make static: no musl C compiler: apt-get install musl-tools" >&2; exit 1; }
	CC_x86_64_unknown_linux_musl=$${CC_x86_64_unknown_linux_musl:-$$(command -v x86_64-linux-musl-gcc || echo musl-gcc)} \
	  cargo build --release --locked --target $(SHIP_TARGET)
	CARGO_TARGET_DIR=$(SHIP_TARGET_DIR) scripts/check-static.sh $(SHIP_BIN)

# Cross build: zig (PyPI `ziglang`) is the C compiler and linker for ring;
# scripts/zig-toolchain.sh installs it and cargo-zigbuild when missing.
static-arm64:
	@rustup target list --installed 2>/dev/null | grep -x '$(SHIP_TARGET_ARM)' >/dev/null \
	  || rustup target add $(SHIP_TARGET_ARM)
	zigdir="$$(scripts/zig-toolchain.sh)"; PATH="$$zigdir:$(or $(CARGO_HOME),$(HOME)/.cargo)/bin:$$PATH" \
	  cargo zigbuild --release --locked --target $(SHIP_TARGET_ARM)
	CARGO_TARGET_DIR=$(SHIP_TARGET_DIR) scripts/check-static.sh $(SHIP_BIN_ARM)

sbom:
	python3 scripts/sbom.py --target $(SHIP_TARGET) --out $(SHIP_SBOM_DIR)/k8s-job-worker-$(SHIP_TARGET).cdx.json
	python3 scripts/sbom.py --target $(SHIP_TARGET_ARM) --out $(SHIP_SBOM_DIR)/k8s-job-worker-$(SHIP_TARGET_ARM).cdx.json

image: $(addprefix static-,$(IMAGE_ARCHS)) sbom
	$(SHIP_ENV) scripts/image.sh
	$(SHIP_ENV) scripts/check-image.sh

image-check:
	$(SHIP_ENV) scripts/check-image.sh

image-save:
	@mkdir -p $(SHIP_TARGET_DIR)/image
	scripts/podman.sh manifest push --all $(SHIP_IMAGE) \
	  oci-archive:$(SHIP_TARGET_DIR)/image/$(subst :,-,$(SHIP_IMAGE)).oci.tar
	@ls -l $(SHIP_TARGET_DIR)/image/$(subst :,-,$(SHIP_IMAGE)).oci.tar

demo:
	scripts/demo.sh
