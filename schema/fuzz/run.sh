#!/usr/bin/env bash
# Runs the schema parser fuzz target for a bounded time (default 60 s).
#
#   schema/fuzz/run.sh            # 60 seconds
#   schema/fuzz/run.sh 600        # ten minutes
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer); RUSTC_BOOTSTRAP=1
# lets the installed stable toolchain accept them. Not part of CI.
set -euo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "run.sh: cargo-fuzz is not installed. Install it with: cargo install cargo-fuzz" >&2
  exit 1
fi

cd "$here/.."   # cargo fuzz looks for ./fuzz
mkdir -p fuzz/corpus/parse_frame
RUSTC_BOOTSTRAP=1 exec cargo fuzz run parse_frame fuzz/corpus/parse_frame -- \
  -max_total_time="$seconds" -max_len=70000 -timeout=10
