#!/usr/bin/env bash
# Makes deploy/link-order.txt anew, the list build.rs has the linker lay out first and together:
# the functions a request runs, whatever its front end, whole or streamed, as callgrind sees
# them in two builds of the gateway. One is `cargo build --release`, what users build. The
# other is the one `cargo bench` makes, whose functions have other names: dev-dependencies add
# features to tokio, and a symbol's name hashes the features of every crate below it.
#
#   benches/profile/link-order.sh          # about 15 minutes on 2 cores; valgrind, nm, python3
#
# Run it on an idle machine: a profile's first run must not end before the gateway's start-up
# work does, or that work counts as the requests'. Then check the footprint it prints (the
# second run of this script, on the new list, shows the pages a request runs shrink).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --locked --bin modelgate
cp target/release/modelgate "$work/release"
cargo bench --locked --bench load --no-run
cp target/release/modelgate "$work/bench"
for build in release bench; do
  KEEP="$work/$build.cg" CGEXTRA=--dump-instr=yes MIX=1 \
    benches/profile/run.sh "$work/$build" callgrind
done
python3 benches/profile/link_order.py "$work" release bench >"$work/list"
mv "$work/list" deploy/link-order.txt
echo "deploy/link-order.txt: $(wc -l <deploy/link-order.txt) functions" >&2
