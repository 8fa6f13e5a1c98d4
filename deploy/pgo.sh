#!/usr/bin/env bash
# A profile-guided (PGO) release build of the gateway, into target/pgo/modelgate.
#
# Three steps: a build that counts what runs; a training run of that build under the load
# benchmark (`benches/load -- p1 p2 t1 --quick`, about a minute and a half, loopback only: chat
# whole and streamed at P1's and P2's rates, then every front end and common errors); then the
# release build again with those counts, so that the compiler lays out and inlines for the
# paths requests take. Against a release build without counts it cut a warm request's
# instructions by a quarter and its instruction-cache misses by a third (benches/README.md).
#
# Needs llvm-profdata of the LLVM rustc is built on (`rustc -vV`); on Debian,
# `apt-get install llvm-22` for Rust 1.95. Paths the training does not take (the closed APIs'
# adapters, faults) are built as rarely run code: correct, and no faster than without PGO.
# `RUSTFLAGS` set by the caller are kept. These builds name their own counts, and the kept
# profile below is not read by them. On a one-core builder the training runs unpinned.
#
# `deploy/pgo.sh --save` also keeps the counts in the checkout, as deploy/pgo/llvm-<major>.profdata
# (functions that ran only, `--sparse`), where every optimized build of the checkout reads them
# (deploy/pgo/rustc-wrapper), and writes their checksum into .cargo/config.toml. Run it after
# changes to the request path, and commit both: `.ci/run` fails when too little of a fresh
# training run's work falls in functions the kept profile still matches. Run it too after a
# change to the gateway's own dependencies (Cargo.toml's list, or a version in Cargo.lock): the
# crate's hash, part of every function's name the profile is matched by, changes with them, and
# the whole crate is then built as if there were no profile (at b92efdb, 62,415 → 73,142
# instructions a request until it was made again).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${PGO_DIR:-target/pgo}"
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=$(command -v "llvm-profdata-$major" || command -v llvm-profdata || true)
if [ -z "$profdata" ] || ! "$profdata" --version | grep -q "LLVM version $major\."; then
  echo "pgo: llvm-profdata for LLVM $major is missing (Debian: apt-get install llvm-$major)" >&2
  exit 1
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
raw="$out/raw"

echo "pgo: 1/3 the counting build" >&2
rm -rf "$raw"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" CARGO_TARGET_DIR="$out/counting" \
  cargo build --release --locked --bin modelgate
# Build scripts ran counted too: only the gateway's own counts are kept.
rm -rf "$raw"

echo "pgo: 2/3 training" >&2
# The counting build is slower: a pass criterion it misses does not matter here, its counts do.
MODELGATE_BENCH_BIN="$out/counting/release/modelgate" \
  cargo bench --locked --bench load -- p1 p2 t1 --quick >"$out/training.log" 2>&1 || true
if ! ls "$raw"/*.profraw >/dev/null 2>&1; then
  echo "pgo: the training left no counts (see $out/training.log)" >&2
  exit 1
fi
"$profdata" merge -o "$out/modelgate.profdata" "$raw"
if [ "${1:-}" = --save ]; then
  kept="deploy/pgo/llvm-$major.profdata"
  "$profdata" merge --sparse -o "$kept" "$out/modelgate.profdata"
  sum=$(sha256sum "$kept" | cut -c1-16)
  sed -i 's/\(modelgate_pgo_profile=\\"\)[0-9a-f]*/\1'"$sum"'/' .cargo/config.toml
  echo "pgo: kept $kept ($sum in .cargo/config.toml)" >&2
fi

echo "pgo: 3/3 the release build with the counts" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$out/modelgate.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
  CARGO_TARGET_DIR="$out/build" cargo build --release --locked --bin modelgate
cp "$out/build/release/modelgate" "$out/modelgate"
echo "pgo: $out/modelgate" >&2
