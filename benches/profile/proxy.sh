# Sourced by footprint.sh and legs.sh: a work directory (removed on exit), P1's configuration,
# the Python mock on it (the first content at once, then MOCK_MORE more content events and the
# rest, MOCK_PAUSE seconds apart), and `start_proxy BIN [WRAPPER…]`: the floor (FLOOR=1; BIN is
# the load bench binary) or the gateway, run under WRAPPER, waited for, with $proxy its pid and
# $port where it listens.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
up=18081 api=18080 admin=18090
python3 "$here/config.py" "$work/modelgate.yaml" 24 "$up" 0
python3 "$here/mock.py" $up "$MOCK_PAUSE" "${MOCK_MORE:-0}" &

start_proxy() {
  local bin=$1
  shift
  if [ "${FLOOR:-0}" = 1 ]; then
    "$@" "$bin" --floor 127.0.0.1:$up >"$work/out" 2>"$work/err" &
    proxy=$!
    for _ in $(seq 1 600); do grep -q "floor listening" "$work/out" 2>/dev/null && break; sleep 0.2; done
    port=$(sed -n 's/.*listening .*:\([0-9]*\)$/\1/p' "$work/out")
  else
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn,modelgate=info "$@" "$bin" serve --config "$work/modelgate.yaml" \
      --listen 127.0.0.1:$api --admin-listen 127.0.0.1:$admin >/dev/null 2>"$work/err" &
    proxy=$!
    for _ in $(seq 1 600); do grep -q "modelgate is serving" "$work/err" 2>/dev/null && break; sleep 0.2; done
    port=$api
  fi
}
