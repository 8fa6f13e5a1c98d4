//! Fuzzing entry points: each takes arbitrary bytes and must neither panic nor hang nor grow
//! without bound. The cargo-fuzz targets in `fuzz/` call them; `tests/fuzz_corpus.rs` replays
//! their corpora on every test run (stable Rust, no sanitizers).

#![expect(
    clippy::panic,
    reason = "a fuzz entry point reports a broken invariant by panicking"
)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use crate::adapters::Adapter;
use crate::api::Front;
use crate::config::keys::Caller;
use crate::config::load::{Overrides, load, load_texts};
use crate::config::{Deployment, Discovered, Origin, Snapshot};
use crate::exchange::chat::{ChatRequest, RequestLimits};
use crate::exchange::sse::SseDecoder;
use crate::policy::Routing;
use crate::policy::{Ask, EndpointName, Needs, PromptSize};

const LIMITS: RequestLimits = RequestLimits {
    max_messages: 1000,
    max_depth: 64,
};

fn env() -> HashMap<String, String> {
    ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"]
        .into_iter()
        .map(|k| (k.to_owned(), "sk-fuzz-canary".to_owned()))
        .collect()
}

/// The built-in configuration with every provider's key set: deployments of every dialect.
fn snapshot() -> &'static Routing {
    static S: OnceLock<Routing> = OnceLock::new();
    S.get_or_init(|| {
        let loaded = match load(&Origin::Embedded, &Overrides::default(), &env()) {
            Ok(l) => l,
            Err(p) => panic!("the built-in configuration does not load: {p}"),
        };
        Routing::at_rest(Snapshot::build(
            Arc::new(loaded.config),
            &Discovered::default(),
        ))
    })
}

fn deployment(name: &str) -> &'static Arc<Deployment> {
    match snapshot().deployments.iter().find(|d| d.name == name) {
        Some(d) => d,
        None => panic!("no deployment {name}"),
    }
}

/// Client request parsing and validation, in both client formats, and the upstream bodies
/// built from what parses.
pub fn request(data: &[u8]) {
    // The Responses API's request, as its first turn would be sent.
    let responses = crate::api::responses::request::parse(data, LIMITS)
        .and_then(|p| p.to_chat(&[], LIMITS))
        .map(|(req, _)| req);
    // The common shape is read without serde: as serde reads it.
    if !crate::exchange::chat::quick::alike(data) {
        panic!("the quick reading is not serde's");
    }
    let parsed = [
        ChatRequest::parse_forwardable(data, LIMITS),
        crate::api::messages::parse(data, LIMITS),
        responses,
    ];
    for req in parsed.into_iter().flatten() {
        // A body forwarded as it came (where it may be) is the same JSON as the request
        // written back.
        for (ask, cap) in [(true, None), (false, None), (true, Some(("max_tokens", 9)))] {
            if !crate::exchange::chat::splice::agrees(&req, "m\"x", ask, cap) {
                panic!("the forwarded body is not the request written back");
            }
        }
        let _ = req.to_openai_body("m", true);
        let _ = req.text_len();
        for d in ["anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash"] {
            let d = deployment(d);
            if let Some(a) = d.kind().adapter() {
                let _ = a.build_request(&req, d);
            }
        }
    }
    let _ = crate::exchange::embeddings::EmbeddingsRequest::parse(data, 64);
}

/// The SSE decoder, fed the input cut at places the input's first byte chooses.
pub fn sse(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    // Fed as copied slices and as chunks the decoder keeps parts of, the same events come out.
    let mut dec = SseDecoder::new(4096);
    let mut kept = SseDecoder::new(4096);
    let (mut events, mut shared) = (Vec::new(), Vec::new());
    for chunk in rest.chunks(step) {
        let a = dec.feed(chunk, &mut events);
        let b = kept.feed_bytes(&Bytes::copy_from_slice(chunk), &mut shared);
        assert_eq!(a, b);
        assert_eq!(events, shared);
        if a.is_err() {
            return;
        }
        events.clear();
        shared.clear();
    }
    assert_eq!(dec.finish(&mut events), kept.finish(&mut shared));
    assert_eq!(events, shared);
}

/// Upstream text the gateway passes on: an error message cleaned with a key's masks (the
/// first byte says how long the key is), and the same bytes read as a `Retry-After` value.
/// An alphanumeric key of 8 or more characters never survives the cleaning, wherever it sits.
pub fn upstream_text(data: &[u8]) {
    use crate::config::secret::{Masks, Secret};
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 48).min(rest.len());
    let key = String::from_utf8_lossy(&rest[..n]).into_owned();
    let message = String::from_utf8_lossy(&rest[n..]).into_owned();
    let masks = Masks::of(&[&Secret::new(key.clone())]);
    for text in [
        message.clone(),
        format!("{message}{key}"),
        format!("{}{key}", "x".repeat(495)),
    ] {
        let out = crate::adapters::sanitize::clean(&text, &masks);
        if key.len() >= 8
            && key.bytes().all(|b| b.is_ascii_alphanumeric())
            && !"redacted".contains(&*key)
        {
            assert!(!out.contains(&*key), "the key survived: {out}");
        }
    }
    if let Ok(v) = http::HeaderValue::from_bytes(rest) {
        let _ = crate::upstream::retry::retry_after(&v, 1_800_000_000);
    }
}

