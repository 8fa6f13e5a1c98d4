//! ⑥ The HTTP client for upstreams: the only place one is built. Endpoints with the same
//! connect timeout share one client, and so one connection pool (reqwest keeps idle connections
//! per host). Clients are built on first use, so loading a configuration stays cheap. Redirects
//! are never followed and no proxy is taken from the environment: a request goes exactly where
//! the configuration says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};
use std::time::Duration;

use crate::config::Timeouts;

type Slot = Arc<OnceLock<Result<reqwest::Client, String>>>;

/// The (lazily built) client of an endpoint.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    connect: Duration,
    slot: Slot,
}

static CRYPTO: Once = Once::new();
/// Idle connections kept per upstream host: `server.max_concurrent_requests` at start-up.
static IDLE_PER_HOST: AtomicUsize = AtomicUsize::new(1024);

/// Sets how many idle connections clients built from now on keep per host.
pub fn set_idle_per_host(n: usize) {
    IDLE_PER_HOST.store(n.max(1), Ordering::Relaxed);
}
static SHARED: OnceLock<Mutex<HashMap<Duration, Slot>>> = OnceLock::new();

/// The client for an endpoint with these timeouts.
pub fn build(timeouts: &Timeouts) -> UpstreamClient {
    let shared = SHARED.get_or_init(Mutex::default);
    let slot = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(timeouts.connect)
        .or_default()
        .clone();
    UpstreamClient {
        connect: timeouts.connect,
        slot,
    }
}

impl UpstreamClient {
    /// The client, built on first use.
    pub fn get(&self) -> Result<&reqwest::Client, &str> {
        self.slot
            .get_or_init(|| make(self.connect))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Installs the TLS crypto provider (ring) for every rustls user in the process, once.
pub fn install_crypto() {
    CRYPTO.call_once(|| {
        // Fails only when another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn make(connect: Duration) -> Result<reqwest::Client, String> {
    install_crypto();
    #[expect(
        clippy::disallowed_methods,
        reason = "this is the one place clients are built"
    )]
    let builder = reqwest::Client::builder();
    builder
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none())
        // Retries are the attempt loop's, counted against the retry budget and the policy.
        // reqwest's own (replaying HTTP/2 refusals) would also copy every request to be able
        // to; a refused stream now reaches the loop as an I/O error and is retried there.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .no_proxy()
        .tcp_nodelay(true)
        // As many idle connections per host as requests may be in flight: a cap below the
        // concurrency closes connections after every burst and opens them again on the next,
        // which costs the most exactly when the gateway is busiest. Idle ones close after 90 s.
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(IDLE_PER_HOST.load(Ordering::Relaxed))
        .user_agent(concat!("modelgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
