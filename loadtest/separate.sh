#!/usr/bin/env bash
# Runs a scenario against fencegate started as its own process on loopback,
# so that the report's memory per connection is the gateway's alone and the
# gateway's CPU time can be read off separately from the harness's.
#
#   cargo build --release -p fencegate -p fencegate-load
#   loadtest/separate.sh loadtest/scenarios/fleet.toml [fencegate-load flags...]
#
# FENCEGATE_EXTRA_CONFIG: TOML appended to the gateway's configuration (for
# example "[dedup]\nping_cell_resolution = 15"); FENCEGATE_QUIC_CONFIG: lines
# added to its [quic] table (for example "max_handshakes_in_flight = 64").
# A scenario's [gateway] table applies only to the harness's built-in
# gateway; give its settings here instead. BIN: folder of the two
# binaries (default target/release). Everything lives in a temporary folder
# that is removed at the end.
set -euo pipefail

scenario=${1:?usage: loadtest/separate.sh SCENARIO.toml [fencegate-load flags...]}
shift
bin=${BIN:-target/release}
for b in fencegate fencegate-load; do
    [[ -x $bin/$b ]] || { echo "$bin/$b is missing: cargo build --release -p fencegate -p fencegate-load" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/fencegate-separate.XXXXXX")
gw=
cleanup() {
    if [[ -n $gw ]]; then kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if "'"$1"'"=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
quic=$(free_port udp)
admin=$(free_port tcp)

"$bin/fencegate-load" --scenario "$scenario" --write-fences "$dir/fences.geojson" >/dev/null
"$bin/fencegate-load" --scenario "$scenario" --write-rules "$dir/rules.toml" >/dev/null
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/loadtest.key"
chmod 600 "$dir/loadtest.key"

cat >"$dir/fencegate.toml" <<CONF
[node]
data_dir = "$dir/data"
[quic]
listen = "127.0.0.1:$quic"
endpoints = $(nproc)
$(printf '%b' "${FENCEGATE_QUIC_CONFIG:-}")
[admin]
listen = "127.0.0.1:$admin"
[fences]
path = "$dir/fences.geojson"
[attendance]
rules = "$dir/rules.toml"
[[tenants]]
id = "loadtest"
key_file = "$dir/loadtest.key"
CONF
if [[ -n ${FENCEGATE_EXTRA_CONFIG:-} ]]; then printf '%b\n' "$FENCEGATE_EXTRA_CONFIG" >>"$dir/fencegate.toml"; fi

"$bin/fencegate" serve --config "$dir/fencegate.toml" 2>"$dir/serve.log" &
gw=$!
fp=
for _ in $(seq 1 300); do
    fp=$(sed -n 's/.*certificate SHA-256 \([0-9a-f]*\).*/\1/p' "$dir/serve.log")
    [[ -n $fp ]] && break
    kill -0 "$gw" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
    sleep 0.1
done
[[ -n $fp ]] || { echo "the gateway did not start within 30 s:" >&2; cat "$dir/serve.log" >&2; exit 1; }

cpu() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
before=$(cpu)
start=$(date +%s.%N)
set +e
"$bin/fencegate-load" --scenario "$scenario" --target "127.0.0.1:$quic" --fingerprint "$fp" \
    --tenant loadtest --tenant-key-file "$dir/loadtest.key" --log-dir "$dir/data/log" \
    --metrics-url "http://127.0.0.1:$admin/metrics" --gateway-pid "$gw" "$@"
rc=$?
set -e
after=$(cpu)
awk -v t="$(getconf CLK_TCK)" -v b="$before" -v a="$after" -v s="$start" -v e="$(date +%s.%N)" \
    'BEGIN { printf "gateway process: %.1f CPU seconds over %.1f s of wall time (%.2f cores)\n", (a-b)/t, e-s, (a-b)/t/(e-s) }'
exit $rc