/// An upstream answer, whole and as a stream, in the dialect the first byte chooses
/// (Anthropic, Gemini, OpenAI-compatible), written for both client formats.
pub fn response(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let name = match which % 3 {
        0 => "anthropic/claude-sonnet-4-5",
        1 => "gemini/gemini-2.5-flash",
        _ => "openai/gpt-4o",
    };
    let d = deployment(name);
    let Some(adapter) = d.kind().adapter() else {
        return;
    };
    let Ok(req) = ChatRequest::parse(
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        LIMITS,
    ) else {
        return;
    };
    for front in [Front::OpenAi, Front::Anthropic] {
        if let Ok(done) = adapter.parse_response(Bytes::copy_from_slice(body), &req, d) {
            let _ = front.whole(done.body, "m");
        }
    }
    let _ = adapter.parse_error(http::StatusCode::BAD_REQUEST, body, d);
    for front in [Front::OpenAi, Front::Anthropic] {
        stream(adapter, &req, d, front, body);
    }
}

fn stream(adapter: &dyn Adapter, req: &ChatRequest, d: &Deployment, front: Front, body: &[u8]) {
    let mut t = adapter.stream_translator(req, d);
    let mut enc = front.encoder(true, 4, None, "m");
    let mut dec = SseDecoder::new(1 << 16);
    let mut out = BytesMut::new();
    let mut events = Vec::new();
    if dec.feed(body, &mut events).is_err() {
        return;
    }
    if dec.finish(&mut events).is_err() {
        return;
    }
    for e in &events {
        match t.event(e, enc.as_mut(), &mut out) {
            Ok(crate::adapters::Flow::More) => {}
            _ => return,
        }
        out.clear();
    }
    let _ = t.end_of_stream(enc.as_mut(), &mut out);
}

/// The configuration loader: the input as `modelgate.yaml`, as a catalog file and as a policy
/// file (each refused with problems, or loaded).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = env();
    let _ = load_texts(text, &[], &[], &env);
    let _ = load_texts("", &[("fuzz.yaml", text)], &[], &env);
    let _ = load_texts("", &[], &[("fuzz.yaml", text)], &env);
}

struct Prompt(usize);

impl PromptSize for Prompt {
    fn bytes(&self) -> usize {
        self.0
    }
    fn tokens(&self, _: &crate::catalog::Model) -> u64 {
        (self.0 as u64).div_ceil(4)
    }
}

/// Policy evaluation over the built-in catalog, deployments and policies, for a request the
/// input describes: the decision is deterministic, allows each deployment once, allows only
/// deployments the requested name stands for, and never both allows and refuses one.
pub fn policy(data: &[u8]) {
    let s = snapshot();
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let names: Vec<&str> = s
        .deployments
        .iter()
        .map(|d| d.model.id.as_str())
        .chain(s.deployments.iter().map(|d| d.name.as_str()))
        .chain(["auto", "no-such-model"])
        .collect();
    let model = names[usize::from(next()) % names.len()];
    let policies: Vec<&str> = s.config.policies.iter().map(|p| p.name.as_str()).collect();
    let policy = policies
        .get(usize::from(next()) % (policies.len() + 1))
        .copied();
    let labels: Vec<(String, String)> = [
        ("data", ["confidential", "public"]),
        ("purpose", ["research", "product"]),
    ]
    .iter()
    .filter_map(|(k, vs)| {
        let b = next();
        (b % 3 != 0).then(|| ((*k).to_owned(), vs[usize::from(b) % 2].to_owned()))
    })
    .collect();
    let caller = Caller {
        tenant: Arc::from(["default", "product", "research"][usize::from(next()) % 3]),
        policy: policy.map(Arc::from),
        ..Caller::anonymous()
    };
    let flags = next();
    let max_output = (flags & 8 != 0).then(|| u32::from(next()) * 1000);
    let prompt = Prompt(usize::from(next()) * 997);
    let ask = Ask {
        model,
        endpoint: if flags & 16 != 0 {
            EndpointName::Embeddings
        } else {
            EndpointName::ChatCompletions
        },
        caller: &caller,
        labels: &labels,
        needs: Needs {
            tools: flags & 1 != 0,
            vision: flags & 2 != 0,
            choices: (flags & 4 != 0).then_some(u32::from(next() % 8) + 1),
            hosted_tool: (flags & 8 != 0).then_some("web_search"),
        },
        prompt: &prompt,
        max_output,
    };
    let first = crate::policy::decide(&ask, s);
    let again = crate::policy::decide(&ask, s);
    match (first, again) {
        (Ok(a), Ok(b)) => {
            let names = |d: &crate::policy::Decision| -> Vec<String> {
                d.candidates().iter().map(|c| c.name.clone()).collect()
            };
            assert_eq!(names(&a), names(&b), "decide is not deterministic");
            let mut seen = std::collections::HashSet::new();
            let refused = a.refused();
            for c in a.candidates() {
                assert!(seen.insert(&c.name), "{} allowed twice", c.name);
                assert!(
                    model == "auto" || c.model.id == model || c.name == model,
                    "{} does not serve {model}",
                    c.name
                );
                assert!(
                    !refused.iter().any(|(r, _)| Arc::ptr_eq(r, c)),
                    "{} both allowed and refused",
                    c.name
                );
            }
        }
        (Err(_), Err(_)) => {}
        _ => panic!("decide is not deterministic"),
    }
}
