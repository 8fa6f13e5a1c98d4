//! Deployments: a model served somewhere. The [`Endpoint`] is the place (dialect, URL, key,
//! locality, timeouts, connection pool); a [`Deployment`] is one model at one endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;

use super::spec::{DataHandlingSpec, Kind, Locality};
use crate::catalog::{Model, Price};
use crate::upstream::client::UpstreamClient;

/// Per-phase timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

/// Where models are served: shared by every deployment on the same backend.
#[derive(Debug)]
pub struct Endpoint {
    /// The deployment name (or, for discovering backends, the backend's name).
    pub name: String,
    pub kind: Kind,
    pub provider: String,
    /// Base URL without a trailing slash; empty for `echo`.
    pub base_url: String,
    /// The header that carries the key (`authorization: Bearer …`), marked sensitive.
    pub auth_header: Option<(http::HeaderName, HeaderValue)>,
    pub locality: Locality,
    pub data: DataHandlingSpec,
    pub region: Option<String>,
    pub quantization: Option<String>,
    /// A price set on the deployment itself.
    pub price_override: Option<(f64, f64)>,
    pub stream_usage: bool,
    pub timeouts: Timeouts,
    /// The connection pool for this endpoint.
    pub client: UpstreamClient,
}

/// One model at one endpoint.
#[derive(Debug)]
pub struct Deployment {
    pub name: String,
    pub model: Arc<Model>,
    /// The name the backend knows the model by.
    pub upstream_model: String,
    pub endpoint: Arc<Endpoint>,
    /// What a million tokens cost here.
    pub price: Price,
    /// Set when the backend listed this model itself.
    pub discovered_as: Option<String>,
    /// The response headers that name this deployment, made once.
    pub response_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// What was observed of it while this snapshot was in force.
    pub stats: DeploymentStats,
}

/// Observed behaviour of a deployment, for the `fastest` preference.
#[derive(Debug, Default)]
pub struct DeploymentStats {
    /// Moving average of the time to response headers, in microseconds; 0 before any.
    first_byte_micros: AtomicU64,
}

impl DeploymentStats {
    /// Folds one observation into the moving average (weight 1/5).
    pub fn observe_first_byte(&self, d: Duration) {
        let x = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .first_byte_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 { x } else { (old * 4 + x) / 5 })
            });
    }

    /// The average time to first byte, if any was observed.
    pub fn latency_seconds(&self) -> Option<f64> {
        match self.first_byte_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1e6),
        }
    }
}

impl Deployment {
    /// A deployment with a configured model.
    pub fn configured(
        name: String,
        endpoint: Arc<Endpoint>,
        model: Arc<Model>,
        upstream_model: String,
    ) -> Deployment {
        let price = effective_price(&endpoint, &model);
        Deployment {
            name,
            model,
            upstream_model,
            endpoint,
            price,
            discovered_as: None,
            response_headers: Vec::new(),
            stats: DeploymentStats::default(),
        }
        .with_headers()
    }

    /// A deployment for a model a backend listed.
    pub fn discovered(endpoint: Arc<Endpoint>, model: Arc<Model>, served: &str) -> Deployment {
        let price = effective_price(&endpoint, &model);
        Deployment {
            name: format!("{}/{}", endpoint.name, served),
            model,
            upstream_model: served.to_owned(),
            endpoint,
            price,
            discovered_as: Some(served.to_owned()),
            response_headers: Vec::new(),
            stats: DeploymentStats::default(),
        }
        .with_headers()
    }

    fn with_headers(mut self) -> Deployment {
        self.response_headers = crate::stream::respond::deployment_headers(&self);
        self
    }

    pub fn kind(&self) -> Kind {
        self.endpoint.kind
    }
}

/// The deployment's own price, else the list price for remote deployments, else nothing
/// (local and in-cluster serving costs what the operator says, 0 by default).
fn effective_price(ep: &Endpoint, model: &Model) -> Price {
    if let Some((input, output)) = ep.price_override {
        return Price {
            input,
            output,
            ..Price::default()
        };
    }
    match (ep.locality, &model.price) {
        (Locality::Remote, Some(p)) => p.clone(),
        _ => Price::default(),
    }
}
