use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Wake;

use futures_util::stream;

use super::*;
use crate::adapters::Adapter;
use crate::adapters::openai_compat::OpenAiCompat;
use crate::config::Origin;
use crate::config::load::{Overrides, load};
use crate::exchange::chat::{ChatRequest, RequestLimits};
use tokio::time::Instant;

const FIRST: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\
    \"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\
    \"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
const LAST: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\
    \"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
    data: [DONE]\n\n";

/// A relay of `chunks` (then nothing, for as long as it is read), primed.
async fn primed(chunks: Vec<String>) -> Box<Relay> {
    let upstream: ByteStream = Box::pin(
        stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))).chain(stream::pending()),
    );
    primed_with(
        upstream,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await
}

/// A relay of `upstream` within `idle` and `backstop`, primed.
/// The relay is made `before` its answer's head comes (while the request is on its way).
async fn primed_with(
    upstream: ByteStream,
    idle: Duration,
    backstop: Duration,
    before: Duration,
) -> Box<Relay> {
    let env: HashMap<String, String> = [("OPENAI_API_KEY".to_owned(), "sk-test".to_owned())].into();
    let loaded = load(&Origin::Embedded, &Overrides::default(), &env).expect("the built-in config");
    let d = (loaded.config.deployments.iter())
        .find(|d| d.name == "openai/gpt-4o")
        .expect("a deployment")
        .clone();
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = ChatRequest::parse(body.as_bytes(), RequestLimits::default()).expect("a request");
    let encoder = crate::api::Front::OpenAi.encoder(false, 1, None, "gpt-4o");
    let bounds = Bounds {
        max_line: 1 << 20,
        idle,
        backstop,
    };
    let mut relay = Box::new(Relay::new(
        OpenAiCompat.stream_translator(&req, &d),
        encoder,
        bounds,
        None,
        Masks::default(),
    ));
    tokio::time::sleep(before).await;
    relay.attach(upstream);
    let limit = std::pin::pin!(tokio::time::sleep(Duration::from_secs(60)));
    assert_eq!(relay.prime(limit).await, Primed::Ready);
    relay
}

/// Everything the relay writes, to its end.
async fn read_all(relay: &mut Relay) -> String {
    let mut body = String::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *relay).poll_frame(cx)).await {
        let data = frame.expect("infallible").into_data().expect("data");
        body.push_str(&String::from_utf8_lossy(&data));
    }
    body
}

/// The first content, then a chunk of one word every `every`, for ever.
fn steady(every: Duration) -> ByteStream {
    let word = FIRST.replace("Hel", "lo");
    let rest = stream::unfold(word, move |word| async move {
        tokio::time::sleep(every).await;
        Some((Ok(Bytes::from(word.clone())), word))
    });
    Box::pin(stream::iter([Ok(Bytes::from_static(FIRST.as_bytes()))]).chain(rest))
}

