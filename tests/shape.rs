//! Small pieces: no source file of `src/` over 600 lines and no function over 120, tests
//! excepted (a file's `#[cfg(test)] mod tests` part, `tests.rs` files, and test-only
//! modules). Those still over are listed, and this test fails on a new one and on a listed one
//! that is no longer over (so the lists only shrink).
//!
//! Functions are found as rustfmt writes them: a line that declares `fn`, up to the `}` at the
//! same indentation.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_FILE: usize = 600;
const MAX_FN: usize = 120;

/// Files still over `MAX_FILE` lines.
const LONG_FILES: &[&str] = &[];

/// Functions still over `MAX_FN` lines (file, function).
const LONG_FNS: &[(&str, &str)] = &[];

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source files of `src/` that are not tests, each with its lines up to its test module.
fn sources() -> Vec<(String, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut test_only: Vec<PathBuf> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let dir = if f.file_name().is_some_and(|n| n == "mod.rs") {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for w in lines.windows(2) {
            if let ("#[cfg(test)]", Some(name)) = (
                w[0],
                w[1].strip_prefix("mod ").and_then(|l| l.strip_suffix(';')),
            ) {
                test_only.push(dir.join(format!("{name}.rs")));
                test_only.push(dir.join(name));
            }
        }
    }
    let mut out = Vec::new();
    for f in files {
        if test_only.iter().any(|t| f.starts_with(t)) {
            continue;
        }
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        let all: Vec<&str> = text.lines().collect();
        // The file's own part: up to its inline test module.
        let end = all
            .windows(2)
            .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].starts_with("mod tests {"))
            .unwrap_or(all.len());
        let lines: Vec<String> = all[..end].iter().map(|l| (*l).to_owned()).collect();
        out.push((rel, lines));
    }
    out
}

/// The functions of a file and their lengths in lines.
fn functions(lines: &[String]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let rest = line.trim_start();
        let rest = rest
            .strip_prefix("pub(crate) ")
            .or_else(|| rest.strip_prefix("pub(super) "))
            .or_else(|| rest.strip_prefix("pub "))
            .unwrap_or(rest);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let rest = rest.strip_prefix("const ").unwrap_or(rest);
        let Some(name) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // Where the signature ends: a body opens, or (in a trait) there is none.
        let Some(open) = lines[i..]
            .iter()
            .position(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'))
        else {
            continue;
        };
        if lines[i + open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let Some(len) = lines[i..].iter().position(|l| *l == close) else {
            continue;
        };
        out.push((name, len + 1));
    }
    out
}

#[test]
fn files_and_functions_stay_small() {
    let mut long_files = BTreeSet::new();
    let mut long_fns = BTreeSet::new();
    for (rel, lines) in sources() {
        if lines.len() > MAX_FILE {
            long_files.insert(rel.clone());
        }
        for (name, len) in functions(&lines) {
            if len > MAX_FN {
                long_fns.insert((rel.clone(), name));
            }
        }
    }
    let listed_files: BTreeSet<String> = LONG_FILES.iter().map(|s| (*s).to_owned()).collect();
    let listed_fns: BTreeSet<(String, String)> = LONG_FNS
        .iter()
        .map(|(f, n)| ((*f).to_owned(), (*n).to_owned()))
        .collect();
    let new_files: Vec<_> = long_files.difference(&listed_files).collect();
    let gone_files: Vec<_> = listed_files.difference(&long_files).collect();
    let new_fns: Vec<_> = long_fns.difference(&listed_fns).collect();
    let gone_fns: Vec<_> = listed_fns.difference(&long_fns).collect();
    assert!(
        new_files.is_empty(),
        "files over {MAX_FILE} lines: {new_files:?}"
    );
    assert!(
        new_fns.is_empty(),
        "functions over {MAX_FN} lines: {new_fns:?}"
    );
    assert!(
        gone_files.is_empty() && gone_fns.is_empty(),
        "no longer over: take them off the lists: {gone_files:?} {gone_fns:?}"
    );
}
