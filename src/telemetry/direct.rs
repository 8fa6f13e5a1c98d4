//! The request lines (one per request: served, failed, answered), written straight into the
//! pending lines in the installed format. Through `tracing::info!` a line with twenty fields
//! cost ~10,000 instructions, 8% of a proxied request: a value set built and visited field by
//! field through the dispatcher. Written here it is the same text for a fraction of that.
//!
//! The caller checks `tracing::enabled!(Level::INFO)` at its own callsite first, so
//! `RUST_LOG`'s filters by level and module decide as for any other line. The line carries no
//! span prefix: the only span is the request's, at debug level, and the line names its
//! request id anyway.

use std::fmt::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::Level;

use super::line::{Sanitized, bare_or_quoted, decimal, json_string, level_name, timestamp};

/// The installed format: `NONE` until [`super::init`] installs ours. Without it (the library
/// in tests, another subscriber installed first) the request lines are not written.
static FORMAT: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = 0;
const TEXT: u8 = 1;
const JSON: u8 = 2;

pub(super) fn install(json: bool) {
    FORMAT.store(if json { JSON } else { TEXT }, Ordering::Relaxed);
}

/// One line being written; it is queued when dropped.
pub(crate) struct Fields {
    text: String,
    json: bool,
}

/// A line at info level with `message`, when our subscriber is the one installed.
pub(crate) fn info(message: &str) -> Option<Fields> {
    let json = match FORMAT.load(Ordering::Relaxed) {
        TEXT => false,
        JSON => true,
        _ => return None,
    };
    let mut f = Fields {
        text: String::with_capacity(512),
        json,
    };
    // Writing to a `String` cannot fail.
    let w = &mut f.text;
    let level = level_name(Level::INFO);
    if json {
        w.push_str("{\"timestamp\":\"");
        let _ = timestamp(w);
        w.push_str("\",\"level\":\"");
        w.push_str(level.trim_start());
        w.push_str("\",\"message\":");
        let _ = json_string(w, message);
    } else {
        let _ = timestamp(w);
        w.push(' ');
        w.push_str(level);
        w.push(' ');
        let _ = Sanitized(w).write_str(message);
    }
    Some(f)
}

impl Fields {
    fn name(&mut self, name: &str) {
        if self.json {
            self.text.push(',');
            let _ = json_string(&mut self.text, name);
            self.text.push(':');
        } else {
            self.text.push(' ');
            self.text.push_str(name);
            self.text.push('=');
        }
    }

