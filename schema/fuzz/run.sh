#!/usr/bin/env bash
# Runs this crate's cargo-fuzz targets one after another, each for a
# bounded time or number of executions, and prints one summary line per
# target (executions, seconds, exec/s, crash or not).
#
#   ./run.sh                          # every target, 60 s each
#   ./run.sh -t 600 parse_frame       # one target, ten minutes
#   ./run.sh -n 10000000              # every target, 10 M executions each
#   nice -n 19 ./run.sh -n 10000000 parse_frame    # on a shared machine
#
# Options: -t SECONDS (default 60 unless -n is given), -n RUNS, then target
# names (default: every target of `cargo fuzz list`). Environment:
# SANITIZER (address, none, ...; default below), MAX_LEN (libFuzzer
# -max_len; default below), CARGO_TARGET_DIR (put the
# instrumented build apart from the normal one, e.g. /work/target-fuzz).
#
# The growing corpus is fuzz/corpus/<target> (not committed); the committed
# hand-made seeds in fuzz/seeds/<target> are read as a second corpus, never
# written. Crashes land in fuzz/artifacts/<target>; full logs in
# fuzz/logs/<target>.log. Exits non-zero if any target crashed.
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer, sancov);
# RUSTC_BOOTSTRAP=1 lets the installed stable toolchain accept them. Builds
# are release with debug assertions (-O -a), so integer overflow panics as
# it does in tests. Not part of CI: schema/tests/fuzz_corpus.rs runs the
# same target body over the seeds there.
set -euo pipefail

# The flatbuffers views read the buffer unchecked after the verifier, so an
# out-of-bounds read that does not panic is what ASan is here to catch.
sanitizer="${SANITIZER:-address}"
# Above the largest frame any channel accepts (the backlog's 64 KiB), so
# the Oversize path is reachable too.
max_len="${MAX_LEN:-70000}"
seconds=""
runs=""
while getopts "t:n:h" opt; do
  case "$opt" in
    t) seconds="$OPTARG" ;;
    n) runs="$OPTARG" ;;
    *) sed -n '2,28p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ -z "$seconds" && -z "$runs" ]]; then seconds=60; fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "run.sh: cargo-fuzz is not installed. Install it with: cargo install cargo-fuzz" >&2
  exit 1
fi
cd "$here/.."   # cargo fuzz looks for ./fuzz
export RUSTC_BOOTSTRAP=1
flags=(-O -a -s "$sanitizer")

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build "${flags[@]}"

libfuzzer=(-timeout=10 -print_final_stats=1)
[[ -n "$seconds" ]] && libfuzzer+=("-max_total_time=$seconds")
[[ -n "$runs" ]] && libfuzzer+=("-runs=$runs")
[[ -n "$max_len" ]] && libfuzzer+=("-max_len=$max_len")

failed=0
mkdir -p fuzz/logs
printf '%-16s %12s %8s %9s  %s\n' target executions seconds exec/s result
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="fuzz/logs/$t.log"
  start=$(date +%s)
  if cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- "${libfuzzer[@]}" >"$log" 2>&1; then
    result="ok, no crash"
  else
    result="CRASH: see $log and fuzz/artifacts/$t"
    failed=1
  fi
  took=$(( $(date +%s) - start ))
  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo "?")
  printf '%-16s %12s %8s %9s  %s\n' "$t" "$execs" "$took" "$rate" "$result"
done
exit "$failed"
