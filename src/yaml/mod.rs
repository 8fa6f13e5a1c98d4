//! Every YAML call of the gateway, so the parser can be swapped in one place. serde-saphyr:
//! pure Rust, budgets against alias bombs and deep nesting, duplicate keys refused.

pub(crate) mod problem;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Options};

use problem::Problems;

fn options() -> Options {
    let mut o = Options::default();
    // YAML 1.2 booleans only: `no` is the string "no", as a country code should be.
    o.strict_booleans = true;
    o.with_snippet = false;
    o
}

/// Parses `text` (from `file`) into `T`. On failure records one problem, with the line and the
/// field path where parsing stopped, and returns `None`.
pub(crate) fn parse<T: DeserializeOwned>(
    file: &Arc<str>,
    text: &str,
    problems: &mut Problems,
) -> Option<T> {
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            // `Spanned` fields deserialize through a `value` key the user never wrote.
            path = e.path().to_string().replace(".value", "");
            e.into_inner()
        })
    });
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let loc = e.location().unwrap_or(Location::UNKNOWN);
            let path = if path == "." { String::new() } else { path };
            problems.at(file, loc, path, message(&e));
            None
        }
    }
}

/// The error's message without the location the problem line already carries.
fn message(e: &serde_saphyr::Error) -> String {
    let s = e.without_snippet().to_string();
    let first = s.lines().next().unwrap_or("").trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}