    pub(crate) fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        let _ = if self.json {
            json_string(&mut self.text, value)
        } else {
            bare_or_quoted(&mut self.text, value)
        };
        self
    }

    pub(crate) fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.name(name);
        let mut buf = [0u8; 20];
        self.text.push_str(decimal(&mut buf, value));
        self
    }

    pub(crate) fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.name(name);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// Fields that read the same on every line they are on (a deployment's), written by `write`
    /// into `slot` the first time and copied from there after. The format cannot change under
    /// the slot: it is installed once, before the first line.
    pub(crate) fn fixed(
        &mut self,
        slot: &OnceLock<Box<str>>,
        write: impl FnOnce(&mut Fields),
    ) -> &mut Self {
        let text = slot.get_or_init(|| {
            let mut fields = Fields {
                text: String::with_capacity(128),
                json: self.json,
            };
            write(&mut fields);
            let text = std::mem::take(&mut fields.text).into_boxed_str();
            // Not a line of its own: nothing to queue.
            std::mem::forget(fields);
            text
        });
        self.text.push_str(text);
        self
    }

    /// Dollars as the answer's cost header writes them (8 decimals, no exponent), so the line
    /// and the header agree to the digit; a JSON number either way.
    pub(crate) fn usd(&mut self, name: &str, value: f64) -> &mut Self {
        self.name(name);
        let mut buf = [0; crate::accounting::cost::FIXED8];
        let _ = match crate::accounting::cost::fixed8(value, &mut buf) {
            Some(text) => self.text.write_str(text),
            None if self.json && !value.is_finite() => self.text.write_str("null"),
            None => write!(self.text, "{value:.8}"),
        };
        self
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        self.text.push_str(if self.json { "}\n" } else { "\n" });
        drop(super::Line(std::mem::take(&mut self.text).into_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as tracing and our formatter write it, for comparison.
    fn through_tracing(json: bool) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .fmt_fields(super::super::line::Fields)
            .event_format(super::super::line::Lines { json })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                endpoint = "chat",
                status = 200,
                tenant = "two words",
                refused = 3,
                stream = false,
                odd = "q\"\n\u{1b}",
                "request served"
            );
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    fn direct(json: bool) -> String {
        let mut f = Fields {
            text: String::new(),
            json,
        };
        // The same opening as `info`, without touching the queue.
        let _ = timestamp(&mut f.text);
        if json {
            f.text = format!(
                "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"request served\"",
                f.text
            );
        } else {
            f.text.push_str("  INFO request served");
        }
        f.str("endpoint", "chat")
            .u64("status", 200)
            .str("tenant", "two words")
            .u64("refused", 3)
            .bool("stream", false)
            .str("odd", "q\"\n\u{1b}");
        f.text.push_str(if json { "}\n" } else { "\n" });
        let text = std::mem::take(&mut f.text);
        // Not queued: the line is compared, not written.
        std::mem::forget(f);
        text
    }

    /// The timestamp (its first 27 characters, or the JSON's) differs between the two.
    fn without_time(line: &str, json: bool) -> String {
        if json {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["timestamp"] = serde_json::Value::Null;
            v.to_string()
        } else {
            line[27..].to_owned()
        }
    }

    #[test]
    fn fixed_fields_are_written_once_and_read_the_same() {
        for json in [false, true] {
            let slot = OnceLock::new();
            let fresh = || Fields {
                text: String::new(),
                json,
            };
            let (mut a, mut b, mut c) = (fresh(), fresh(), fresh());
            a.str("deployment", "two words").str("model", "m\"1");
            b.fixed(&slot, |f| {
                f.str("deployment", "two words").str("model", "m\"1");
            });
            // The slot is filled: what the second writer would write is not asked for.
            c.fixed(&slot, |_| unreachable!());
            assert_eq!(a.text, b.text, "json: {json}");
            assert_eq!(b.text, c.text, "json: {json}");
            for f in [a, b, c] {
                std::mem::forget(f);
            }
        }
    }

    #[test]
    fn same_lines_as_through_tracing() {
        for json in [false, true] {
            let a = through_tracing(json);
            let b = direct(json);
            assert_eq!(
                without_time(&a, json),
                without_time(&b, json),
                "json: {json}"
            );
        }
    }

    #[test]
    fn dollars_read_as_the_cost_header_does_and_stay_json_numbers() {
        for (usd, text) in [
            (0.0125, "0.01250000"),
            (0.0, "0.00000000"),
            (1.5e-5, "0.00001500"),
            (12_345.678_9, "12345.67890000"),
            (-0.5, "-0.50000000"),
        ] {
            assert_eq!(crate::accounting::cost::header(usd).to_str().unwrap(), text);
            for json in [false, true] {
                let mut f = Fields {
                    text: String::new(),
                    json,
                };
                f.usd("cost_usd", usd);
                let want = if json {
                    format!(",\"cost_usd\":{text}")
                } else {
                    format!(" cost_usd={text}")
                };
                assert_eq!(f.text, want);
                if json {
                    let v: serde_json::Value =
                        serde_json::from_str(&format!("{{{}}}", &f.text[1..])).unwrap();
                    assert_eq!(v["cost_usd"].as_f64(), Some(text.parse().unwrap()));
                }
                std::mem::forget(f);
            }
        }
        let mut f = Fields {
            text: String::new(),
            json: true,
        };
        f.usd("cost_usd", f64::NAN);
        assert_eq!(f.text, ",\"cost_usd\":null");
        std::mem::forget(f);
    }
}
