//! The two line formats. tracing-subscriber's own formatters pass every field name through
//! ANSI styling (even with colours off) and format the clock with `write!` for each part; at
//! one line per request that was a sixth of a request's instructions. These write the same
//! text lines (and flat JSON objects) directly.
//!
//! Text: `2026-11-27T08:19:16.123456Z  INFO span{fields}: message name=value ...`, string
//! values bare when they are plain words and otherwise quoted as Rust's `Debug` does (so a value
//! cannot break a line), messages with control characters escaped. JSON:
//! `{"timestamp":..,"level":..,"message":..,"name":value,..}`.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::base::{civil as civil_date, digits};

/// The event format: text or JSON.
pub(crate) struct Lines {
    pub(crate) json: bool,
}

/// Span fields, kept (as text) for the text lines of events inside the span.
pub(crate) struct Fields;

impl<'w> FormatFields<'w> for Fields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor::new(writer);
        fields.record(&mut v);
        v.result
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.json {
            w.write_str("{\"timestamp\":\"")?;
            timestamp(&mut w)?;
            w.write_str("\",\"level\":\"")?;
            w.write_str(level_name(level).trim_start())?;
            w.write_char('"')?;
            let mut v = JsonVisitor {
                w: &mut w,
                result: Ok(()),
            };
            event.record(&mut v);
            v.result?;
            return w.write_str("}\n");
        }
        timestamp(&mut w)?;
        w.write_char(' ')?;
        w.write_str(level_name(level))?;
        w.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{{{fields}}}")?;
                }
                w.write_char(':')?;
                seen = true;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        let mut v = TextVisitor::new(w.by_ref());
        event.record(&mut v);
        v.result?;
        w.write_char('\n')
    }
}

pub(super) fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

thread_local! {
    /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds: the date and time of day are formatted once a second.
pub(super) fn timestamp(w: &mut impl Write) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = civil(secs);
        SECOND.set((secs, text));
    }
    let mut micros = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    digits(&mut micros[1..7], u64::from(now.subsec_micros()));
    w.write_str(std::str::from_utf8(&text).unwrap_or("0000-00-00T00:00:00"))?;
    w.write_str(std::str::from_utf8(&micros).unwrap_or(".000000Z"))
}

/// `YYYY-MM-DDTHH:MM:SS` of seconds since the epoch.
fn civil(secs: u64) -> [u8; 19] {
    let (year, month, day) = civil_date(secs / 86_400);
    let rem = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00";
    digits(&mut out[0..4], year.min(9999));
    digits(&mut out[5..7], month);
    digits(&mut out[8..10], day);
    digits(&mut out[11..13], rem / 3600);
    digits(&mut out[14..16], rem / 60 % 60);
    digits(&mut out[17..19], rem % 60);
    out
}

