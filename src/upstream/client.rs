//! ⑥ The HTTP clients for upstreams: the only place one is built. Three kinds, built on first
//! use so loading a configuration stays cheap:
//!
//! - the data plane's over HTTPS ([`Pools::data`], one per connect timeout): hyper-util's
//!   pooled client, with rustls for TLS (HTTP/2 where the upstream offers it through ALPN).
//!   reqwest's layers around this same client (a redirect layer that parses every URL again
//!   with IDNA, header maps copied, futures boxed) cost a fifth of a request's CPU.
//! - the data plane's over plain HTTP ([`Pools::plain`], one per authority and connect
//!   timeout): hyper's HTTP/1.1 connections in a pool of our own (`plain`), which costs less
//!   per request than hyper-util's.
//! - the control plane's ([`Pools::control`]): reqwest, for discovery and probes, which are
//!   rare and read JSON.
//!
//! Both follow no redirect and take no proxy from the environment: a request goes exactly where
//! the configuration says. The pools belong to the running gateway, not to the configuration or
//! the process, and are kept across reloads, so a reload that keeps an endpoint keeps its
//! connections.

use std::pin::Pin;
use std::sync::{Arc, Once, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::HeaderValue;
use http::uri::Authority;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::plain::HostPool;

static CRYPTO: Once = Once::new();

/// How long an idle connection is kept.
pub(super) const IDLE: Duration = Duration::from_secs(90);

/// TCP keepalive's idle time on upstream connections.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(60);

/// A request body: the whole of it, made before the call.
pub(crate) type Body = Full<Bytes>;

/// The data plane's client.
pub(crate) type Http =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// An upstream's answer.
pub(crate) type Response = http::Response<super::plain::UpBody>;

/// A transport error of the data plane.
pub(crate) type Error = hyper_util::client::legacy::Error;

/// An answer's body as a stream of chunks.
pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

/// The answer's body, chunk by chunk (trailers, which no model API sends, are skipped).
pub(crate) fn chunks(response: Response) -> ByteStream {
    Box::pin(http_body_util::BodyDataStream::new(response.into_body()))
}

/// Who is calling, on every upstream request.
pub(crate) static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("modelgate/", env!("CARGO_PKG_VERSION")));

type Slot<T> = Arc<OnceLock<Result<T, String>>>;
type Book<T> = RwLock<crate::base::FastMap<Duration, Slot<T>>>;
type PlainBook = RwLock<crate::base::FastMap<(Authority, Duration), Arc<HostPool>>>;

/// The connection pools of one gateway: clients per connect timeout, built on first use.
/// Owned by the running gateway (two in one process share nothing).
#[derive(Debug)]
pub(crate) struct Pools {
    /// Idle connections kept per upstream host.
    idle_per_host: usize,
    data: Book<Arc<Http>>,
    plain: PlainBook,
    control: Book<reqwest::Client>,
}

impl Pools {
    /// Pools that keep up to `idle_per_host` idle connections per upstream host: as many as
    /// requests may be in flight, since a cap below the concurrency closes connections after
    /// every burst and opens them again on the next, which costs the most exactly when the
    /// gateway is busiest.
    pub(crate) fn new(idle_per_host: usize) -> Pools {
        Pools {
            idle_per_host: idle_per_host.max(1),
            data: RwLock::default(),
            plain: RwLock::default(),
            control: RwLock::default(),
        }
    }

    /// The data plane's client for endpoints with this connect timeout.
    pub(crate) fn data(&self, connect: Duration) -> Result<Arc<Http>, String> {
        slot(&self.data, connect, || {
            make_data(connect, self.idle_per_host).map(Arc::new)
        })
    }

    /// The plain-HTTP connections to `authority` with this connect timeout.
    pub(crate) fn plain(&self, authority: &Authority, connect: Duration) -> Arc<HostPool> {
        let key = (authority.clone(), connect);
        if let Some(pool) = self
            .plain
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return pool.clone();
        }
        let idle = self.idle_per_host;
        self.plain
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| Arc::new(HostPool::new(authority.clone(), connect, idle)))
            .clone()
    }

    /// The control plane's client (discovery, probes) for endpoints with this connect timeout.
    pub(crate) fn control(&self, connect: Duration) -> Result<reqwest::Client, String> {
        slot(&self.control, connect, || make_control(connect))
    }
}

impl Default for Pools {
    fn default() -> Pools {
        Pools::new(1024)
    }
}

fn slot<T: Clone>(
    book: &Book<T>,
    connect: Duration,
    make: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let known = book
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&connect)
        .cloned();
    let slot = match known {
        Some(slot) => slot,
        None => book
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(connect)
            .or_default()
            .clone(),
    };
    slot.get_or_init(make).clone()
}

/// Installs the TLS crypto provider (ring) for every rustls user in the process, once.
pub fn install_crypto() {
    CRYPTO.call_once(|| {
        // Fails only when another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn make_data(connect: Duration, idle_per_host: usize) -> Result<Http, String> {
    install_crypto();
    let mut http = HttpConnector::new();
    // The connector also serves `https` URLs (the TLS layer wraps it).
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect));
    http.set_nodelay(true);
    http.set_keepalive(Some(KEEPALIVE));
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        // The platform's verifier: the system's roots and its revocation rules, as reqwest's
        // default (and the control plane) has them.
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(idle_per_host)
            // HTTP/2 connections are kept alive by pings, so a dead one is found before a request
            // waits on it.
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .build(tls),
    )
}

fn make_control(connect: Duration) -> Result<reqwest::Client, String> {
    install_crypto();
    #[expect(
        clippy::disallowed_methods,
        reason = "this is the one place clients are built"
    )]
    let builder = reqwest::Client::builder();
    builder
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(IDLE)
        .user_agent(concat!("modelgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// An `https` upstream gets TLS offering HTTP/2 and HTTP/1.1, never plain text; a peer that
    /// is not TLS is a transport error, not a hang or a panic.
    #[tokio::test]
    async fn https_upstreams_get_tls_with_h2_offered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut hello = vec![0u8; 2048];
            let n = s.read(&mut hello).await.unwrap();
            hello.truncate(n);
            hello
        });
        let pools = Pools::new(4);
        let client = pools.data(Duration::from_secs(1)).unwrap();
        let uri: http::Uri = format!("https://localhost:{}/v1/chat/completions", addr.port())
            .parse()
            .unwrap();
        let mut req = http::Request::new(Body::new(Bytes::from_static(b"{}")));
        *req.uri_mut() = uri;
        let sent = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
        assert!(matches!(sent, Ok(Err(_))), "a peer that is not TLS fails");
        let hello = peer.await.unwrap();
        assert_eq!(
            hello.first(),
            Some(&0x16),
            "a TLS handshake record comes first"
        );
        let has = |n: &[u8]| hello.windows(n.len()).any(|w| w == n);
        assert!(has(b"h2") && has(b"http/1.1"), "ALPN offers both");
        assert!(has(b"localhost"), "the server name is sent");
        assert!(!has(b"POST"), "nothing in plain text");
    }

    #[test]
    fn one_client_per_connect_timeout() {
        let pools = Pools::new(4);
        let a = pools.data(Duration::from_secs(1)).unwrap();
        let b = pools.data(Duration::from_secs(1)).unwrap();
        let c = pools.data(Duration::from_secs(2)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
