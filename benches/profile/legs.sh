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
MOCK_PAUSE=0.05
source "$(dirname "$0")/proxy.sh"
start_proxy "$BIN" taskset -c 0
perf record -q -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit -p $proxy -o "$work/perf.data" 2>/dev/null &
perf=$!
sleep 1
taskset -c 1 python3 "$here/footprint.py" pace "$port" 150 0.1
kill -INT $perf
wait $perf || true
perf script -i "$work/perf.data" -F tid,time,event,trace 2>/dev/null >"$work/calls"
python3 "$here/footprint.py" legs "$work/calls"
