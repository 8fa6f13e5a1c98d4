//! Release builds link the functions a request runs next to each other, in the order
//! `deploy/link-order.txt` lists them (lld's `--symbol-ordering-file`). Where the compiler puts
//! them, the ~590 functions that requests of every front end run, whole and streamed, lie
//! across 440 pages of the 11 MB of code; in this order, across 234, and a whole chat
//! request's across 149, as few as the bare forwarder's. A request that finds its caches cold
//! (the norm at a few hundred requests a second) then misses the TLB and the L2 less.
//! Names the list has and the binary does not (code changed since the list was made) are
//! skipped, not errors; `benches/profile/link-order.sh` makes the list anew.

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=deploy/build.rs");
    println!("cargo::rerun-if-changed=deploy/link-order.txt");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if lld_links_release() {
        let source = std::path::Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join("deploy/link-order.txt");
        // The linker reads a copy in OUT_DIR, not the checkout's file: a target directory
        // shared by several checkouts (CI's cache, worktrees) keeps this script's output while
        // the checkout it ran in may be gone, and cargo sees no reason to run it again.
        let list =
            std::path::Path::new(&env::var("OUT_DIR").unwrap_or_default()).join("link-order.txt");
        if std::fs::copy(&source, &list).is_err() {
            return;
        }
        println!(
            "cargo::rustc-link-arg-bin=modelgate=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo::rustc-link-arg-bin=modelgate=-Wl,--no-warn-symbol-ordering");
    }
}

/// A release build for x86-64 Linux, which rustc links with its own lld from 1.90 on unless told
/// otherwise (GNU ld knows no symbol ordering file, and debug builds gain nothing from one).
fn lld_links_release() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let other_linker = flags.split('\x1f').any(|f| {
        f.contains("linker-features=-lld")
            || f.contains("link-self-contained=-linker")
            || (f.contains("-fuse-ld=")
                && !f.contains("-fuse-ld=lld")
                && !f.contains("-fuse-ld=mold"))
    });
    var("PROFILE") == "release"
        && var("TARGET") == "x86_64-unknown-linux-gnu"
        && !other_linker
        && rustc_minor().is_some_and(|m| m >= 90)
}

/// The minor version of the rustc building this (`rustc 1.95.0 (…)` → 95).
fn rustc_minor() -> Option<u32> {
    let out = std::process::Command::new(env::var("RUSTC").ok()?)
        .arg("-V")
        .output()
        .ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}
