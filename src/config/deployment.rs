//! Deployments: a model served somewhere. The [`Endpoint`] is the place (dialect, URL, key,
//! locality, timeouts, connection pool); a [`Deployment`] is one model at one endpoint.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::spec::{DataHandlingSpec, Kind, Locality};
use crate::catalog::{Model, Price};
use crate::config::resilience::{BreakerConfig, RetryPolicy};

/// Per-phase timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) first_byte: Duration,
    pub(crate) first_token: Duration,
    pub(crate) idle: Duration,
    pub(crate) total: Duration,
    pub(crate) stream_total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(120),
            first_token: Duration::from_secs(120),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(600),
            stream_total: Duration::from_secs(1800),
        }
    }
}

/// Where models are served: shared by every deployment on the same backend.
#[derive(Debug)]
pub struct Endpoint {
    /// The deployment name (or, for discovering backends, the backend's name).
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) provider: String,
    /// Base URL without a trailing slash; empty for `echo`.
    pub(crate) base_url: String,
    /// The `Host` header of its requests when they go in plain HTTP/1.1, made once (over
    /// HTTPS the client sets it, since HTTP/2 carries the authority in a pseudo-header).
    pub(crate) host: Option<HeaderValue>,
    /// The header that carries the key (`authorization: Bearer …`), marked sensitive.
    pub(crate) auth_header: Option<(http::HeaderName, HeaderValue)>,
    /// The key in every form an upstream could echo it in, masked in any text passed on.
    pub(crate) masks: super::secret::Masks,
    pub(crate) locality: Locality,
    pub(crate) data: DataHandlingSpec,
    pub(crate) region: Option<String>,
    pub(crate) quantization: Option<String>,
    /// Models it lists that cannot be identified are not served.
    pub(crate) refuse_unidentified: bool,
    /// The digest its weights must have.
    pub(crate) expect: Option<crate::catalog::identify::Digest>,
    /// A price set on the deployment itself.
    pub(crate) price_override: Option<(f64, f64)>,
    pub(crate) stream_usage: bool,
    pub(crate) timeouts: Timeouts,
    pub(crate) retry: RetryPolicy,
    /// Outlier ejection; `None` when turned off.
    pub(crate) breaker: Option<BreakerConfig>,
    /// Requests and tokens per minute it may be sent, as a limit scope named after it.
    pub(crate) limits: Option<crate::config::scopes::Scope>,
    /// Its answers carry the notice of their model's license.
    pub(crate) notices: bool,
    /// Requests to it carry the trace context, when traces are exported.
    pub(crate) trace_context: bool,
}

/// Where a deployment's requests go, parsed once when it is prepared (`None` where the base
/// URL does not make a valid URL).
#[derive(Clone, Debug, Default)]
pub(crate) struct Urls {
    chat: Option<[http::Uri; 2]>,
    pub(crate) responses: Option<http::Uri>,
    pub(crate) embeddings: Option<http::Uri>,
    pub(crate) count_tokens: Option<http::Uri>,
}

/// One model at one endpoint.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub name: String,
    pub(crate) model: Arc<Model>,
    /// The name the backend knows the model by.
    pub(crate) upstream_model: String,
    pub(crate) endpoint: Arc<Endpoint>,
    /// What a million tokens cost here.
    pub(crate) price: Price,
    /// Set when the backend listed this model itself.
    pub(crate) discovered_as: Option<String>,
    /// How its model was identified, and from what.
    pub(crate) identity: Arc<crate::catalog::identify::Identity>,
    /// The headers of its answers, made once.
    pub(crate) response_headers: AnswerHeaders,
    /// Its place in its snapshot's deployments: what run-time state about it is kept by.
    pub(crate) index: usize,
    /// Where chat requests go, whole and streamed, parsed once (none for `echo`, or when the
    /// base URL does not parse).
    urls: Arc<Urls>,
    /// The model its usage is recorded under (its metrics' `model` label).
    pub(crate) usage_model: Arc<str>,
    /// Its fields of a request's log line (name, model, provider, openness, license), written
    /// by the first line that names it, in the format then installed, and copied after.
    pub(crate) log_fields: std::sync::OnceLock<Box<str>>,
}

impl Deployment {
    /// Whether `other` (of another snapshot) is the same model at the same place with the same
    /// facts: what a policy decided about one holds for the other.
    pub(crate) fn same_place(&self, other: &Deployment) -> bool {
        let (a, b) = (&self.endpoint, &other.endpoint);
        self.model.id == other.model.id
            && self.upstream_model == other.upstream_model
            // Identified the same way: a backend that swapped weights under the same name is
            // not the same place.
            && self.model.uncatalogued == other.model.uncatalogued
            && self.identity.model == other.identity.model
            && self.identity.basis == other.identity.basis
            && self.locality() == other.locality()
            && (Arc::ptr_eq(a, b)
                || (a.kind == b.kind
                    && a.base_url == b.base_url
                    && a.auth_header == b.auth_header
                    && a.locality == b.locality
                    && a.data == b.data
                    && a.region == b.region
                    && a.provider == b.provider))
    }

