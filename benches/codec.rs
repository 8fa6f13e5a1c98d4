//! Micro-benchmarks of the request path's codecs: parsing a client's request (both formats) and
//! writing the upstream body, decoding SSE, and translating each dialect's stream into each
//! client format (decode, translate, encode), reported in events per second.
//!
//! `cargo bench --bench codec` (`-- --quick` for a short run)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modelgate::adapters::Flow;
use modelgate::api::Front;
use modelgate::config::load::{Overrides, load};
use modelgate::config::{Deployment, Discovered, Origin, Snapshot};
use modelgate::exchange::chat::{ChatRequest, RequestLimits};
use modelgate::exchange::sse::SseDecoder;

/// Text chunks in each benchmark stream.
const CHUNKS: usize = 100;

fn deployments() -> Snapshot {
    let env: HashMap<String, String> = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"]
        .into_iter()
        .map(|k| (k.to_owned(), "sk-bench-canary".to_owned()))
        .collect();
    let loaded = load(&Origin::Embedded, &Overrides::default(), &env).unwrap();
    Snapshot::build(Arc::new(loaded.config), &Discovered::default())
}

fn find<'a>(s: &'a Snapshot, name: &str) -> &'a Deployment {
    s.deployments.iter().find(|d| d.name == name).unwrap()
}

/// A short chat, as most requests are.
fn small_request() -> Vec<u8> {
    serde_json::json!({
        "model": "gpt-4o", "max_tokens": 256, "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the benchmark."}
        ]
    })
    .to_string()
    .into_bytes()
}