#[tokio::test(start_paused = true)]
async fn an_upstream_quiet_past_the_idle_timeout_ends_the_stream_with_an_error() {
    let started = Instant::now();
    let mut relay = primed_with(
        steady(Duration::from_secs(3600)),
        Duration::from_secs(2),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .await;
    let log = Log::default();
    watched(&mut relay, &log);
    let body = read_all(&mut relay).await;
    assert!(
        body.contains("upstream_idle_timeout") && !body.contains("[DONE]"),
        "{body}"
    );
    assert_eq!(started.elapsed().as_secs(), 2);
    assert_eq!(logged(&log), ["first", "second", "end: idle_timeout"]);
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_outlives_its_idle_timeout_and_ends_at_its_backstop() {
    let started = Instant::now();
    // A chunk every 700 ms, an idle timeout of 1 s: never quiet for that long.
    let mut relay = primed_with(
        steady(Duration::from_millis(700)),
        Duration::from_secs(1),
        Duration::from_secs(10),
        Duration::ZERO,
    )
    .await;
    let log = Log::default();
    watched(&mut relay, &log);
    let body = read_all(&mut relay).await;
    assert!(
        body.contains("stream_too_long") && !body.contains("[DONE]"),
        "{body}"
    );
    assert_eq!(body.matches("\"content\":\"lo\"").count(), 14, "{body}");
    assert_eq!(started.elapsed().as_secs(), 10);
    assert_eq!(logged(&log), ["first", "second", "end: too_long"]);
}

/// Counts its wakes.
#[derive(Default)]
struct Wakes(Mutex<usize>);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        *self.0.lock().expect("not poisoned") += 1;
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// Notes in `log` when each of two `later`s runs, and how the stream ended.
fn watched(relay: &mut Relay, log: &Log) {
    for name in ["first", "second"] {
        let log = log.clone();
        relay.later(move |_| log.lock().expect("not poisoned").push(name.to_owned()));
    }
    let log = log.clone();
    relay.on_end(Box::new(move |end| {
        (log.lock().expect("not poisoned")).push(format!("end: {}", end.reason.as_str()));
    }));
}

fn poll(relay: &mut Relay, wakes: &Arc<Wakes>) -> Poll<Option<Bytes>> {
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    Pin::new(relay)
        .poll_frame(&mut cx)
        .map(|f| f.map(|f| f.expect("infallible").into_data().expect("data")))
}

fn logged(log: &Log) -> Vec<String> {
    log.lock().expect("not poisoned").clone()
}

#[tokio::test]
async fn the_bookkeeping_of_a_streams_start_runs_after_its_first_bytes_are_written() {
    let mut relay = primed(vec![FIRST.to_owned()]).await;
    let log = Log::default();
    watched(&mut relay, &log);
    let wakes = Arc::new(Wakes::default());
    // The first bytes, before anything of the bookkeeping.
    let Poll::Ready(Some(first)) = poll(&mut relay, &wakes) else {
        panic!("the first content")
    };
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    assert!(logged(&log).is_empty());
    // hyper asks again before it writes them: the relay yields, and wakes itself.
    assert!(poll(&mut relay, &wakes).is_pending());
    assert_eq!(*wakes.0.lock().expect("not poisoned"), 1);
    assert!(logged(&log).is_empty());
    // On the next poll, the bookkeeping, in the order given; then the upstream, which has
    // nothing yet.
    assert!(poll(&mut relay, &wakes).is_pending());
    assert_eq!(logged(&log), ["first", "second"]);
    assert!(poll(&mut relay, &wakes).is_pending());
    drop(relay);
    assert_eq!(logged(&log), ["first", "second", "end: client_gone"]);
}

#[tokio::test]
async fn a_stream_dropped_before_its_first_bytes_still_runs_its_bookkeeping_before_its_end() {
    let mut relay = primed(vec![FIRST.to_owned()]).await;
    let log = Log::default();
    watched(&mut relay, &log);
    drop(relay);
    assert_eq!(logged(&log), ["first", "second", "end: client_gone"]);
}

#[tokio::test]
async fn a_stream_whole_in_its_first_chunk_runs_its_bookkeeping_before_its_end() {
    let mut relay = primed(vec![format!("{FIRST}{LAST}")]).await;
    let log = Log::default();
    watched(&mut relay, &log);
    let wakes = Arc::new(Wakes::default());
    let mut body = String::new();
    loop {
        match poll(&mut relay, &wakes) {
            Poll::Ready(Some(b)) => body.push_str(&String::from_utf8_lossy(&b)),
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
        assert!(body.len() < 1 << 16, "the stream ends");
    }
    assert!(
        body.contains("Hel") && body.ends_with("data: [DONE]\n\n"),
        "{body}"
    );
    assert_eq!(logged(&log), ["first", "second", "end: completed"]);
}

#[tokio::test(start_paused = true)]
async fn the_backstop_counts_from_the_answers_head_not_from_when_the_relay_was_made() {
    // Made 4 s before the head came: the 10 s still run from the head.
    let mut relay = primed_with(
        steady(Duration::from_millis(700)),
        Duration::from_secs(1),
        Duration::from_secs(10),
        Duration::from_secs(4),
    )
    .await;
    let headed = Instant::now();
    let body = read_all(&mut relay).await;
    assert!(body.contains("stream_too_long"), "{body}");
    assert_eq!(headed.elapsed().as_secs(), 10);
}
