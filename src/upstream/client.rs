//! ⑥ The HTTP client for upstreams: the only place one is built. Endpoints with the same
//! connect timeout share one client, and so one connection pool (reqwest keeps idle connections
//! per host). Clients are built on first use, so loading a configuration stays cheap; the
//! pools belong to the running gateway, not to the configuration or the process. Redirects
//! are never followed and no proxy is taken from the environment: a request goes exactly where
//! the configuration says.

use std::collections::HashMap;
use std::sync::{Arc, Once, OnceLock, PoisonError, RwLock};
use std::time::Duration;

type Slot = Arc<OnceLock<Result<reqwest::Client, String>>>;

static CRYPTO: Once = Once::new();

/// The connection pools of one gateway: a client per connect timeout, built on first use.
/// Owned by the running gateway (two in one process share nothing) and kept across reloads,
/// so a reload that keeps an endpoint keeps its connections.
#[derive(Debug)]
pub(crate) struct Pools {
    /// Idle connections kept per upstream host.
    idle_per_host: usize,
    clients: RwLock<HashMap<Duration, Slot>>,
}

impl Pools {
    /// Pools that keep up to `idle_per_host` idle connections per upstream host: as many as
    /// requests may be in flight, since a cap below the concurrency closes connections after
    /// every burst and opens them again on the next, which costs the most exactly when the
    /// gateway is busiest.
    pub(crate) fn new(idle_per_host: usize) -> Pools {
        Pools {
            idle_per_host: idle_per_host.max(1),
            clients: RwLock::default(),
        }
    }

    /// The client for endpoints with this connect timeout.
    pub(crate) fn client(&self, connect: Duration) -> Result<reqwest::Client, String> {
        let known = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&connect)
            .cloned();
        let slot = match known {
            Some(slot) => slot,
            None => self
                .clients
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(connect)
                .or_default()
                .clone(),
        };
        slot.get_or_init(|| make(connect, self.idle_per_host))
            .clone()
    }
}

impl Default for Pools {
    fn default() -> Pools {
        Pools::new(1024)
    }
}

/// Installs the TLS crypto provider (ring) for every rustls user in the process, once.
pub fn install_crypto() {
    CRYPTO.call_once(|| {
        // Fails only when another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn make(connect: Duration, idle_per_host: usize) -> Result<reqwest::Client, String> {
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
        // Idle connections close after 90 s.
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(idle_per_host)
        .user_agent(concat!("modelgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
