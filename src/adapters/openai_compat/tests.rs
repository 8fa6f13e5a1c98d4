use std::collections::HashMap;

use bytes::BytesMut;
use http::StatusCode;
use serde_json::{Value, json};

use super::*;
use crate::adapters::{Flow, StreamFault};
use crate::config::Origin;
use crate::config::load::{Overrides, load};
use crate::exchange::chat::RequestLimits;
use crate::exchange::sse::SseDecoder;

fn deployment() -> std::sync::Arc<Deployment> {
    let env: HashMap<String, String> = [(
        "OPENAI_API_KEY".to_owned(),
        "sk-canary-abcdef123456".to_owned(),
    )]
    .into();
    let loaded = load(&Origin::Embedded, &Overrides::default(), &env).unwrap();
    loaded
        .config
        .deployments
        .iter()
        .find(|d| d.name == "openai/gpt-4o")
        .unwrap()
        .clone()
}

fn request(v: Value) -> ChatRequest {
    ChatRequest::parse(v.to_string().as_bytes(), RequestLimits::default()).unwrap()
}

#[test]
fn builds_the_upstream_request_from_the_parsed_one() {
    let d = deployment();
    let req = request(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 7}),
    );
    let up = OpenAiCompat.build_request(&req, &d).unwrap();
    assert_eq!(
        up.url.to_string(),
        "https://api.openai.com/v1/chat/completions"
    );
    let auth = up
        .headers
        .iter()
        .find(|(n, _)| n == http::header::AUTHORIZATION)
        .unwrap();
    assert!(auth.1.is_sensitive());
    assert_eq!(auth.1.to_str().unwrap(), "Bearer sk-canary-abcdef123456");
    let body: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        body,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 7})
    );
}

#[test]
fn whole_answers_pass_through_with_their_usage() {
    let d = deployment();
    let req = request(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
    let done = OpenAiCompat
        .parse_response(Bytes::from_static(body), &req, &d)
        .unwrap();
    let AnswerBody::OpenAi(relayed, _) = &done.body else {
        panic!("not relayed as it was")
    };
    assert_eq!(&relayed[..], &body[..]);
    let u = done.usage.unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.reasoning_tokens
        ),
        (9, 2, 4, 1)
    );
    for bad in [
        &b"not json"[..],
        b"{}",
        b"{\"error\":{\"message\":\"x\"}}",
        b"[]",
    ] {
        assert!(
            OpenAiCompat
                .parse_response(Bytes::from_static(bad), &req, &d)
                .is_err()
        );
    }
}

#[test]
fn error_bodies_of_every_server_shape_are_read_and_cleaned() {
    let d = deployment();
    let cases: [(&[u8], &str); 5] = [
        (br#"{"error":{"message":"Incorrect API key provided: sk-canary-abcdef123456.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#, "Incorrect API key provided: [redacted]"),
        (br#"{"error":"model 'x' not found"}"#, "model 'x' not found"),
        (br#"{"object":"error","message":"maximum context length is 2048","type":"BadRequestError","param":null,"code":400}"#, "maximum context length is 2048"),
        (br#"{"detail":"Not Found"}"#, "Not Found"),
        (b"<html>bad gateway</html>", "upstream answered HTTP 400"),
    ];
    for (body, want) in cases {
        let f = OpenAiCompat.parse_error(StatusCode::BAD_REQUEST, body, &d);
        assert!(
            f.body.message.starts_with(want),
            "{} vs {want}",
            f.body.message
        );
        assert!(!f.body.message.contains("canary"));
    }
    assert_eq!(
        OpenAiCompat
            .parse_error(StatusCode::TOO_MANY_REQUESTS, b"{}", &d)
            .body
            .kind,
        ErrorType::RateLimitError
    );
}

fn run_stream(
    req: &ChatRequest,
    d: &Deployment,
    upstream: &str,
) -> (String, Result<Flow, StreamFault>, Box<dyn StreamTranslator>) {
    run_stream_as(req, d, upstream, crate::api::Front::OpenAi)
}

/// Feeds an upstream stream through the translator and the client's encoder, as the relay does.
fn run_stream_as(
    req: &ChatRequest,
    d: &Deployment,
    upstream: &str,
    front: crate::api::Front,
) -> (String, Result<Flow, StreamFault>, Box<dyn StreamTranslator>) {
    let mut t = OpenAiCompat.stream_translator(req, d);
    let mut enc = front.encoder(
        req.wants_stream_usage(),
        (req.text_len() as u64).div_ceil(4),
        None,
        &d.upstream_model,
    );
    let mut dec = SseDecoder::new(1 << 20);
    let mut events = Vec::new();
    dec.feed(upstream.as_bytes(), &mut events).unwrap();
    let mut out = BytesMut::new();
    let mut last = Ok(Flow::More);
    for e in &events {
        last = t.event(e, enc.as_mut(), &mut out);
        if !matches!(last, Ok(Flow::More)) {
            break;
        }
    }
    if matches!(last, Ok(Flow::Done)) {
        let end = crate::exchange::encode::End {
            usage: t.usage(),
            usage_relayed: t.usage_relayed(),
            output_chars: t.output_chars(),
        };
        enc.done(end, &mut out);
    }
    (String::from_utf8(out.to_vec()).unwrap(), last, t)
}

const STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":58,\"total_tokens\":82}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn streams_relay_chunks_and_hide_the_usage_chunk_nobody_asked_for() {
    let d = deployment();
    let req = request(
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let (out, last, t) = run_stream(&req, &d, STREAM);
    assert!(matches!(last, Ok(Flow::Done)));
    assert_eq!(out.matches("data: ").count(), 4, "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert!(!out.contains("\"prompt_tokens\""), "{out}");
    assert!(out.contains("Hello"));
    assert_eq!(t.usage().unwrap().completion_tokens, 58);
    assert!(t.committed());
    assert_eq!(t.output_chars(), 5);

    let req = request(
        json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let (out, _, _) = run_stream(&req, &d, STREAM);
    assert_eq!(out.matches("data: ").count(), 5, "{out}");
    assert_eq!(out.matches("\"prompt_tokens\"").count(), 1, "{out}");
    assert!(out.contains("\"prompt_tokens\":24"));
}

#[test]
fn in_band_errors_end_the_stream() {
    let d = deployment();
    let req = request(
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let upstream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded sk-canary-abcdef123456\",\"type\":\"server_error\"}}\n\n";
    let (out, last, _) = run_stream(&req, &d, upstream);
    let fault = last.unwrap_err();
    assert!(fault.body.message.starts_with("overloaded"));
    // The translator passes the text on whole; the relay cleans it (one place for every
    // dialect, before any cut).
    let cleaned = crate::adapters::sanitize::clean(&fault.body.message, &d.endpoint.masks);
    assert!(!cleaned.contains("canary"), "{cleaned}");
    assert_eq!(out.matches("data: ").count(), 1);
    let (_, last, _) = run_stream(&req, &d, "data: {not json\n\n");
    assert!(last.is_err());
}

#[test]
fn a_usage_chunk_is_estimated_when_the_client_asked_and_the_upstream_sent_none() {
    let d = deployment();
    let req = request(
        json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "12345678"}]}),
    );
    let upstream = "data: {\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abcdefgh\"}}]}\n\ndata: [DONE]\n\n";
    let (out, last, _) = run_stream(&req, &d, upstream);
    assert!(matches!(last, Ok(Flow::Done)));
    let events: Vec<&str> = out.split("data: ").collect();
    let usage: Value = serde_json::from_str(events[events.len() - 2].trim()).unwrap();
    assert_eq!(usage["id"], "c9");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 2);
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(usage["usage"]["modelgate_estimated"], true);
}

