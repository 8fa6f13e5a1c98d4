#!/bin/bash
# What a stream touches on its way to its first token: the distinct 64-byte lines of code and
# of data a proxy reads or writes from when a streamed request is sent to when the client has
# read the first content (valgrind's lackey traces every access). At a low rate each stream
# finds the caches cold, and these lines are what it waits for: the time to first token that
# benches/load's P2 measures at 20 streams a second follows them, not the instruction count.
#
#   benches/profile/footprint.sh target/release/modelgate               # the gateway
#   FLOOR=1 benches/profile/footprint.sh <load bench binary>            # the floor
#   TOP=30 benches/profile/footprint.sh …                               # and its code by function
#
# Loopback only: P1's configuration on the Python mock, which sends the first content at once
# and the rest half a second later; 12 streams one after another on one connection (the first
# is not counted), each window from the request sent to the first content read. About two
# minutes (lackey runs the proxy some hundred times slower).
set -euo pipefail
BIN=$1
N=${N:-12}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
up=18081 api=18080 admin=18090
python3 "$here/config.py" "$work/modelgate.yaml" 24 "$up" 0
python3 "$here/mock.py" $up 0.5 &
trace="$work/trace"
lackey="valgrind --tool=lackey --trace-mem=yes --log-file=$trace"
if [ "${FLOOR:-0}" = 1 ]; then
  $lackey "$BIN" --floor 127.0.0.1:$up >"$work/out" 2>"$work/err" &
  proxy=$!
  for _ in $(seq 1 600); do grep -q "floor listening" "$work/out" 2>/dev/null && break; sleep 0.2; done
  port=$(sed -n 's/.*listening .*:\([0-9]*\)$/\1/p' "$work/out")
else
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn,modelgate=info $lackey "$BIN" serve --config "$work/modelgate.yaml" \
    --listen 127.0.0.1:$api --admin-listen 127.0.0.1:$admin >/dev/null 2>"$work/err" &
  proxy=$!
  for _ in $(seq 1 600); do grep -q "modelgate is serving" "$work/err" 2>/dev/null && break; sleep 0.2; done
  port=$api
fi
# Where the binary was loaded, to name the code's functions.
cat /proc/$proxy/maps >"$work/maps"
python3 "$here/footprint.py" drive "$port" "$N" "$trace"
python3 "$here/footprint.py" count "$trace" "$BIN" "$work/maps" "${TOP:-0}"
