//! ⑥ The HTTP client for upstreams: the only place one is built. One per endpoint, so each
//! upstream has its own connection pool and connect timeout. Redirects are never followed and
//! no proxy is taken from the environment: a request goes exactly where the configuration says.

use std::sync::Once;
use std::time::Duration;

use crate::config::Timeouts;

/// A pooled client for one endpoint.
#[derive(Clone, Debug)]
pub struct UpstreamClient(pub(crate) reqwest::Client);

static CRYPTO: Once = Once::new();

/// Builds the client for an endpoint.
pub fn build(timeouts: &Timeouts) -> Result<UpstreamClient, String> {
    CRYPTO.call_once(|| {
        // Fails only when another provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    #[expect(
        clippy::disallowed_methods,
        reason = "this is the one place clients are built"
    )]
    let builder = reqwest::Client::builder();
    builder
        .connect_timeout(timeouts.connect)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .user_agent(concat!("modelgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map(UpstreamClient)
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