/// `name=value` pairs separated by spaces; the message bare, first.
struct TextVisitor<'w> {
    w: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl<'w> TextVisitor<'w> {
    fn new(w: Writer<'w>) -> Self {
        TextVisitor {
            w,
            first: true,
            result: Ok(()),
        }
    }

    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.w.write_char(' ')?;
        }
        let name = field.name();
        self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.w.write_char('=')
    }

    fn put(&mut self, f: impl FnOnce(&mut Self) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = f(self);
        }
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(|v| {
            if field.name() == "message" {
                if !std::mem::take(&mut v.first) {
                    v.w.write_char(' ')?;
                }
                return Sanitized(&mut v.w).write_str(value);
            }
            v.name(field)?;
            bare_or_quoted(&mut v.w, value)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(|v| {
            v.name(field)?;
            let mut buf = [0u8; 20];
            let n = decimal(&mut buf, value);
            v.w.write_str(n)
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(|v| {
            v.name(field)?;
            v.w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(|v| {
            if field.name() == "message" {
                if !std::mem::take(&mut v.first) {
                    v.w.write_char(' ')?;
                }
                return write!(Sanitized(&mut v.w), "{value:?}");
            }
            v.name(field)?;
            // `%` and `?` values (an upstream's error text, say) are quoted like strings when
            // they are more than a plain word. Not on the request line's path: its values are
            // strings and numbers.
            let text = format!("{value:?}");
            bare_or_quoted(&mut v.w, &text)
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(|v| {
            v.name(field)?;
            write!(v.w, "{value:?}")
        });
    }
}

/// `n` in decimal, in the end of `buf`.
pub(super) fn decimal(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// A value as logfmt writes it: bare when it is a plain word (letters, digits and `-_.:/@+`),
/// quoted otherwise (with Rust's escapes, `\n` and `\u{1b}`), so that a line splits on spaces
/// and `=` whatever the values hold.
pub(super) fn bare_or_quoted(w: &mut impl Write, s: &str) -> fmt::Result {
    /// The bytes a value may have and stay bare, looked up rather than searched: every field
    /// of every line passes here.
    static PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b'+');
            b += 1;
        }
        t
    };
    if !s.is_empty() && s.bytes().all(|b| PLAIN[usize::from(b)]) {
        w.write_str(s)
    } else {
        quoted(w, s)
    }
}

/// A string as `{:?}` writes it: quoted, with quotes, backslashes and control characters
/// escaped. Plain printable ASCII, the common case, is copied as it is.
fn quoted(w: &mut impl Write, s: &str) -> fmt::Result {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        write!(w, "{s:?}")
    }
}

/// Writes text with control characters escaped (all but tab: line breaks, ESC and the other C0
/// and C1 controls, DEL): a logged text can neither break its line nor drive the terminal.
pub(super) struct Sanitized<'a, W: Write>(pub(super) &'a mut W);

impl<W: Write> Write for Sanitized<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let risky = |c: char| c.is_control() && c != '\t';
        if !s.contains(risky) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if risky(c) {
                write!(self.0, "\\x{:02x}", c as u32)?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// `"name":value` pairs after the timestamp and level.
struct JsonVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonVisitor<'_, '_> {
    fn put(&mut self, field: &Field, f: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.w.write_char(',')?;
            let name = field.name();
            json_string(self.w, name.strip_prefix("r#").unwrap_or(name))?;
            self.w.write_char(':')?;
            f(self.w)
        })();
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| json_string(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| {
            let mut buf = [0u8; 20];
            w.write_str(decimal(&mut buf, value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| {
            if value.is_finite() {
                write!(w, "{value:?}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(JsonEscaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

pub(super) fn json_string(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(w).write_str(s)?;
    w.write_char('"')
}

/// The inside of a JSON string.
struct JsonEscaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let esc = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(esc)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(&civil(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&civil(1_795_737_599), b"2026-11-26T23:59:59");
        assert_eq!(&civil(4_107_542_400), b"2100-03-01T00:00:00");
    }

    #[test]
    fn strings_quote_like_debug() {
        for s in [
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "line\nbreak",
            "tab\t",
            "é",
        ] {
            let mut out = String::new();
            quoted(&mut out, s).unwrap();
            assert_eq!(out, format!("{s:?}"));
        }
    }

    #[test]
    fn json_strings_parse_back() {
        for s in ["plain", "q\"b\\", "nl\n\r\t", "ctl\u{1}\u{7f}", "ünï"] {
            let mut out = String::new();
            json_string(&mut out, s).unwrap();
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn plain_words_are_bare() {
        for (s, out) in [
            ("gpt-4o", "gpt-4o"),
            ("Apache-2.0", "Apache-2.0"),
            ("http://h:1/v1", "http://h:1/v1"),
            ("", "\"\""),
            ("two words", "\"two words\""),
            ("a=b", "\"a=b\""),
            ("q\"", "\"q\\\"\""),
        ] {
            let mut got = String::new();
            bare_or_quoted(&mut got, s).unwrap();
            assert_eq!(got, out);
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        Sanitized(&mut out)
            .write_str("a\x1b[31mb\u{9b}c\nd\re\tf")
            .unwrap();
        assert_eq!(out, "a\\x1b[31mb\\x9bc\\x0ad\\x0de\tf");
    }

    #[test]
    fn decimals() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(&mut buf, 0), "0");
        assert_eq!(decimal(&mut buf, u64::MAX), u64::MAX.to_string());
    }
}
