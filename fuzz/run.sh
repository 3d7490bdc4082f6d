#!/usr/bin/env bash
# Runs every fuzz target (or the ones named after the limit), starting from the
# committed seeds, after replaying the committed regressions, and prints each
# target's final line ("Done N runs in S second(s)") and its exec/s.
#
#   ./run.sh [seconds] [target...]                 default: 60 seconds, all targets
#   FUZZ_RUNS=10000000 ./run.sh [seconds] [target...]
#
# With FUZZ_RUNS a target runs that many executions (libFuzzer -runs); the
# seconds, if given, still cap it. Fuzzers run under `nice -n ${FUZZ_NICE:-15}`
# (the build machines are shared). One summary line per target is appended to
# artifacts/summary.tsv: target, runs, seconds, exec/s, result.
#
# The working corpus grows in corpus/<target>/ (gitignored); crashes land in
# artifacts/<target>/. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-}"
[ $# -gt 0 ] && shift
runs="${FUZZ_RUNS:-}"
if [ -z "$secs" ]; then
  if [ -n "$runs" ]; then secs=0; else secs=60; fi
fi
nice_level="${FUZZ_NICE:-15}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
limits=(-max_total_time="$secs")
[ -n "$runs" ] && limits+=(-runs="$runs")
mkdir -p artifacts
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log="artifacts/$t/run.log"
  if [ -d "regressions/$t" ]; then
    echo "== $t: regressions"
    if ! nice -n "$nice_level" cargo +nightly fuzz run "$t" "regressions/$t" -- \
        -runs=0 >"artifacts/$t/regressions.log" 2>&1; then
      echo "!! $t: a regression input fails again; see artifacts/$t/regressions.log"
      status=1
      continue
    fi
  fi
  echo "== $t: ${runs:+$runs runs, }${secs}s cap (0 = none)"
  result=ok
  if ! nice -n "$nice_level" cargo +nightly fuzz run "$t" "corpus/$t" -- \
      "${limits[@]}" -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    echo "!! $t failed; see $log"
    grep -E "panicked|ERROR: libFuzzer|Test unit written" "$log" || true
    status=1
    result=crash
  fi
  done_line=$(grep -E "^Done [0-9]+ runs in [0-9]+ second" "$log" | tail -1 || true)
  execs=$(grep -E "^stat::number_of_executed_units" "$log" | tail -1 | awk '{print $2}' || true)
  rate=$(grep -E "^stat::average_exec_per_sec" "$log" | tail -1 | awk '{print $2}' || true)
  elapsed=$(sed -nE 's/^Done [0-9]+ runs in ([0-9]+) second.*/\1/p' "$log" | tail -1)
  echo "$t: ${done_line:-no final stats (see $log)}"
  [ -n "$rate" ] && echo "$t: $rate exec/s"
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "${execs:-?}" "${elapsed:-?}" "${rate:-?}" "$result" \
    >>artifacts/summary.tsv
done
exit $status
