//! The house is meant to be one-way: each top-level module of `src/` belongs to a layer, and a
//! module imports only from its own layer or lower ones. Not all of it is yet; the imports that
//! still run upwards are listed here, and this test fails on any new one, and on a listed one
//! that is gone (so the list only shrinks, and says what is left to move).
//!
//! Read from the source: every `crate::<module>` a file names, outside its `#[cfg(test)]` part
//! (tests may reach anywhere).

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom to top: shared primitives; facts; logic on facts; runtime state; the client formats
/// and the request's flow; the server and the command line.
const LAYERS: &[&[&str]] = &[
    &["base", "hop", "exchange", "yaml"],
    &["catalog", "config"],
    &["policy", "accounting", "adapters"],
    &[
        "discovery",
        "upstream",
        "limits",
        "conversations",
        "metrics",
        "telemetry",
    ],
    &["live"],
    &["api", "auth", "stream", "pipeline", "error"],
    &["server", "cli", "fuzz"],
];

/// Imports that still run from a lower layer to a higher one (`from`, `to`).
const UPWARDS: &[(&str, &str)] = &[];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(p.clone());
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The files and folders of modules declared under `#[cfg(test)]` (`mod tests;`), whose
/// imports are the tests'.
fn test_modules(files: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(f).unwrap();
        // A module's children live beside `mod.rs`, or in the folder named after `name.rs`.
        let dir = if f.file_name().is_some_and(|n| n == "mod.rs") {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        };
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if line != "#[cfg(test)]" {
                continue;
            }
            if let Some(name) = lines
                .next()
                .and_then(|l| l.strip_prefix("mod "))
                .and_then(|l| l.strip_suffix(';'))
            {
                out.push(dir.join(format!("{name}.rs")));
                out.push(dir.join(name));
            }
        }
    }
    out
}

/// Every (module, module it names) pair of `src/`, outside tests.
fn imports(src: &Path) -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    walk(src, &mut files);
    let test_only = test_modules(&files);
    let mut pairs = BTreeSet::new();
    for f in files.iter().filter(|f| f.is_file()) {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let is_test = test_only.iter().any(|t| f.starts_with(t));
        if top == "lib" || top == "main" || is_test {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                pairs.insert((top.clone(), name));
            }
        }
    }
    pairs
}

#[test]
fn imports_run_downwards_except_the_listed_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let pairs = imports(&src);
    let mut upwards = BTreeSet::new();
    for (from, to) in &pairs {
        let (Some(a), Some(b)) = (layer(from), layer(to)) else {
            panic!("'{from}' or '{to}' is in no layer: add it to LAYERS");
        };
        if a < b {
            upwards.insert((from.as_str(), to.as_str()));
        }
    }
    let listed: BTreeSet<(&str, &str)> = UPWARDS.iter().copied().collect();
    let new: Vec<_> = upwards.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&upwards).collect();
    assert!(
        new.is_empty(),
        "imports from a lower layer to a higher one: {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these no longer run upwards: take them off UPWARDS: {gone:?}"
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line
            .trim()
            .strip_prefix("pub mod ")
            .or_else(|| line.trim().strip_prefix("mod "))
        {
            let m = m.trim_end_matches(';');
            assert!(layer(m).is_some(), "module '{m}' is in no layer");
        }
    }
}

#[test]
fn no_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let listed: BTreeSet<(&str, &str)> = UPWARDS.iter().copied().collect();
    let edges: Vec<(String, String)> = imports(&src)
        .into_iter()
        .filter(|(a, b)| !listed.contains(&(a.as_str(), b.as_str())))
        .collect();
    // Depth-first from every module: reaching the start again is a cycle.
    let mut modules: BTreeSet<&str> = BTreeSet::new();
    for (a, b) in &edges {
        modules.insert(a);
        modules.insert(b);
    }
    for start in &modules {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<&str>> = vec![vec![start]];
        while let Some(path) = stack.pop() {
            let last = path[path.len() - 1];
            for (_, b) in edges.iter().filter(|(a, _)| a == last) {
                assert!(b != start, "import cycle: {path:?} -> {b}");
                if seen.insert(b.as_str()) {
                    let mut next = path.clone();
                    next.push(b);
                    stack.push(next);
                }
            }
        }
    }
}
