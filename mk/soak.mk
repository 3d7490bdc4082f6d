# Crash-loop soak: SIGKILL and restart the worker CRASH_ITERATIONS times
# (tests/failover.rs, repeated_sigkill_crash_loop) while messages keep coming.
.PHONY: soak
CRASH_ITERATIONS ?= 100

soak: testbed
	@export TESTBED_BIN="$$(bash testbed/build.sh | tail -n1)"; \
	 export TESTBED_PYTHON="$$(bash testbed/venv.sh)"; \
	 CRASH_ITERATIONS=$(CRASH_ITERATIONS) $(CARGO) test --test failover -- --nocapture repeated_sigkill_crash_loop
