#!/usr/bin/env bash
# Runs every fuzz target (or the ones named after the time) for a bounded time
# with libFuzzer's -max_total_time, starting from the committed seeds, and
# prints each target's final execution count line ("Done N runs in S second(s)")
# and its exec/s.
#
#   ./run.sh [seconds] [target...]     default: 60 seconds, all targets
#
# The working corpus grows in corpus/<target>/ (gitignored); crashes land in
# artifacts/<target>/. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(message watch_line webhook_url)
fi
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log="artifacts/$t/run.log"
  echo "== $t: ${secs}s"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    echo "!! $t failed; see $log"
    grep -E "panicked|ERROR: libFuzzer|Test unit written" "$log" || true
    status=1
  fi
  done_line=$(grep -E "^Done [0-9]+ runs in [0-9]+ second" "$log" | tail -1 || true)
  rate=$(grep -E "^stat::average_exec_per_sec" "$log" | tail -1 || true)
  echo "$t: ${done_line:-no final stats (see $log)}"
  [ -n "$rate" ] && echo "$t: $rate"
done
exit $status
