#!/bin/bash
# Where a stream's time to first token goes, by the proxy's system calls: 150 streams one after
# another at about 10 a second from the Python mock, traced with `perf record` on the proxy's
# raw_syscalls, and per stream (medians, µs): from reading the client's request to writing the
# upstream's (leg 1); from that write to parking for the answer (work done while it is on its
# way); the wait; from reading the upstream's answer to writing the client's first bytes (leg 2);
# and from the request read to that write in all. Perf's tracing adds a few µs to each call.
#
#   benches/profile/legs.sh target/release/modelgate
#   FLOOR=1 benches/profile/legs.sh <load bench binary>        # the floor
#
# Needs perf, and perf_event_paranoid ≤ 1 or root. Loopback only; proxy on core 0, client on 1.
set -euo pipefail
BIN=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
up=18081 api=18080 admin=18090
python3 "$here/config.py" "$work/modelgate.yaml" 24 "$up" 0
python3 "$here/mock.py" $up 0.05 &
if [ "${FLOOR:-0}" = 1 ]; then
  taskset -c 0 "$BIN" --floor 127.0.0.1:$up >"$work/out" 2>"$work/err" &
  proxy=$!
  for _ in $(seq 1 100); do grep -q "floor listening" "$work/out" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/.*listening .*:\([0-9]*\)$/\1/p' "$work/out")
else
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn,modelgate=info taskset -c 0 "$BIN" serve --config "$work/modelgate.yaml" \
    --listen 127.0.0.1:$api --admin-listen 127.0.0.1:$admin >/dev/null 2>"$work/err" &
  proxy=$!
  for _ in $(seq 1 100); do grep -q "modelgate is serving" "$work/err" 2>/dev/null && break; sleep 0.1; done
  port=$api
fi
perf record -q -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit -p $proxy -o "$work/perf.data" 2>/dev/null &
perf=$!
sleep 1
taskset -c 1 python3 "$here/footprint.py" pace "$port" 150 0.1
kill -INT $perf
wait $perf || true
perf script -i "$work/perf.data" -F tid,time,event,trace 2>/dev/null >"$work/calls"
python3 "$here/footprint.py" legs "$work/calls"
