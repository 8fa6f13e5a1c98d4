use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::exchange::chat::RequestLimits;

fn forwardable(text: &str) -> ChatRequest {
    ChatRequest::parse_forwardable(text.as_bytes(), RequestLimits::default()).unwrap()
}

const PLAIN: &str = r#"{"model": "llama-3.1-8b-instruct", "stream": true, "max_tokens": 64,
  "messages": [{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "Say \"hello\" to the benchmark.", "name": "u"}],
  "top_k": 40}"#;

#[test]
fn a_plain_body_is_forwarded_with_the_model_replaced_and_usage_asked_for() {
    let req = forwardable(PLAIN);
    let sent = req.spliced("meta/llama \"3\"", true, None).unwrap();
    let text = String::from_utf8(sent.clone()).unwrap();
    // The client's own bytes (its spacing, its escapes), but for the two changes.
    assert!(text.starts_with(r#"{"stream_options":{"include_usage":true},"model": "meta/llama \"3\"", "stream": true"#), "{text}");
    assert!(text.ends_with(r#""top_k": 40}"#), "{text}");
    let v: Value = serde_json::from_slice(&sent).unwrap();
    assert_eq!(v["model"], "meta/llama \"3\"");
    assert_eq!(
        v["messages"][1]["content"],
        "Say \"hello\" to the benchmark."
    );
    assert!(agrees(&req, "meta/llama \"3\"", true, None));
    // Without usage asked for, only the model changes.
    let sent = req.spliced("m", false, None).unwrap();
    assert_eq!(
        String::from_utf8(sent).unwrap(),
        PLAIN.replace("\"llama-3.1-8b-instruct\"", "\"m\"")
    );
    // The client's cap stands: the gateway's is not added.
    assert!(req.spliced("m", true, Some(("max_tokens", 9))).is_some());
    // A whole answer asked for in so many words: `"stream": false` goes as it came.
    let whole = forwardable(&PLAIN.replace("\"stream\": true", "\"stream\": false"));
    let sent = String::from_utf8(whole.spliced("m", true, None).unwrap()).unwrap();
    assert!(
        sent.starts_with(r#"{"model": "m", "stream": false,"#),
        "{sent}"
    );
    assert!(agrees(&whole, "m", true, None));
}

#[test]
fn what_writing_back_would_change_is_written_back() {
    let plain = || -> Value { serde_json::from_str(PLAIN).unwrap() };
    let cases: Vec<(&str, Value)> = vec![
        ("model escaped", json!("llama\u{0}")),
        ("stream null", json!({"stream": null})),
        (
            "stream_options",
            json!({"stream_options": {"include_usage": false}}),
        ),
        ("metadata", json!({"metadata": {"team": "a"}})),
        ("max_tokens null", json!({"max_tokens": null})),
        ("temperature null", json!({"temperature": null})),
        ("stop null", json!({"stop": null})),
        ("tools null", json!({"tools": null})),
        (
            "content missing",
            json!({"messages": [{"role": "assistant", "tool_calls": []}]}),
        ),
        (
            "name null",
            json!({"messages": [{"role": "user", "content": "x", "name": null}]}),
        ),
        (
            "tool_calls null",
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": null}]}),
        ),
        (
            "tool_call_id null",
            json!({"messages": [{"role": "user", "content": "x", "tool_call_id": null}]}),
        ),
    ];
    for (what, change) in cases {
        let mut v = plain();
        match change {
            Value::Object(o) => v.as_object_mut().unwrap().extend(o),
            model => v["model"] = model,
        }
        let req = forwardable(&v.to_string());
        assert!(req.wire.is_none(), "{what}: kept for forwarding");
        assert!(req.spliced("m", true, None).is_none(), "{what}");
    }
    // A body without a client's cap, for a budgeted caller, is written back with the cap.
    let mut v = plain();
    v.as_object_mut().unwrap().remove("max_tokens");
    let req = forwardable(&v.to_string());
    assert!(req.spliced("m", true, None).is_some());
    assert!(req.spliced("m", true, Some(("max_tokens", 9))).is_none());
    let capped: Value =
        serde_json::from_slice(&req.to_openai_body_capped("m", true, Some(("max_tokens", 9))))
            .unwrap();
    assert_eq!(capped["max_tokens"], 9);
    // A request parsed for another dialect's sake is never forwarded.
    let req = ChatRequest::parse(PLAIN.as_bytes(), RequestLimits::default()).unwrap();
    assert!(req.spliced("m", true, None).is_none());
}

/// A JSON string as a client may write it: plain, or with some characters escaped.
fn string(s: String, escape: bool) -> String {
    if !escape {
        return serde_json::to_string(&s).unwrap();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            'a'..='z' => out.push_str(&format!("\\u{:04x}", c as u32)),
            _ => {
                let quoted = serde_json::to_string(&c.to_string()).unwrap();
                out.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }
    out.push('"');
    out
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}",
        Just("quote \" back \\ slash / tab \t é 😀 \u{1}".to_owned()),
        Just(String::new()),
    ]
}

/// A value for `field`, picked from those a client may send for it (`null` among them) and
/// some it may not; `s` is a string's JSON, written either way.
fn value_for(field: &str, pick: prop::sample::Index, s: String) -> String {
    let choices: &[&str] = match field {
        "max_tokens" | "max_completion_tokens" => &["null", "64", "4096", "0"],
        "n" => &["null", "1", "2"],
        "temperature" => &["null", "0.7", "1", "1.0e0", "0", "\"hot\""],
        "top_p" => &["null", "0.5", "1"],
        "stop" => &["null", "S", "[\"a\", \"b\"]", "1"],
        "tools" => &[
            "null",
            "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]",
        ],
        "tool_choice" => &["null", "\"auto\"", "{\"type\": \"function\"}"],
        "response_format" => &["null", "{\"type\": \"json_object\"}"],
        "name" | "tool_call_id" => &["null", "S"],
        "tool_calls" => &["null", "[]", "[{\"id\": \"c1\", \"type\": \"function\"}]"],
        _ => &[
            "null",
            "true",
            "1",
            "0.7",
            "S",
            "[1, \"a\"]",
            "{\"a\": {\"b\": null}}",
        ],
    };
    // `null` (each list's first) one time in twenty or so: most bodies should be forwardable.
    let i = pick.index(choices.len() * 5);
    let i = if i < 1 {
        0
    } else {
        1 + (i - 1) % (choices.len() - 1)
    };
    match choices[i] {
        "S" => s,
        v => v.to_owned(),
    }
}

fn json_string() -> impl Strategy<Value = String> {
    (text(), any::<bool>()).prop_map(|(s, e)| string(s, e))
}

/// A message's text, and whether writing it back would change it.
fn message() -> impl Strategy<Value = (String, bool)> {
    let role = prop_oneof![
        Just("system"),
        Just("user"),
        Just("assistant"),
        Just("tool"),
        Just("developer")
    ];
    let content = prop_oneof![
        1 => Just(None),
        1 => Just(Some("null".to_owned())),
        4 => (text(), any::<bool>()).prop_map(|(s, e)| Some(string(s, e))),
        2 => text().prop_map(|s| Some(format!(
            "[{{\"type\": \"text\", \"text\": {}}}]",
            serde_json::to_string(&s).unwrap()
        ))),
    ];
    let optional = || {
        prop_oneof![
            Just(None),
            (any::<prop::sample::Index>(), json_string()).prop_map(Some)
        ]
    };
    (
        role,
        content,
        optional(),
        optional(),
        optional(),
        optional(),
    )
        .prop_map(|(role, content, a, b, c, d)| {
            let mut reshaped = content.is_none();
            let mut fields = vec![format!("\"role\": \"{role}\"")];
            fields.extend(content.map(|c| format!("\"content\": {c}")));
            for (name, v) in [
                ("name", a),
                ("tool_calls", b),
                ("tool_call_id", c),
                ("cache_control", d),
            ] {
                if let Some((pick, s)) = v {
                    let v = value_for(name, pick, s);
                    reshaped |= v == "null" && name != "cache_control";
                    fields.push(format!("\"{name}\": {v}"));
                }
            }
            (format!("{{{}}}", fields.join(", ")), reshaped)
        })
}

/// A chat request's text, its fields in any order and spaced any way, many of them invalid;
/// and whether, if it parses, it may be forwarded as it came.
fn request() -> impl Strategy<Value = (String, bool)> {
    let field = prop_oneof![
        Just("stream"),
        Just("stream_options"),
        Just("max_tokens"),
        Just("max_completion_tokens"),
        Just("n"),
        Just("temperature"),
        Just("top_p"),
        Just("stop"),
        Just("tools"),
        Just("tool_choice"),
        Just("response_format"),
        Just("metadata"),
        Just("top_k"),
        Just("user"),
    ];
    (
        (text(), prop::bool::weighted(0.2)),
        proptest::collection::vec(message(), 1..4),
        proptest::collection::vec((field, any::<prop::sample::Index>(), json_string()), 0..6),
        any::<bool>(),
        prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t")],
        any::<prop::sample::Index>(),
    )
        .prop_map(|((name, escaped), messages, mut fields, stream, ws, at)| {
            let model = string(format!("m{name}"), escaped);
            let mut forwardable = !model.contains('\\');
            fields.sort_by_key(|(k, _, _)| *k);
            fields.dedup_by_key(|(k, _, _)| *k);
            let mut parts: Vec<String> = fields
                .into_iter()
                .map(|(k, pick, s)| {
                    let v = value_for(k, pick, s);
                    let (v, reshapes) = match k {
                        "stream" if stream => ("true".to_owned(), false),
                        "stream" => {
                            let v = ["null", "false"][pick.index(2)];
                            (v.to_owned(), v == "null")
                        }
                        "stream_options" => ("{\"include_usage\": false}".into(), true),
                        "metadata" => ("{\"team\": \"a\"}".into(), true),
                        "top_k" | "user" => (v, false),
                        _ => (v.clone(), v == "null"),
                    };
                    forwardable &= !reshapes;
                    format!("\"{k}\":{ws}{v}")
                })
                .collect();
            forwardable &= messages.iter().all(|(_, reshaped)| !reshaped);
            let texts: Vec<String> = messages.into_iter().map(|(m, _)| m).collect();
            parts.push(format!(
                "\"messages\":{ws}[{}]",
                texts.join(&format!(",{ws}"))
            ));
            let i = at.index(parts.len() + 1);
            parts.insert(i, format!("\"model\"{ws}:{ws}{model}"));
            let text = format!("{ws}{{{ws}{}{ws}}}{ws}", parts.join(&format!(",{ws}")));
            (text, forwardable)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_forwarded_body_is_the_request_written_back((text, forwardable) in request()) {
        let Ok(req) = ChatRequest::parse_forwardable(text.as_bytes(), RequestLimits::default()) else {
            return Ok(());
        };
        for (ask, cap) in [(true, None), (false, None), (true, Some(("max_completion_tokens", 9)))] {
            prop_assert!(agrees(&req, "up/\"m\"", ask, cap), "{}", text);
        }
        // Not a test that passes by forwarding nothing: what may be forwarded is.
        prop_assert_eq!(req.wire.is_some(), forwardable, "{}", text);
    }
}
