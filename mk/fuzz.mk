# Bounded fuzzing of the message parser/validator/renderer, the watch-line
# decoder and the webhook URL guard (cargo-fuzz, libFuzzer; needs nightly).
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd fuzz && ./run.sh $(FUZZ_SECONDS)
