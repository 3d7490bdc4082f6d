# Benchmarks and soak runs on the local test bed (included by the Makefile).
#
#   make bench   release worker; Redis and SQS: 1,000 messages at once (Jobs/s,
#                enqueue → status-0 latency), then 1,000 at 20/s; RSS idle/peak.
#                Figures only, nothing asserted. Knobs: BENCH_N, BENCH_RATE,
#                BENCH_QUEUES=redis,sqs, BENCH_OUT=file (the table, Markdown),
#                BENCH_ONLY=<test name filter> (e.g. bench_redis_and_sqs: the
#                table alone, without the bed-only tests after it).
#                BENCH_RSS=1 adds in_flight_rss (the in-flight row on the glibc
#                release and the static musl binary; make static-amd64 first).
#   (make soak is in mk/soak.mk)
.PHONY: bench

bench: testbed
	$(CARGO) build --release
	@export TESTBED_BIN="$$(bash testbed/build.sh | tail -n1)"; \
	 export TESTBED_PYTHON="$$(bash testbed/venv.sh)"; \
	 $(CARGO) test --test bench -- --ignored --nocapture --test-threads=1 $(BENCH_ONLY)

