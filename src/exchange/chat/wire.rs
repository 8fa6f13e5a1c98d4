//! The chat request's JSON, read in one pass (known fields typed, the parameter a failure
//! happened on recorded, duplicates refused, everything else kept raw) and written back for an
//! OpenAI-compatible upstream.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::*;

// === Deserialisation ===

/// A string, borrowed when the JSON has no escapes in it; `expecting` names it in errors.
fn cow_str<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<Cow<'de, str>, D::Error> {
    struct V(&'static str);
    impl<'de> Visitor<'de> for V {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Owned(v))
        }
    }
    d.deserialize_str(V(expecting))
}

/// A map key.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        cow_str(d, "a string key").map(Key)
    }
}

/// A string value (the model's name), where it lies in the body found when it is borrowed.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        cow_str(d, "a string").map(Text)
    }
}

/// The parameter a parse failed on, and the error code to report.
pub(super) type Failed = Cell<Option<(&'static str, &'static str)>>;

/// Reads one field's value; on failure records which parameter it was.
fn field<'de, A, T>(map: &mut A, failed: &Failed, name: &'static str) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    map.next_value::<T>()
        .inspect_err(|_| failed.set(Some((name, "invalid_type"))))
}

/// Reads one field's value into its slot, once: a second occurrence is refused.
fn once<'de, A, T>(
    map: &mut A,
    failed: &Failed,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    let v = field(map, failed, name)?;
    set_once(slot, v, name)
}

fn set_once<T, E: de::Error>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::custom(format_args!("duplicate field '{name}'")));
    }
    *slot = Some(v);
    Ok(())
}

fn push_extra<E: de::Error>(
    extra: &mut Extra,
    key: Cow<'_, str>,
    v: Box<RawValue>,
) -> Result<(), E> {
    if extra.iter().any(|(k, _)| k == key.as_ref()) {
        return Err(E::custom(format_args!("duplicate field '{key}'")));
    }
    extra.push((key.into_owned(), v));
    Ok(())
}

/// The request from `de`, which must hold nothing after it, and where its `model`'s string
/// lies in `text` (the body `de` reads) if the body is one [`ChatRequest::spliced`] may
/// forward.
pub(super) fn read_request<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    failed_param: &Failed,
    text: &[u8],
) -> serde_json::Result<(ChatRequest, Option<Range<usize>>)> {
    let read = RequestSeed { failed_param, text }.deserialize(&mut *de)?;
    de.end()?;
    Ok(read)
}

pub(super) struct RequestSeed<'c> {
    pub(super) failed_param: &'c Failed,
    /// The body, to find the model's string in.
    pub(super) text: &'c [u8],
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = (ChatRequest, Option<Range<usize>>);
    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> Result<(ChatRequest, Option<Range<usize>>), D::Error> {
        d.deserialize_map(self)
    }
}

/// `metadata`: string → string, as OpenAI defines it.
fn read_metadata<'de, A: MapAccess<'de>>(
    map: &mut A,
    failed: &Failed,
) -> Result<Option<Vec<(String, String)>>, A::Error> {
    let m: Option<serde_json::Map<String, serde_json::Value>> = field(map, failed, "metadata")?;
    let Some(m) = m else {
        return Ok(None);
    };
    let mut pairs = Vec::with_capacity(m.len());
    for (k, v) in m {
        match v {
            serde_json::Value::String(s) => pairs.push((k, s)),
            _ => {
                failed.set(Some(("metadata", "invalid_type")));
                return Err(de::Error::custom("metadata values must be strings"));
            }
        }
    }
    Ok(Some(pairs))
}

