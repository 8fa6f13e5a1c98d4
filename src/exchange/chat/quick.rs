//! The common chat request read by `scan`'s pass rather than serde's: a model, messages of a
//! role and a string (or `null`) content, and any of `stream`, `max_tokens`,
//! `max_completion_tokens`, `n`, `temperature` and `top_p` as plain literals. What SDKs and
//! agents send most, and what every stream's first token waits for: serde_json's reader and
//! the request's visitor touched 167 lines of code on the way to the first write, this reading
//! and what is left of the parse around it 140, and fewer instructions (`benches/README.md`).
//! Its scanner is inlined into it, not shared with the stream chunks' copy: sharing it cost
//! each chunk more than it saved (3463310, reverted).
//!
//! Anything else (another field, a name or a role with escapes, a number in another form, a
//! field named twice, content parts, a missing field) is `None`, and serde's reading decides,
//! with its errors. What this reads, it reads as serde's would: the property test below and
//! the fuzz entry point hold the two to the same request, field by field.

use std::ops::Range;

use super::{ChatRequest, Content, Extra, Message, Role};
use crate::exchange::scan::{self, Scanner};

/// The request in `text` and where its model's string lies (with its quotes), when it has
/// the shape read here.
pub(super) fn read(text: &str) -> Option<(ChatRequest, Option<Range<usize>>)> {
    let mut model = None;
    let mut messages = None;
    let mut stream = None;
    let mut max_tokens = None;
    let mut max_completion_tokens = None;
    let mut n = None;
    let mut temperature = None;
    let mut top_p = None;
    scan::whole(text, |s| {
        s.members(|s, key| match key {
            b"messages" => {
                let mut list = Vec::new();
                s.items(|s| {
                    list.push(message(s, text)?);
                    Some(())
                })?;
                once(&mut messages, list)
            }
            b"model" => {
                let span = s.span()?;
                let raw = text.get(span.clone())?;
                once(&mut model, (plain_string(raw)?, span))
            }
            _ => {
                let raw = text.get(s.span()?)?;
                match key {
                    b"stream" => once(&mut stream, boolean(raw)?),
                    b"max_tokens" => once(&mut max_tokens, count(raw)?),
                    b"max_completion_tokens" => once(&mut max_completion_tokens, count(raw)?),
                    b"n" => once(&mut n, count(raw)?),
                    b"temperature" => once(&mut temperature, decimal(raw)?),
                    b"top_p" => once(&mut top_p, decimal(raw)?),
                    _ => None,
                }
            }
        })
    })?;
    let (model, span) = model?;
    let req = ChatRequest {
        model: model.to_owned(),
        messages: messages?,
        stream: stream.unwrap_or(false),
        stream_options: None,
        max_tokens,
        max_completion_tokens,
        cap_output: false,
        n,
        temperature,
        top_p,
        stop: None,
        tools: None,
        tool_choice: None,
        response_format: None,
        metadata: None,
        extra: Extra::new(),
        native: None,
        hosted_tool: None,
        wire: None,
    };
    // Nothing sent as `null` but content, and every message with its content: the body is
    // what writing the request back would give (see `splice`).
    Some((req, Some(span)))
}

/// Whether this reading of `body`, where it reads one, is serde's (the request, and where
/// its model lies): what the fuzzer holds it to.
pub(crate) fn alike(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return true;
    };
    let Some((quick, span)) = read(text) else {
        return true;
    };
    let failed = std::cell::Cell::new(None);
    match super::read_request(&mut serde_json::Deserializer::from_str(text), &failed, body) {
        Ok((serde, at)) => at == span && format!("{quick:?}") == format!("{serde:?}"),
        Err(_) => false,
    }
}

/// A field's value, unless the field came before (serde refuses it).
fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

/// One message: a role and its content, nothing else.
fn message(s: &mut Scanner<'_>, text: &str) -> Option<Message> {
    let mut role = None;
    let mut content = None;
    s.members(|s, key| {
        let raw = text.get(s.span()?)?;
        match key {
            b"role" => once(&mut role, role_of(raw)?),
            b"content" => once(&mut content, content_of(raw)?),
            _ => None,
        }
    })?;
    Some(Message {
        role: role?,
        content: content?,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Extra::new(),
        reshaped: false,
    })
}

