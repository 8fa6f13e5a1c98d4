#!/bin/bash
# Allocations (dhat) and instructions (callgrind) per request of a gateway binary, by
# difference: the same process serves FEW then MANY requests in two runs, and
# (total(MANY) - total(FEW)) / (MANY - FEW) is what one request costs once warm (start-up and
# loading the configuration cancel out). Loopback only; the upstream is a small Python mock.
#
#   benches/profile/run.sh target/release/modelgate dhat        # allocations per request
#
# dhat sees allocations through malloc only: the gateway's own allocator (mimalloc, the default
# feature) is invisible to it, so count allocations on a build without it:
#   cargo build --release --no-default-features && benches/profile/run.sh target/release/modelgate dhat
#   benches/profile/run.sh target/release/modelgate callgrind   # instructions per request
#   MODEL=auto DEPLOYMENTS=1000 benches/profile/run.sh BIN callgrind
#   APART=1 MODEL=auto DEPLOYMENTS=1000 ...      # priced as benches/load's P3 prices them apart
#   OTLP=1 benches/profile/run.sh BIN callgrind    # with every request traced (the mock takes the exports)
#   MIX=1 benches/profile/run.sh BIN callgrind     # every front end in turn, whole and streamed
#   STREAM=1 benches/profile/run.sh BIN callgrind  # streamed chat requests only (9 events each)
#   FLOOR=1 benches/profile/run.sh LOAD_BENCH_BIN callgrind   # the floor (benches/load started
#                                                  # with --floor), to compare with
set -euo pipefail
BIN=$1 TOOL=$2
FEW=${FEW:-200} MANY=${MANY:-1200} MODEL=${MODEL:-llama-3.1-8b-instruct}
DEPLOYMENTS=${DEPLOYMENTS:-24}
here=$(cd "$(dirname "$0")" && pwd)
# KEEP=DIR keeps the profiles there (link-order.sh reads them); CGEXTRA adds callgrind options.
work=${KEEP:-$(mktemp -d)}; mkdir -p "$work"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
up=18081 api=18080 admin=18090
python3 "$here/config.py" "$work/modelgate.yaml" "$DEPLOYMENTS" "$up" "${APART:-0}"
if [ "${OTLP:-0}" = 1 ]; then
  printf "telemetry: {otlp: {endpoint: 'http://127.0.0.1:%s/v1/traces', sample_ratio: 1}}\n" $up >> "$work/modelgate.yaml"
fi
total() {
  local n=$1 out="$work/$TOOL.$1"
  python3 "$here/mock.py" $up & local mock=$!
  local wrap
  if [ "$TOOL" = dhat ]; then wrap="valgrind --tool=dhat --dhat-out-file=$out.x"
  else wrap="valgrind --tool=callgrind ${CGEXTRA:-} --callgrind-out-file=$out.x"; fi
  local port=$api
  if [ "${FLOOR:-0}" = 1 ]; then
    $wrap "$BIN" --floor 127.0.0.1:$up >"$out.out" 2>"$out.err" & local gw=$!
    for _ in $(seq 1 300); do grep -q "floor listening" "$out.out" 2>/dev/null && break; sleep 0.2; done
    port=$(sed -n 's/.*listening .*:\([0-9]*\)$/\1/p' "$out.out")
  else
    # One runtime thread, as on the one core benches/load pins it to (the floor has one worker).
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn,modelgate=info $wrap "$BIN" serve --config "$work/modelgate.yaml" \
      --listen 127.0.0.1:$api --admin-listen 127.0.0.1:$admin >/dev/null 2>"$out.err" & local gw=$!
    for _ in $(seq 1 300); do grep -q "modelgate is serving" "$out.err" 2>/dev/null && break; sleep 0.2; done
  fi
  python3 "$here/drive.py" $port "$n" "$MODEL" >&2
  kill -TERM $gw; wait $gw || true
  kill $mock; wait $mock 2>/dev/null || true
  if [ "$TOOL" = dhat ]; then
    grep "Total:" "$out.err" | head -1 | sed 's/.* in \([0-9,]*\) blocks.*/\1/; s/,//g'
  else
    grep "Collected" "$out.err" | sed 's/.*: *//'
  fi
}
a=$(total "$FEW"); b=$(total "$MANY")
per=$(( (b - a) / (MANY - FEW) ))
echo "$TOOL: $per per request ($a at $FEW requests, $b at $MANY)"
if [ "$TOOL" = dhat ] && [ "$per" -lt 5 ]; then
  echo "(too few to be true: this binary allocates through mimalloc; build it with --no-default-features)" >&2
fi
