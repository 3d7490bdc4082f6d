# Bounded fuzzing of every parser of outside data (cargo-fuzz, libFuzzer; needs
# nightly): messages, watch lines, webhook URLs, RFC 3339 times, quantities,
# API server Status and Lease answers, STS / container credentials, SQS
# answers, the tracker's Job/Pod observations, /jobs/{id} paths and the
# environment. `make fuzz` runs each target FUZZ_SECONDS; `make fuzz
# FUZZ_RUNS=10000000` runs each that many executions (FUZZ_SECONDS=0: no time
# cap). FUZZ_TARGETS picks targets; fuzzers run under nice (FUZZ_NICE, 15).
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
FUZZ_TARGETS ?=
FUZZ_NICE ?= 15
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd fuzz && FUZZ_RUNS="$(FUZZ_RUNS)" FUZZ_NICE="$(FUZZ_NICE)" ./run.sh $(if $(FUZZ_RUNS),$(if $(filter command line,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),0),$(FUZZ_SECONDS)) $(FUZZ_TARGETS)