fn role_of(raw: &str) -> Option<Role> {
    Some(match plain_string(raw)? {
        "system" => Role::System,
        "developer" => Role::Developer,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        "function" => Role::Function,
        _ => return None,
    })
}

/// A string's text or `null`; escapes are read as serde reads them.
fn content_of(raw: &str) -> Option<Option<Content>> {
    if raw == "null" {
        return Some(None);
    }
    let text = match plain_string(raw) {
        Some(t) => t.to_owned(),
        None if raw.starts_with('"') => serde_json::from_str(raw).ok()?,
        None => return None,
    };
    Some(Some(Content::Text(text)))
}

/// The text of a string without escapes (the scanner checked it).
fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

fn boolean(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A non-negative integer that fits, written with digits only.
fn count(raw: &str) -> Option<u32> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// A non-negative decimal of at most 15 digits, without an exponent: serde_json makes it one
/// exact division of exact numbers (its significand below 2^53, a power of ten below 10^23),
/// which rounds as the standard library's parse does. Others are left to serde.
fn decimal(raw: &str) -> Option<f64> {
    let digits = raw.bytes().filter(u8::is_ascii_digit).count();
    let dots = raw.bytes().filter(|&b| b == b'.').count();
    if !raw.starts_with(|c: char| c.is_ascii_digit()) || digits + dots != raw.len() || dots > 1 {
        return None;
    }
    if digits > 15 {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::chat::wire::read_request;
    use proptest::prelude::*;

    /// serde's reading of `text`, as the parse does it when this one says `None`.
    fn by_serde(text: &str) -> Option<(ChatRequest, Option<Range<usize>>)> {
        let failed = std::cell::Cell::new(None);
        read_request(
            &mut serde_json::Deserializer::from_str(text),
            &failed,
            text.as_bytes(),
        )
        .ok()
    }

    #[test]
    fn what_clients_send_most_is_read_here() {
        for text in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model": "llama-3.1-8b-instruct", "stream": true, "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say \"hello\".\n"}], "max_tokens": 64}"#,
            r#" { "messages" : [ { "content" : null , "role" : "assistant" } ] , "model" : "m" , "temperature" : 0.7 , "top_p" : 1 , "n" : 2 , "max_completion_tokens" : 0 , "stream" : false } "#,
        ] {
            let (quick, span) = read(text).unwrap();
            let (serde, serde_span) = by_serde(text).unwrap();
            assert_eq!(format!("{quick:?}"), format!("{serde:?}"));
            assert_eq!(span, serde_span);
            assert_eq!(&text[span.unwrap()][1..2], &quick.model[..1]);
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for text in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"u"}"#,
            r#"{"model":"m","model":"n","messages":[]}"#,
            r#"{"model":"\u006d","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"\u0075ser","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"a","name":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#,
            r#"{"model":"m","messages":[],"temperature":-0}"#,
            r#"{"model":"m","messages":[],"temperature":1e0}"#,
            r#"{"model":"m","messages":[],"temperature":0.0000000000000000000001}"#,
            r#"{"model":"m","messages":[],"max_tokens":4294967296}"#,
            r#"{"model":"m","messages":[],"max_tokens":1.0}"#,
            r#"{"model":"m","messages":[],"stream":null}"#,
            r#"{"messages":[]}"#,
            r#"{"model":"m","messages":[]} x"#,
            r#"[]"#,
        ] {
            assert!(read(text).is_none(), "{text}");
        }
    }

    fn literal() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0.7"),
            Just("1"),
            Just("0"),
            Just("64"),
            Just("4294967295"),
            Just("4294967296"),
            Just("1.0e0"),
            Just("-0"),
            Just("-1"),
            Just("1.5"),
            Just("123456789012345"),
            Just("1234567890.12345"),
            Just("0.1234567890123456"),
            Just("null"),
            Just("true"),
            Just("false"),
            Just("\"x\""),
            Just("[]"),
            Just("{}"),
        ]
        .prop_map(str::to_owned)
    }

    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z ]{0,8}".prop_map(|s| format!("\"{s}\"")),
            1 => Just(r#""line\nbreak \"q\" \u00e9 \ud83d\ude00""#.to_owned()),
            1 => Just(r#""\ud800""#.to_owned()),
            1 => Just("\"é 😀\"".to_owned()),
        ]
    }

    fn message() -> impl Strategy<Value = String> {
        let role = prop_oneof![
            4 => Just("\"user\""),
            2 => Just("\"system\""),
            2 => Just("\"assistant\""),
            1 => Just("\"tool\""),
            1 => Just("\"function\""),
            1 => Just("\"developer\""),
            1 => Just("\"\\u0075ser\""),
            1 => Just("\"robot\""),
            1 => Just("1"),
        ];
        let content = prop_oneof![
            12 => string(),
            1 => Just("null".to_owned()),
            1 => Just("[{\"type\":\"text\",\"text\":\"hi\"}]".to_owned()),
            1 => literal(),
        ];
        let extra = prop_oneof![
            30 => Just(None),
            1 => Just(Some("\"name\": \"n\"".to_owned())),
            1 => Just(Some("\"role\": \"user\"".to_owned())),
            1 => Just(Some("\"content\": \"again\"".to_owned())),
        ];
        (role, content, extra, any::<u8>()).prop_map(|(role, content, extra, shape)| {
            let mut fields = Vec::new();
            if shape % 29 != 0 {
                fields.push(format!("\"role\": {role}"));
            }
            if shape % 31 != 0 {
                fields.push(format!("\"content\": {content}"));
            }
            fields.extend(extra);
            if shape % 2 == 0 {
                fields.reverse();
            }
            format!("{{{}}}", fields.join(", "))
        })
    }

    fn request() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            Just("stream"),
            Just("max_tokens"),
            Just("max_completion_tokens"),
            Just("n"),
            Just("temperature"),
            Just("top_p"),
            Just("user"),
            Just("model"),
            Just("stream"),
            Just("max_tokens"),
            Just("temperature"),
        ];
        // Mostly values a client would send for the field, sometimes any literal.
        let value = (
            field,
            any::<prop::sample::Index>(),
            literal(),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(k, pick, wild, is_wild)| {
                let good: &[&str] = match k {
                    "stream" => &["true", "false"],
                    "max_tokens" | "max_completion_tokens" | "n" => &["0", "1", "64", "4294967295"],
                    "temperature" | "top_p" => {
                        &["0.7", "1", "0", "1.5", "0.25", "1234567890.12345"]
                    }
                    _ => &["\"u\""],
                };
                let v = if is_wild {
                    wild
                } else {
                    good[pick.index(good.len())].to_owned()
                };
                (k, v)
            });
        (
            prop_oneof![8 => string(), 1 => literal()],
            proptest::collection::vec(message(), 0..4),
            proptest::collection::vec(value, 0..5),
            prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t")],
            any::<prop::sample::Index>(),
            any::<u8>(),
        )
            .prop_map(|(model, messages, fields, ws, at, shape)| {
                let mut parts: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\":{ws}{v}"))
                    .collect();
                if shape % 17 != 0 {
                    parts.push(format!(
                        "\"messages\":{ws}[{}]",
                        messages.join(&format!(",{ws}"))
                    ));
                }
                if shape % 19 != 0 {
                    let i = at.index(parts.len() + 1);
                    parts.insert(i, format!("\"model\"{ws}:{ws}{model}"));
                }
                format!("{ws}{{{ws}{}{ws}}}{ws}", parts.join(&format!(",{ws}")))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        /// What this reads, serde reads the same (the request, and where its model lies).
        #[test]
        fn reads_as_serde_reads(text in request()) {
            if let Some((quick, span)) = read(&text) {
                let serde = by_serde(&text);
                prop_assert!(serde.is_some(), "serde refuses {}", text);
                let (serde, serde_span) = serde.unwrap();
                prop_assert_eq!(format!("{quick:?}"), format!("{serde:?}"), "{}", text);
                prop_assert_eq!(span, serde_span, "{}", text);
            }
        }
    }
}