/// An agent's turn: 40 messages with tool calls and results, two tools, a few unknown fields.
fn agent_request() -> Vec<u8> {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a coding agent. ".repeat(40)}),
    ];
    for i in 0..13 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Step {i}: look at the file and fix the failing test. ").repeat(5)}));
        messages.push(serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("call_{i}"), "type": "function", "function": {"name": "read_file", "arguments": format!("{{\"path\":\"src/mod{i}.rs\"}}")}}
        ]}));
        messages.push(serde_json::json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "fn main() { println!(\"hello\"); }\n".repeat(20)}));
    }
    serde_json::json!({
        "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
        "max_tokens": 4096, "parallel_tool_calls": false, "seed": 7, "user": "bench",
        "tools": [
            {"type": "function", "function": {"name": "read_file", "description": "Reads a file.",
             "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
            {"type": "function", "function": {"name": "write_file", "description": "Writes a file.",
             "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "text": {"type": "string"}}, "required": ["path", "text"]}}}
        ],
        "messages": messages
    })
    .to_string()
    .into_bytes()
}

fn openai_stream() -> String {
    let mut s = String::new();
    for i in 0..CHUNKS {
        let delta = if i == 0 {
            serde_json::json!({"role": "assistant", "content": format!("word{i} ")})
        } else {
            serde_json::json!({"content": format!("word{i} ")})
        };
        s.push_str(&format!(
            "data: {}\n\n",
            serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_1",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]})
        ));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":100,\"total_tokens\":112}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s
}

fn anthropic_stream() -> String {
    let mut s = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
         event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
         event: ping\ndata: {\"type\": \"ping\"}\n\n",
    );
    for i in 0..CHUNKS {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word{i} \"}}}}\n\n"
        ));
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
         event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}\n\n\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    s
}

fn gemini_stream() -> String {
    let mut s = String::new();
    for i in 0..CHUNKS {
        let finish = if i + 1 == CHUNKS {
            ",\"finishReason\":\"STOP\""
        } else {
            ""
        };
        s.push_str(&format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"word{i} \"}}],\"role\":\"model\"}},\"index\":0{finish}}}],\"usageMetadata\":{{\"promptTokenCount\":12,\"candidatesTokenCount\":{},\"totalTokenCount\":{}}},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r1\"}}\r\n\r\n",
            i + 1,
            13 + i
        ));
    }
    s
}

/// Decodes, translates and encodes one whole stream as the relay does, in upstream reads of
/// about 1 KiB; returns the client's bytes.
/// Decodes, translates and encodes a stream that arrives in `chunks`, as the relay does (which
/// lets the decoder keep slices of each chunk; `copied` feeds copies of them instead).
fn relay(d: &Deployment, req: &ChatRequest, front: Front, chunks: &[Bytes], copied: bool) -> usize {
    let adapter = d.kind().adapter().unwrap();
    let mut t = adapter.stream_translator(req, d);
    let mut enc = front.encoder(true, 4, None, "m");
    let mut dec = SseDecoder::new(1 << 20);
    let mut out = BytesMut::with_capacity(4096);
    let mut events = Vec::with_capacity(16);
    let mut written = 0;
    for chunk in chunks {
        if copied {
            dec.feed(chunk, &mut events).unwrap();
        } else {
            dec.feed_bytes(chunk, &mut events).unwrap();
        }
        for e in events.drain(..) {
            match t.event(&e, enc.as_mut(), &mut out).unwrap() {
                Flow::More => {}
                Flow::Done => {
                    let end = modelgate::exchange::encode::End {
                        usage: t.usage(),
                        usage_relayed: t.usage_relayed(),
                        output_chars: t.output_chars(),
                    };
                    enc.done(end, &mut out);
                }
            }
            written += out.len();
            out.clear();
        }
    }
    written
}

fn bench(c: &mut Criterion) {
    let limits = RequestLimits::default();
    let snapshot = deployments();

    let mut g = c.benchmark_group("request");
    for (name, body) in [
        ("small", small_request()),
        ("agent-40-messages", agent_request()),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("parse chat/completions {name}"), |b| {
            b.iter(|| ChatRequest::parse(black_box(&body), limits).unwrap());
        });
        let req = ChatRequest::parse(&body, limits).unwrap();
        g.bench_function(format!("upstream body openai-compatible {name}"), |b| {
            b.iter(|| black_box(&req).to_openai_body("llama-3.1-8b-instruct", true));
        });
        for dep in ["anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash"] {
            let d = find(&snapshot, dep);
            let adapter = d.kind().adapter().unwrap();
            g.bench_function(
                format!("upstream request {} {name}", d.kind().as_str()),
                |b| {
                    b.iter(|| adapter.build_request(black_box(&req), d).unwrap());
                },
            );
        }
    }
    let messages = serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 256, "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}]
    })
    .to_string();
    g.throughput(Throughput::Bytes(messages.len() as u64));
    g.bench_function("parse messages small", |b| {
        b.iter(|| modelgate::api::messages::parse(black_box(messages.as_bytes()), limits).unwrap());
    });
    g.finish();

    let streams = [
        ("openai/gpt-4o", openai_stream()),
        ("anthropic/claude-sonnet-4-5", anthropic_stream()),
        ("gemini/gemini-2.5-flash", gemini_stream()),
    ];
    let mut g = c.benchmark_group("sse");
    for (dep, s) in &streams {
        let events = count_events(s.as_bytes());
        g.throughput(Throughput::Elements(events as u64));
        let kind = find(&snapshot, dep).kind().as_str();
        g.bench_function(format!("decode {kind}"), |b| {
            let mut out = Vec::with_capacity(16);
            b.iter(|| {
                let mut dec = SseDecoder::new(1 << 20);
                for chunk in s.as_bytes().chunks(1024) {
                    dec.feed(chunk, &mut out).unwrap();
                    out.clear();
                }
            });
        });
    }
    g.finish();

    let req = ChatRequest::parse(
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        limits,
    )
    .unwrap();
    let mut g = c.benchmark_group("stream");
    for (dep, s) in &streams {
        let d = find(&snapshot, dep);
        g.throughput(Throughput::Elements(count_events(s.as_bytes()) as u64));
        let chunks: Vec<Bytes> = s
            .as_bytes()
            .chunks(1024)
            .map(Bytes::copy_from_slice)
            .collect();
        for (front, fname) in [
            (Front::OpenAi, "to chat/completions"),
            (Front::Anthropic, "to messages"),
        ] {
            assert!(relay(d, &req, front, &chunks, false) > 0);
            g.bench_function(format!("{} {fname}", d.kind().as_str()), |b| {
                b.iter(|| relay(d, black_box(&req), front, &chunks, false));
            });
        }
        if d.kind().as_str() == "openai" {
            g.bench_function("openai to chat/completions, chunks copied", |b| {
                b.iter(|| relay(d, black_box(&req), Front::OpenAi, &chunks, true));
            });
        }
    }
    g.finish();
}

fn count_events(s: &[u8]) -> usize {
    let mut dec = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    dec.feed(s, &mut out).unwrap();
    dec.finish(&mut out).unwrap();
    out.len()
}

criterion_group!(benches, bench);
criterion_main!(benches);