    /// Where its model runs, as far as anything shows: unknown (`None`) for a model that was
    /// not identified or was identified by its served name alone, since the address says where
    /// the server runs, not the model (a proxy on loopback may front any API); remote for a
    /// model without published weights, which
    /// runs only at its provider; the endpoint's locality otherwise.
    pub(crate) fn locality(&self) -> Option<Locality> {
        use crate::catalog::identify::Basis;
        if self.model.uncatalogued {
            None
        } else if !self.model.artifacts.weights && self.endpoint.kind != Kind::Echo {
            Some(Locality::Remote)
        } else if self.identity.basis == Basis::Name && self.endpoint.locality != Locality::Remote {
            // Only a name says which model it is, and a proxy on this machine may serve any
            // name from anywhere (`llama-3.3-70b-versatile` is Groq's API): where the model
            // runs is not known.
            None
        } else {
            Some(self.endpoint.locality)
        }
    }

    /// The quantization of the served weights, where known.
    pub(crate) fn quantization(&self) -> Option<&str> {
        self.identity
            .quantization
            .as_deref()
            .or(self.endpoint.quantization.as_deref())
    }

    /// A deployment with a configured model.
    pub(crate) fn configured(
        name: String,
        endpoint: Arc<Endpoint>,
        model: Arc<Model>,
        upstream_model: String,
    ) -> Deployment {
        let price = effective_price(&endpoint, &model);
        Deployment {
            identity: Arc::new(crate::catalog::identify::Identity::configured(
                &model.id,
                endpoint.quantization.clone(),
            )),
            name,
            model,
            upstream_model,
            endpoint,
            price,
            discovered_as: None,
            response_headers: AnswerHeaders::default(),
            index: 0,
            urls: Arc::default(),
            usage_model: Arc::from(""),
            log_fields: std::sync::OnceLock::new(),
        }
        .prepared()
    }

    /// A deployment for a model a backend listed, identified as `identity` says.
    pub(crate) fn discovered(
        endpoint: Arc<Endpoint>,
        model: Arc<Model>,
        served: &str,
        identity: crate::catalog::identify::Identity,
    ) -> Deployment {
        let price = effective_price(&endpoint, &model);
        Deployment {
            identity: Arc::new(identity),
            name: format!("{}/{}", endpoint.name, served),
            model,
            upstream_model: served.to_owned(),
            endpoint,
            price,
            discovered_as: Some(served.to_owned()),
            response_headers: AnswerHeaders::default(),
            index: 0,
            urls: Arc::default(),
            usage_model: Arc::from(""),
            log_fields: std::sync::OnceLock::new(),
        }
        .prepared()
    }

    /// The same deployment at place `index` of a snapshot.
    pub(crate) fn at_index(&self, index: usize) -> Deployment {
        Deployment {
            index,
            ..self.clone()
        }
    }

    /// The same deployment, identified as `identity` says (its headers follow).
    pub(crate) fn with_identity(&self, identity: crate::catalog::identify::Identity) -> Deployment {
        let mut d = self.clone();
        d.identity = Arc::new(identity);
        d.prepared()
    }

    /// What every request to it would otherwise compute again: its response headers, URLs and
    /// usage label.
    fn prepared(mut self) -> Deployment {
        self.response_headers = deployment_headers(&self);
        let url = |stream| {
            let path = chat_path(self.kind(), &self.upstream_model, stream)?;
            parse_url(&format!("{}{path}", self.endpoint.base_url))
        };
        let at = |path: &str| parse_url(&format!("{}{path}", self.endpoint.base_url));
        let embeddings = match self.kind() {
            Kind::Gemini => at(&format!(
                "/models/{}:batchEmbedContents",
                self.upstream_model
            )),
            _ => at("/embeddings"),
        };
        self.urls = Arc::new(Urls {
            chat: url(false).zip(url(true)).map(|(a, b)| [a, b]),
            responses: at("/responses"),
            embeddings,
            count_tokens: at("/messages/count_tokens"),
        });
        self.usage_model = Arc::from(self.metric_names().1);
        self.log_fields = std::sync::OnceLock::new();
        self
    }

    /// The URL a chat request goes to (none for `echo`, or when the base URL does not parse).
    pub(crate) fn chat_url(&self, stream: bool) -> Option<http::Uri> {
        self.urls
            .chat
            .as_ref()
            .map(|urls| urls[usize::from(stream)].clone())
    }

    /// Where its other requests go: OpenAI's Responses API, embeddings (Gemini's batch form
    /// for Gemini), Anthropic's token count.
    pub(crate) fn urls(&self) -> &Urls {
        &self.urls
    }