/// Where `s`, borrowed from `text`, lies in it with its quotes.
fn quoted_span(text: &[u8], s: &str) -> Option<Range<usize>> {
    let at = (s.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    let span = at.checked_sub(1)?..at + s.len() + 1;
    let quoted = text.get(span.clone())?;
    (quoted.first() == Some(&b'"') && quoted.last() == Some(&b'"')).then_some(span)
}

/// Whether a field was sent as `null` (read, then left out when written back).
fn was_null<T>(v: &Option<Option<T>>) -> bool {
    matches!(v, Some(None))
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = (ChatRequest, Option<Range<usize>>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<(ChatRequest, Option<Range<usize>>), A::Error> {
        let failed = self.failed_param;
        let mut model: Option<Text<'de>> = None;
        let mut messages: Option<Vec<Message>> = None;
        let mut stream: Option<Option<bool>> = None;
        let mut stream_options: Option<Option<serde_json::Map<String, serde_json::Value>>> = None;
        let mut max_tokens: Option<Option<u32>> = None;
        let mut max_completion_tokens: Option<Option<u32>> = None;
        let mut n: Option<Option<u32>> = None;
        let mut temperature: Option<Option<f64>> = None;
        let mut top_p: Option<Option<f64>> = None;
        let mut stop: Option<Option<Box<RawValue>>> = None;
        let mut tools: Option<Option<Box<RawValue>>> = None;
        let mut tool_choice: Option<Option<Box<RawValue>>> = None;
        let mut response_format: Option<Option<Box<RawValue>>> = None;
        let mut metadata: Option<Option<Vec<(String, String)>>> = None;
        let mut extra = Extra::new();

        while let Some(Key(key)) = map.next_key::<Key>()? {
            let m = &mut map;
            match key.as_ref() {
                "model" => once(m, failed, &mut model, "model")?,
                "messages" => once(m, failed, &mut messages, "messages")?,
                "stream" => once(m, failed, &mut stream, "stream")?,
                "stream_options" => once(m, failed, &mut stream_options, "stream_options")?,
                "max_tokens" => once(m, failed, &mut max_tokens, "max_tokens")?,
                "max_completion_tokens" => {
                    once(
                        m,
                        failed,
                        &mut max_completion_tokens,
                        "max_completion_tokens",
                    )?;
                }
                "n" => once(m, failed, &mut n, "n")?,
                "temperature" => once(m, failed, &mut temperature, "temperature")?,
                "top_p" => once(m, failed, &mut top_p, "top_p")?,
                "stop" => once(m, failed, &mut stop, "stop")?,
                "tools" => once(m, failed, &mut tools, "tools")?,
                "tool_choice" => once(m, failed, &mut tool_choice, "tool_choice")?,
                "response_format" => once(m, failed, &mut response_format, "response_format")?,
                "metadata" => set_once(&mut metadata, read_metadata(m, failed)?, "metadata")?,
                _ => {
                    if let Some(f) = FORBIDDEN_FIELDS.iter().find(|f| **f == key) {
                        // Clients cannot choose upstreams, keys, retries or timeouts.
                        failed.set(Some((f, "unsupported_parameter")));
                        return Err(de::Error::custom(
                            "this field is not accepted: upstreams, keys, retries and timeouts are set by the gateway's configuration",
                        ));
                    }
                    let v: Box<RawValue> = map.next_value()?;
                    push_extra(&mut extra, key, v)?;
                }
            }
        }

        let Some(Text(model)) = model else {
            failed.set(Some(("model", "missing_required_parameter")));
            return Err(de::Error::custom("missing required parameter 'model'"));
        };
        let Some(messages) = messages else {
            failed.set(Some(("messages", "missing_required_parameter")));
            return Err(de::Error::custom("missing required parameter 'messages'"));
        };
        // The body may be forwarded as it came only if writing the request back would give
        // the same JSON but for `model` (and `stream_options`, asked for where it is absent):
        // no field sent as `null` (left out when written back), no `stream_options` or
        // `metadata` (written back from what was read of them). `"stream": false`, left out
        // when written back, is the API's default and goes as it came.
        let exact = [&stop, &tools, &tool_choice, &response_format]
            .into_iter()
            .all(|v| {
                v.as_ref()
                    .is_none_or(|v| v.as_ref().is_some_and(|r| r.get() != "null"))
            })
            && !(was_null(&stream)
                || stream_options.is_some()
                || metadata.is_some()
                || was_null(&max_tokens)
                || was_null(&max_completion_tokens)
                || was_null(&n)
                || was_null(&temperature)
                || was_null(&top_p)
                || messages.iter().any(|m| m.reshaped));
        let span = match &model {
            Cow::Borrowed(s) if exact => quoted_span(self.text, s),
            _ => None,
        };
        Ok((
            ChatRequest {
                model: model.into_owned(),
                messages,
                stream: stream.flatten().unwrap_or(false),
                stream_options: stream_options.flatten(),
                max_tokens: max_tokens.flatten(),
                max_completion_tokens: max_completion_tokens.flatten(),
                cap_output: false,
                n: n.flatten(),
                temperature: temperature.flatten(),
                top_p: top_p.flatten(),
                stop: stop.flatten().filter(|s| s.get() != "null"),
                tools: tools.flatten().filter(|s| s.get() != "null"),
                tool_choice: tool_choice.flatten().filter(|s| s.get() != "null"),
                response_format: response_format.flatten().filter(|s| s.get() != "null"),
                metadata: metadata.flatten(),
                extra,
                native: None,
                hosted_tool: None,
                wire: None,
            },
            span,
        ))
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object with 'role' and 'content'")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut role = None;
        // Borrowed from the body: a string's text is copied out once, parts are boxed.
        let mut content: Option<Option<&'de RawValue>> = None;
        let mut name = None;
        let mut tool_calls = None;
        let mut tool_call_id = None;
        let mut extra = Extra::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match key.as_ref() {
                "role" => set_once(&mut role, map.next_value::<Role>()?, "role")?,
                "content" => set_once(&mut content, map.next_value()?, "content")?,
                "name" => set_once(&mut name, map.next_value::<Option<String>>()?, "name")?,
                "tool_calls" => set_once(
                    &mut tool_calls,
                    map.next_value::<Option<Box<RawValue>>>()?,
                    "tool_calls",
                )?,
                "tool_call_id" => set_once(
                    &mut tool_call_id,
                    map.next_value::<Option<String>>()?,
                    "tool_call_id",
                )?,
                _ => {
                    let v: Box<RawValue> = map.next_value()?;
                    push_extra(&mut extra, key, v)?;
                }
            }
        }
        let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
        // Written back, a missing `content` becomes `null` and a `null` among the others goes.
        let reshaped = content.is_none()
            || was_null(&name)
            || was_null(&tool_call_id)
            || tool_calls
                .as_ref()
                .is_some_and(|t| t.as_ref().is_none_or(|t| t.get() == "null"));
        let content = match content.flatten() {
            None => None,
            Some(raw) => match raw.get().as_bytes().first() {
                // Without escapes the text is what lies between the quotes (the string was
                // checked when it was read); with them, it is read again to unescape it.
                Some(b'"') => Some(Content::Text(match raw.get() {
                    s if !s.contains('\\') && s.len() >= 2 => s[1..s.len() - 1].to_owned(),
                    s => serde_json::from_str(s).map_err(de::Error::custom)?,
                })),
                Some(b'n') => None,
                Some(b'[') => Some(Content::Parts(raw.to_owned())),
                _ => {
                    return Err(de::Error::custom(
                        "message content must be a string or an array of content parts",
                    ));
                }
            },
        };
        Ok(Message {
            role,
            content,
            name: name.flatten(),
            tool_calls: tool_calls.flatten().filter(|t| t.get() != "null"),
            tool_call_id: tool_call_id.flatten(),
            extra,
            reshaped,
        })
    }
}

// === Serialisation ===

pub(super) struct OpenAiBody<'a> {
    pub(super) req: &'a ChatRequest,
    pub(super) model: &'a str,
    pub(super) ask_stream_usage: bool,
    pub(super) cap: Option<(&'static str, u32)>,
}

impl Serialize for OpenAiBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.req;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("model", self.model)?;
        m.serialize_entry("messages", &r.messages)?;
        if r.stream {
            m.serialize_entry("stream", &true)?;
            if self.ask_stream_usage {
                m.serialize_entry("stream_options", &WithUsage(r.stream_options.as_ref()))?;
            } else if let Some(opts) = &r.stream_options {
                m.serialize_entry("stream_options", opts)?;
            }
        }
        if let Some(v) = r.max_tokens {
            m.serialize_entry("max_tokens", &v)?;
        }
        if let Some(v) = r.max_completion_tokens {
            m.serialize_entry("max_completion_tokens", &v)?;
        }
        if r.max_tokens.is_none()
            && r.max_completion_tokens.is_none()
            && let Some((field, v)) = self.cap
        {
            m.serialize_entry(field, &v)?;
        }
        if let Some(v) = r.n {
            m.serialize_entry("n", &v)?;
        }
        if let Some(v) = r.temperature {
            m.serialize_entry("temperature", &v)?;
        }
        if let Some(v) = r.top_p {
            m.serialize_entry("top_p", &v)?;
        }
        for (k, v) in [
            ("stop", &r.stop),
            ("tools", &r.tools),
            ("tool_choice", &r.tool_choice),
            ("response_format", &r.response_format),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(md) = &r.metadata {
            m.serialize_entry("metadata", &PairsAsMap(md))?;
        }
        for (k, v) in &r.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The client's `stream_options` (if any) with `include_usage` set: written as it goes, not
/// cloned into a new map (a tree's allocations on every stream) to insert one key.
struct WithUsage<'a>(Option<&'a serde_json::Map<String, serde_json::Value>>);

impl Serialize for WithUsage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0.into_iter().flatten() {
            if k != "include_usage" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("include_usage", &true)?;
        m.end()
    }
}

struct PairsAsMap<'a>(&'a [(String, String)]);

impl Serialize for PairsAsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("role", &self.role)?;
        match &self.content {
            Some(Content::Text(t)) => m.serialize_entry("content", t)?,
            Some(Content::Parts(p)) => m.serialize_entry("content", p)?,
            None => m.serialize_entry("content", &())?,
        }
        if let Some(n) = &self.name {
            m.serialize_entry("name", n)?;
        }
        if let Some(t) = &self.tool_calls {
            m.serialize_entry("tool_calls", t)?;
        }
        if let Some(t) = &self.tool_call_id {
            m.serialize_entry("tool_call_id", t)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}
