#!/bin/bash
# What a stream touches on its way to its first token: the distinct 64-byte lines of code and
# of data a proxy reads or writes from when a streamed request is sent to when the client has
# read the first content (valgrind's lackey traces every access). At a low rate each stream
# finds the caches cold, and these lines are what it waits for: the time to first token that
# benches/load's P2 measures at 20 streams a second follows them, not the instruction count.
#
#   benches/profile/footprint.sh target/release/modelgate               # the gateway
#   FLOOR=1 benches/profile/footprint.sh <load bench binary>            # the floor
#   TOP=30 benches/profile/footprint.sh …                               # and its code by function,
#                                                                       # its data by mapping
#   KEEP=DIR benches/profile/footprint.sh …                             # and keep the trace
#   CUT=1 benches/profile/footprint.sh …                                # each window only up to
#                                                                       # the first write to the client
#
# Loopback only: P1's configuration on the Python mock, which sends the first content at once
# and the rest half a second later; 12 streams one after another on one connection (the first
# is not counted), each window from the request sent to the first content read. About two
# minutes (lackey runs the proxy some hundred times slower).
set -euo pipefail
BIN=$1
N=${N:-12}
MOCK_PAUSE=0.5
source "$(dirname "$0")/proxy.sh"
trace="$work/trace"
start_proxy "$BIN" valgrind --tool=lackey --trace-mem=yes ${CUT:+--trace-syscalls=yes} --log-file="$trace"
# Where the binary was loaded, to name the code's functions.
cat /proc/$proxy/maps >"$work/maps"
python3 "$here/footprint.py" drive "$port" "$N" "$trace"
cat /proc/$proxy/maps >"$work/maps.end"
python3 "$here/footprint.py" count "$trace" "$BIN" "$work/maps" "${TOP:-0}" "${CUT:-0}"
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$trace" "$trace.windows" "$work"/maps* "$KEEP/"; fi