    /// The deployment and model names its metrics and recorded usage go by. An uncatalogued
    /// model's name came from a backend, not the configuration: it stays out of labels.
    pub(crate) fn metric_names(&self) -> (&str, &str) {
        if self.model.uncatalogued {
            (&self.endpoint.name, "other")
        } else {
            (&self.name, &self.model.id)
        }
    }

    pub fn kind(&self) -> Kind {
        self.endpoint.kind
    }
}

/// The `Host` header of plain-HTTP requests to `base_url`: its host, and its port unless 80.
pub(crate) fn plain_http_host(base_url: &str) -> Option<HeaderValue> {
    let uri = parse_url(base_url)?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

/// A configured URL as requests carry it: checked and normalised as a browser would (a host
/// in Unicode becomes its ASCII form), then made the `Uri` the HTTP client takes.
pub(crate) fn parse_url(url: &str) -> Option<http::Uri> {
    let url = reqwest::Url::parse(url).ok()?;
    http::Uri::try_from(String::from(url)).ok()
}

/// The path, after the endpoint's base URL, that chat requests for `upstream_model` go to in
/// a dialect (none for `echo`, which is never called).
fn chat_path(kind: Kind, upstream_model: &str, stream: bool) -> Option<String> {
    Some(match kind {
        Kind::Openai | Kind::OpenaiCompatible => "/chat/completions".into(),
        Kind::Anthropic => "/messages".into(),
        Kind::Gemini if stream => format!("/models/{upstream_model}:streamGenerateContent?alt=sse"),
        Kind::Gemini => format!("/models/{upstream_model}:generateContent"),
        Kind::Echo => return None,
    })
}

/// The headers a deployment's answers start with, made once when the snapshot is built.
fn deployment_headers(d: &Deployment) -> AnswerHeaders {
    use crate::exchange::headers::{
        X_DEPLOYMENT, X_IDENTIFIED, X_LICENSE, X_LICENSE_NOTICE, X_MODEL, X_OPENNESS, X_PROVIDER,
        X_QUANTIZATION,
    };
    use http::header::{CACHE_CONTROL, CONTENT_TYPE};
    let mut out = Vec::with_capacity(8);
    for (name, value) in [
        (&X_MODEL, d.model.id.as_str()),
        (&X_PROVIDER, d.endpoint.provider.as_str()),
        (&X_DEPLOYMENT, d.name.as_str()),
        (&X_OPENNESS, d.model.openness.as_str()),
        (&X_LICENSE, d.model.license.id.as_str()),
        (&X_IDENTIFIED, d.identity.basis.as_str()),
        (&X_QUANTIZATION, d.quantization().unwrap_or("")),
    ] {
        if value.is_empty() {
            continue;
        }
        if let Ok(v) = HeaderValue::from_str(value) {
            out.push((name.clone(), v));
        }
    }
    if d.endpoint.notices
        && let Some(v) = &d.model.license.notice_header
    {
        out.push((X_LICENSE_NOTICE.clone(), v.clone()));
    }
    // Made once: each answer copies these values (a reference count each), never parses them.
    let map = |first: &[(http::HeaderName, &'static str)]| {
        let mut m = http::HeaderMap::with_capacity(16);
        for (name, value) in first {
            m.insert(name.clone(), HeaderValue::from_static(value));
        }
        for (name, value) in &out {
            m.insert(name.clone(), value.clone());
        }
        m
    };
    AnswerHeaders {
        json: map(&[(CONTENT_TYPE, "application/json")]),
        sse: map(&[
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-cache"),
            // Proxies in front (nginx and the like) must not buffer the stream.
            (http::HeaderName::from_static("x-accel-buffering"), "no"),
        ]),
    }
}

/// The headers every answer from a deployment starts with: the content type (and, for a
/// stream, no caching or buffering on the way), then the ones that name the deployment.
#[derive(Clone, Debug, Default)]
pub(crate) struct AnswerHeaders {
    pub(crate) json: http::HeaderMap,
    pub(crate) sse: http::HeaderMap,
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
    // A model without published weights runs at its provider, whatever address fronts it.
    let remote =
        ep.locality == Locality::Remote || (!model.artifacts.weights && ep.kind != Kind::Echo);
    match (remote, &model.price) {
        (true, Some(p)) => p.clone(),
        _ => Price::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::plain_http_host;

    #[test]
    fn the_host_header_of_plain_http_is_made_as_the_client_would() {
        let host = |u: &str| plain_http_host(u).map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(
            host("http://127.0.0.1:8000/v1").as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(host("http://localhost/v1").as_deref(), Some("localhost"));
        assert_eq!(host("http://vllm:80/v1").as_deref(), Some("vllm"));
        assert_eq!(host("http://[::1]:9/v1").as_deref(), Some("[::1]:9"));
        assert_eq!(
            host("http://BÜCHER.example/v1").as_deref(),
            Some("xn--bcher-kva.example")
        );
        // Over HTTPS the client sets it (HTTP/2 has no Host header).
        assert_eq!(host("https://api.openai.com/v1"), None);
        assert_eq!(host(""), None);
    }
}
