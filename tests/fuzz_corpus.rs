//! The fuzz corpora (`fuzz/corpus/<target>`, seeded from the test fixtures and grown by fuzzing
//! runs) and any inputs that once crashed a target (`fuzz/regressions/<target>`), replayed
//! through the same entry points the fuzz targets call.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{target}: {} panicked", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn request_corpus() {
    replay("request", modelgate::fuzz::request);
}

#[test]
fn sse_corpus() {
    replay("sse", modelgate::fuzz::sse);
}

#[test]
fn response_corpus() {
    replay("response", modelgate::fuzz::response);
}

#[test]
fn config_corpus() {
    replay("config", modelgate::fuzz::config);
}

#[test]
fn policy_corpus() {
    replay("policy", modelgate::fuzz::policy);
}

#[test]
fn upstream_text_corpus() {
    replay("upstream_text", modelgate::fuzz::upstream_text);
}
