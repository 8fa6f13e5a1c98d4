//! Load: open-loop requests at a fixed rate (each sent when due, never after an answer, so a
//! slow server cannot hide queueing), and concurrent streams checked byte for byte.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

pub fn client() -> reqwest::Client {
    modelgate::upstream::client::install_crypto();
    #[expect(clippy::disallowed_methods, reason = "the load generator's own client")]
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    c
}

#[derive(Default)]
pub struct Outcome {
    /// Latencies of the successful requests.
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// How late each request left against its schedule: tokio's timer, which paces the load,
    /// ticks in whole milliseconds.
    pub late: Vec<Duration>,
    /// Each request's send time (from when the first was due) and how long it took, answered
    /// or not, in the order they finished: P1 writes them out when asked.
    pub series: Vec<(Duration, Duration)>,
}

impl Outcome {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }
}

pub fn chat_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 64
    })
    .to_string()
}

/// The client of the whole-answer scenarios: hyper's own pooled client, lighter than reqwest,
/// so that the load generator (which shares its core with the mock) stays out of the way at
/// the highest rates.
pub type Fast = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn fast() -> Fast {
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(conn)
}

/// One POST of `body`, its answer read whole: the status, and whether it was a 200 read to
/// the end within a minute.
async fn post(client: &Fast, uri: &http::Uri, body: &bytes::Bytes) -> (Option<u16>, bool) {
    use http_body_util::BodyExt;
    let req = http::Request::post(uri.clone())
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(body.clone()))
        .unwrap();
    let call = async {
        let r = client.request(req).await.ok()?;
        let status = r.status().as_u16();
        let read = r.into_body().collect().await.is_ok();
        Some((status, read && status == 200))
    };
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(Some((status, ok))) => (Some(status), ok),
        _ => (None, false),
    }
}

/// `rate` requests per second for `duration`, each due at its own instant and timed from when
/// it was sent, as oha times by default. Timed from when it was due, every latency carried the
/// pacing timer's lateness (about 1 ms at the median, the same for every path but uneven from
/// run to run), five times the added latencies being compared. The sender never waits for an
/// answer, so a slow server cannot hide queueing either way.
pub async fn open_loop(
    client: &Fast,
    url: &str,
    body: &str,
    rate: u32,
    duration: Duration,
) -> Outcome {
    let uri: http::Uri = url.parse().unwrap();
    let body = bytes::Bytes::copy_from_slice(body.as_bytes());
    let n = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, uri, body, out) = (client.clone(), uri.clone(), body.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = post(&client, &uri, &body).await;
            let took = sent.elapsed();
            let mut o = out.lock().unwrap();
            o.late.push(sent.saturating_duration_since(due));
            o.series.push((sent.saturating_duration_since(start), took));
            if let Some(s) = result.0 {
                *o.statuses.entry(s).or_default() += 1;
            }
            if result.1 {
                o.latencies.push(took);
            } else {
                o.errors += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(out).ok().unwrap().into_inner().unwrap()
}

/// `concurrency` workers sending back to back for `duration`: the closed-loop maximum, in
/// requests per second (successful ones), and the errors.
pub async fn closed_loop(
    client: &Fast,
    url: &str,
    body: &str,
    concurrency: usize,
    duration: Duration,
) -> (f64, usize) {
    let uri: http::Uri = url.parse().unwrap();
    let body = bytes::Bytes::copy_from_slice(body.as_bytes());
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, uri, body) = (client.clone(), uri.clone(), body.clone());
            tokio::spawn(async move {
                let (mut ok, mut err) = (0usize, 0usize);
                while Instant::now() < end {
                    if post(&client, &uri, &body).await.1 {
                        ok += 1;
                    } else {
                        err += 1;
                    }
                }
                (ok, err)
            })
        })
        .collect();
    let (mut ok, mut err) = (0, 0);
    for t in tasks {
        let (o, e) = t.await.unwrap_or((0, 1));
        ok += o;
        err += e;
    }
    (ok as f64 / start.elapsed().as_secs_f64(), err)
}

/// What one stream showed the client.
pub struct StreamSeen {
    pub ok: bool,
    pub ttft: Duration,
    pub gaps: Vec<Duration>,
}

/// One streaming request; `ok` when the content is exactly `w0 … w(n-1) ` and the stream
/// ends with `[DONE]`.
pub async fn one_stream(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    chunks: usize,
) -> StreamSeen {
    let started = Instant::now();
    let mut seen = StreamSeen {
        ok: false,
        ttft: Duration::ZERO,
        gaps: Vec::with_capacity(chunks),
    };
    let Ok(r) = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
    else {
        return seen;
    };
    if r.status() != 200 {
        return seen;
    }
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    let mut text = String::new();
    let mut last: Option<Instant> = None;
    let mut done = false;
    while let Some(Ok(bytes)) = body.next().await {
        buf.extend_from_slice(&bytes);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let Some(data) = std::str::from_utf8(&event)
                .ok()
                .and_then(|e| e.trim().strip_prefix("data: "))
            else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                return seen;
            };
            if let Some(c) = v
                .pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
            {
                if c.is_empty() {
                    continue;
                }
                let now = Instant::now();
                match last {
                    None => seen.ttft = now - started,
                    Some(l) => seen.gaps.push(now - l),
                }
                last = Some(now);
                text.push_str(c);
            }
        }
    }
    let want: String = (0..chunks).map(super::mock::word).collect();
    seen.ok = done && text == want;
    seen
}

/// `n` streams at once.
pub async fn streams(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    n: usize,
    chunks: usize,
) -> Vec<StreamSeen> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.to_owned(), body.to_owned());
            tokio::spawn(async move { one_stream(&client, &url, &body, chunks).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(s) = t.await {
            out.push(s);
        }
    }
    out
}

/// Streams started at `rate` per second for `duration`, each due at its own instant; the time
/// to first token counts from when the stream was sent (see `open_loop`).
pub async fn streams_open_loop(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    rate: u32,
    duration: Duration,
    chunks: usize,
) -> Vec<StreamSeen> {
    let n = (f64::from(rate) * duration.as_secs_f64()) as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, body) = (client.clone(), url.to_owned(), body.to_owned());
        tasks.push(tokio::spawn(async move {
            one_stream(&client, &url, &body, chunks).await
        }));
    }
    let mut out = Vec::with_capacity(n as usize);
    for t in tasks {
        if let Ok(s) = t.await {
            out.push(s);
        }
    }
    out
}

pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}