/// The encoder renames the model at the place the translator's one reading of the chunk found
/// it, and keeps the first chunk's `id` and `created` for the usage chunk it adds: escaped, in
/// any order, the rest of the bytes as they came.
#[test]
fn relayed_chunks_are_renamed_where_the_probe_found_the_model() {
    let d = deployment();
    let req = request(
        json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let upstream = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"model\\\": \\\"x\\\"\"}}],\"created\":7,\"model\":\"served-name\",\"id\":\"c\\u0039\"}\n\n",
        "data: {\"model\" : null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"c\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let (out, last, _) = run_stream(&req, &d, upstream);
    assert!(matches!(last, Ok(Flow::Done)), "{out}");
    let events: Vec<Value> = out
        .split("data: ")
        .filter(|e| !e.trim().is_empty() && e.trim() != "[DONE]")
        .map(|e| serde_json::from_str(e.trim()).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "{out}");
    let model = d.upstream_model.as_str();
    assert_eq!(events[0]["model"], model);
    assert_eq!(
        events[0]["choices"][0]["delta"]["content"],
        "\"model\": \"x\""
    );
    assert_eq!(events[0]["id"], "c9");
    // A chunk without a model, or with a null one, is relayed as it came.
    assert!(events[1]["model"].is_null());
    assert!(events[2].get("model").is_none());
    assert_eq!(events[3]["id"], "c9");
    assert_eq!(events[3]["created"], 7);
    assert_eq!(events[3]["model"], model);
}

/// The one-pass read of a whole answer finds what serde's derive finds, or leaves it to serde.
#[test]
fn the_scanned_answer_reads_as_the_probed_one() {
    let view = |r: Result<Completed, AdapterError>| match r {
        Ok(Completed {
            usage,
            body: AnswerBody::OpenAi(b, model_at),
        }) => Ok((format!("{usage:?}"), model_at.map(|r| b.slice(r)))),
        Ok(_) => Err("another body".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let mut vouched = 0;
    for body in [
        r#"{"choices":[],"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        r#" { "model" : {"a":[1]} , "choices" : [ {"x":null} ] , "usage" : null } "#,
        r#"{"choices":[],"model":null,"error":null}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
        r#"{"choices":null}"#,
        r#"{"model":"m"}"#,
        r#"{"choices":[],"error":{"message":"boom"}}"#,
        r#"{"choices":[],"error":"x"}"#,
        r#"{"choices":{},"model":"m"}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":-1}}"#,
        r#"{"choices":[],"usage":[1]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":null}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1.0}}"#,
        r#"{"choices":[],"usage":{"completion_tokens":1e2}}"#,
        r#"{"choices":[],"usage":{"completion_tokens":99999999999999999999}}"#,
        r#"{"choices":[],"usage":{"completion_tokens":18446744073709551615}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens_details":null,"completion_tokens_details":{}}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":null,"x":[]}}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":-2}}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens_details":[3]}}"#,
        r#"{"choices":[],"usage":{"completion_tokens_details":{"reasoning_tokens":5,"reasoning_tokens":6}}}"#,
        r#"{"choices":[],"usage":{}}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        r#"{"choices":[],"choices":[]}"#,
        r#"{"choices":[],"mod\u0065l":"m"}"#,
        r#"{"choices":[] "#,
        r#"[]"#,
        "{\"choices\":[],\"model\":\"\u{e9}\"}",
    ] {
        let bytes = Bytes::from(body);
        let text = std::str::from_utf8(&bytes).unwrap();
        let probed = view(probed(bytes.clone()));
        if let Some(scanned) = scanned(text, &bytes) {
            vouched += 1;
            assert_eq!(view(scanned), probed, "{body}");
        }
    }
    assert!(vouched >= 10, "the scan vouched for {vouched} bodies");
}
