#!/bin/bash
# Where a stream's time to first token goes, by the proxy's system calls: 150 streams one after
# another at 10 a second from the Python mock, traced with `perf record` on the proxy's
# raw_syscalls, and per stream (medians, µs): from reading the client's request to writing the
# upstream's (leg 1); from that write to reading the upstream's answer (the wait); from that
# read to writing the client's first bytes (leg 2); and from the request read to that write in
# all. Perf's tracing adds a few µs to each call.
#
# With P2=1 as benches/load's P2 at 20 streams a second: 200 streams started 20 a second, each
# on one of eight connections not in use, and each answer's first content followed by 20 more 10 ms apart,
# so that some four streams are open when one begins and the relay's code is in use.
#
#   benches/profile/legs.sh target/release/modelgate
#   FLOOR=1 benches/profile/legs.sh <load bench binary>        # the floor
#   P2=1 benches/profile/legs.sh target/release/modelgate
#
# Needs perf, and perf_event_paranoid ≤ 1 or root. Loopback only; proxy on core 0, client on 1.
set -euo pipefail
BIN=$1
if [ "${P2:-0}" = 1 ]; then
  MOCK_PAUSE=0.01 MOCK_MORE=20 streams=200 rate=20 at_once=8
else
  MOCK_PAUSE=0.05 MOCK_MORE=0 streams=150 rate=10 at_once=0
fi
source "$(dirname "$0")/proxy.sh"
start_proxy "$BIN" taskset -c 0
perf record -q -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit -p $proxy -o "$work/perf.data" 2>/dev/null &
perf=$!
sleep 1
taskset -c 1 python3 "$here/footprint.py" pace "$port" $streams $rate $at_once
kill -INT $perf
wait $perf || true
perf script -i "$work/perf.data" -F tid,time,event,trace 2>/dev/null >"$work/calls"
python3 "$here/footprint.py" legs "$work/calls"
