//! One deployment of `modelgate.yaml`, validated: its model, address, key, pinned digest,
//! timeouts, retries, breaker and limits, each problem named with the field it is in.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_saphyr::Location;

use super::super::deployment::{Deployment, Endpoint, Timeouts};
use super::super::secret::{Masks, Secret};
use super::super::spec::{DeploymentSpec, Kind, Locality};
use super::Env;
use crate::catalog::Catalog;
use crate::config::resilience::BreakerConfig;
use crate::config::resilience::RetryPolicy;
use crate::config::scopes::LimitSet;
use crate::yaml::problem::Problems;

pub(super) enum Built {
    Ok(Arc<Endpoint>),
    /// Optional and its key is missing.
    Disabled,
    /// Invalid; the problems say why.
    Skip,
}

impl DeploymentCx<'_> {
    /// The pinned digest: one of sha256 (64 hex digits) or revision (40), on a local backend.
    fn expect(
        &self,
        d: &DeploymentSpec,
        problems: &mut Problems,
    ) -> Option<crate::catalog::identify::Digest> {
        use crate::catalog::identify::Digest;
        let e = d.expect.as_ref()?;
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let digest = match (&e.sha256, &e.revision) {
            (Some(h), None) => {
                let h = h.strip_prefix("sha256:").unwrap_or(h);
                hex(h, 64).then(|| Digest::Sha256(h.to_ascii_lowercase()))
            }
            (None, Some(r)) => hex(r, 40).then(|| Digest::Revision(r.to_ascii_lowercase())),
            _ => None,
        };
        if digest.is_none() {
            self.problem(
                problems,
                "expect",
                "give one of 'sha256' (64 hex digits) or 'revision' (a 40-hex-digit commit)",
            );
        }
        if !matches!(d.kind, Kind::OpenaiCompatible) {
            self.problem(
                problems,
                "expect",
                "only the weights of an OpenAI-compatible backend (vLLM, llama.cpp, Ollama) can be checked",
            );
        }
        digest
    }
}

pub(super) struct DeploymentCx<'a> {
    pub(crate) file: &'a Arc<str>,
    pub(crate) loc: Location,
    pub(crate) index: usize,
    pub(crate) catalog: &'a Catalog,
    pub(crate) env: &'a dyn Env,
}

impl DeploymentCx<'_> {
    pub(super) fn path(&self, field: &str) -> String {
        format!("deployments[{}].{field}", self.index)
    }

    pub(super) fn problem(&self, problems: &mut Problems, field: &str, message: impl Into<String>) {
        problems.at(self.file, self.loc, self.path(field), message);
    }

    pub(super) fn endpoint(&self, d: &DeploymentSpec, problems: &mut Problems) -> Built {
        let before = problems.len();
        self.check_name_and_model(d, problems);
        let base_url = self.base_url_of(d, problems);
        let Some(key) = self.key(d, problems) else {
            return Built::Disabled;
        };
        let masks = key
            .as_ref()
            .map_or_else(Default::default, |k| Masks::of(&[k]));
        let auth_header = key.and_then(|k| self.auth_header(d.kind, &k, problems));
        let price_override = d.price.as_ref().map(|p| (p.input, p.output));
        if let Some((i, o)) = price_override
            && (!i.is_finite() || !o.is_finite() || i < 0.0 || o < 0.0)
        {
            self.problem(problems, "price", "prices must be finite and not negative");
        }
        let timeouts = self.timeouts(d, problems);
        let retry = self.retry(d, problems);
        let breaker = self.breaker(d, problems);
        let expect = self.expect(d, problems);
        if problems.len() > before {
            return Built::Skip;
        }
        let locality =
            d.locality
                .unwrap_or(if d.kind == Kind::Echo || is_loopback_url(&base_url) {
                    Locality::Local
                } else {
                    Locality::Remote
                });
        Built::Ok(Arc::new(Endpoint {
            name: d.name.clone(),
            kind: d.kind,
            provider: d
                .provider
                .clone()
                .unwrap_or_else(|| d.kind.as_str().to_owned()),
            host: crate::config::deployment::plain_http_host(&base_url),
            base_url,
            auth_header,
            masks,
            locality,
            data: d.data,
            region: d.region.clone(),
            quantization: d.quantization.clone(),
            refuse_unidentified: d.refuse_unidentified,
            expect,
            price_override,
            stream_usage: d.stream_usage.unwrap_or(true),
            timeouts,
            retry,
            breaker,
            limits: d
                .limits
                .as_ref()
                .map(LimitSet::for_deployment)
                .filter(|l| !l.is_empty())
                .map(|limits| crate::config::scopes::Scope {
                    kind: crate::config::scopes::ScopeKind::Deployment,
                    name: Arc::from(d.name.as_str()),
                    limits,
                }),
            notices: d.notices,
            trace_context: d.trace_context,
        }))
    }

    /// Refuses a name that cannot be one, and a model that is missing or not catalogued.
    fn check_name_and_model(&self, d: &DeploymentSpec, problems: &mut Problems) {
        if d.name.is_empty() || d.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problem(problems, "name", "must be non-empty, without spaces");
        }
        if d.name == crate::config::AUTO {
            self.problem(
                problems,
                "name",
                "'auto' is reserved for the policy's own choice",
            );
        }
        if d.discover {
            if !matches!(d.kind, Kind::OpenaiCompatible | Kind::Openai) {
                self.problem(
                    problems,
                    "discover",
                    "only OpenAI-compatible backends can be discovered",
                );
            }
            if d.model.is_some() || d.upstream_model.is_some() {
                self.problem(problems, "model", "a discovered backend names its models itself: remove 'model' and 'upstream_model'");
            }
        } else if d.refuse_unidentified {
            self.problem(
                problems,
                "refuse_unidentified",
                "only a discovering backend ('discover: true') has models to identify",
            );
        } else {
            match &d.model {
                None => self.problem(problems, "model", "missing: name the catalog model this deployment serves (or set 'discover: true')"),
                Some(m) if self.catalog.get(m).is_none() => self.problem(
                    problems,
                    "model",
                    format!("unknown model '{m}': add it to a catalog file (`modelgate catalog` lists the known ones)"),
                ),
                Some(_) => {}
            }
        }
    }

    /// Where it is: the URL given, or the provider's public API.
    fn base_url_of(&self, d: &DeploymentSpec, problems: &mut Problems) -> String {
        match (d.kind, &d.base_url) {
            (Kind::Echo, Some(_)) => {
                self.problem(
                    problems,
                    "base_url",
                    "the echo model runs inside the gateway and has no URL",
                );
                String::new()
            }
            (Kind::Echo, None) => String::new(),
            (_, Some(u)) => self.base_url(u, problems),
            (Kind::Openai, None) => "https://api.openai.com/v1".into(),
            (Kind::Anthropic, None) => "https://api.anthropic.com/v1".into(),
            (Kind::Gemini, None) => "https://generativelanguage.googleapis.com/v1beta".into(),
            (Kind::OpenaiCompatible, None) => {
                self.problem(problems, "base_url", "missing: an OpenAI-compatible backend needs its URL, such as http://127.0.0.1:8000/v1");
                String::new()
            }
        }
    }

    /// Its key, from the variable or the file named; `None` when that is missing and the
    /// deployment is optional (it is left out).
    fn key(&self, d: &DeploymentSpec, problems: &mut Problems) -> Option<Option<Secret>> {
        let key = match (&d.api_key_env, &d.api_key_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    problems,
                    "api_key_file",
                    "give the key either by 'api_key_env' or by 'api_key_file'",
                );
                None
            }
            (Some(var), None) => {
                if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.problem(
                        problems,
                        "api_key_env",
                        "must be the name of an environment variable",
                    );
                    None
                } else {
                    match self.env.var(var) {
                        Some(v) => Some(Secret::new(v.trim().to_owned())),
                        None if d.optional => return None,
                        None => {
                            self.problem(
                                problems,
                                "api_key_env",
                                format!("environment variable {var} is not set"),
                            );
                            None
                        }
                    }
                }
            }
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) => Some(Secret::new(v.trim().to_owned())),
                Err(_) if d.optional => return None,
                Err(e) => {
                    self.problem(
                        problems,
                        "api_key_file",
                        format!("cannot read the key file: {}", e.kind()),
                    );
                    None
                }
            },
            (None, None) => {
                if matches!(d.kind, Kind::Openai | Kind::Anthropic | Kind::Gemini) {
                    self.problem(
                        problems,
                        "api_key_env",
                        format!(
                            "a {} deployment needs a key: set 'api_key_env'",
                            d.kind.as_str()
                        ),
                    );
                }
                None
            }
        };
        Some(key)
    }

    /// The header that carries the key in the dialect, marked sensitive.
    fn auth_header(
        &self,
        kind: Kind,
        k: &Secret,
        problems: &mut Problems,
    ) -> Option<(HeaderName, HeaderValue)> {
        let (name, value) = match kind {
            Kind::Anthropic => (
                crate::exchange::headers::X_API_KEY.clone(),
                k.expose().to_owned(),
            ),
            Kind::Gemini => (
                HeaderName::from_static("x-goog-api-key"),
                k.expose().to_owned(),
            ),
            _ => (
                http::header::AUTHORIZATION,
                format!("Bearer {}", k.expose()),
            ),
        };
        match HeaderValue::from_str(&value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Some((name, v))
            }
            Err(_) => {
                self.problem(
                    problems,
                    "api_key_env",
                    "the key contains characters a header cannot carry",
                );
                None
            }
        }
    }

    fn timeouts(&self, d: &DeploymentSpec, problems: &mut Problems) -> Timeouts {
        let defaults = Timeouts::default();
        let t = &d.timeouts;
        let timeouts = Timeouts {
            connect: t.connect.map_or(defaults.connect, |d| d.0),
            first_byte: t.first_byte.map_or(defaults.first_byte, |d| d.0),
            first_token: t.first_token.map_or(defaults.first_token, |d| d.0),
            idle: t.idle.map_or(defaults.idle, |d| d.0),
            total: t.total.map_or(defaults.total, |d| d.0),
            stream_total: t.stream_total.map_or(defaults.stream_total, |d| d.0),
        };
        if [
            timeouts.connect,
            timeouts.first_byte,
            timeouts.first_token,
            timeouts.idle,
            timeouts.total,
            timeouts.stream_total,
        ]
        .iter()
        .any(Duration::is_zero)
        {
            self.problem(problems, "timeouts", "timeouts must be more than 0");
        }
        timeouts
    }

    fn retry(&self, d: &DeploymentSpec, problems: &mut Problems) -> RetryPolicy {
        let rd = RetryPolicy::default();
        let r = &d.retries;
        let retry = RetryPolicy {
            attempts: r.attempts.unwrap_or(rd.attempts),
            on: r.on.clone().unwrap_or(rd.on),
            base: r.backoff.map_or(rd.base, |d| d.0),
            max: r.max_backoff.map_or(rd.max, |d| d.0),
            max_retry_after: r.max_retry_after.map_or(rd.max_retry_after, |d| d.0),
            budget_ratio: r.budget_ratio.unwrap_or(rd.budget_ratio),
            budget_min_per_second: r.budget_min_per_second.unwrap_or(rd.budget_min_per_second),
        };
        if !(0.0..=10.0).contains(&retry.budget_ratio) || retry.attempts > 10 {
            self.problem(
                problems,
                "retries",
                "attempts are at most 10 and budget_ratio between 0 and 10",
            );
        }
        retry
    }

    fn breaker(&self, d: &DeploymentSpec, problems: &mut Problems) -> Option<BreakerConfig> {
        let bd = BreakerConfig::default();
        let b = &d.breaker;
        let breaker = (b.consecutive_failures != Some(0)).then(|| BreakerConfig {
            consecutive_failures: b.consecutive_failures.unwrap_or(bd.consecutive_failures),
            failure_rate: b.failure_rate.unwrap_or(bd.failure_rate),
            base_ejection: b.base_ejection.map_or(bd.base_ejection, |d| d.0),
            max_ejection: b.max_ejection.map_or(bd.max_ejection, |d| d.0),
            ..bd
        });
        if breaker
            .is_some_and(|b| !(0.0..=1.0).contains(&b.failure_rate) || b.base_ejection.is_zero())
        {
            self.problem(
                problems,
                "breaker",
                "failure_rate is between 0 and 1 and base_ejection more than 0",
            );
        }
        breaker
    }

    fn base_url(&self, u: &str, problems: &mut Problems) -> String {
        match reqwest::Url::parse(u) {
            Err(e) => {
                self.problem(problems, "base_url", format!("not a URL: {e}"));
                String::new()
            }
            Ok(url) => {
                if !matches!(url.scheme(), "http" | "https") {
                    self.problem(problems, "base_url", "must be an http:// or https:// URL");
                } else if url.host_str().is_none_or(str::is_empty) {
                    self.problem(problems, "base_url", "must name a host");
                } else if !url.username().is_empty() || url.password().is_some() {
                    self.problem(
                        problems,
                        "base_url",
                        "must not carry credentials: use 'api_key_env'",
                    );
                } else if url.query().is_some() || url.fragment().is_some() {
                    self.problem(problems, "base_url", "must not have a query or a fragment");
                }
                u.trim_end_matches('/').to_owned()
            }
        }
    }
}

/// Whether a base URL names one of the gateway's own listeners: the same port on the same
/// address, on a loopback address or name, or on any address when a listener takes them all.
pub(super) fn points_at(listeners: [SocketAddr; 2], u: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(u) else {
        return false;
    };
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
    let ip = host.parse::<IpAddr>().ok();
    let local = host.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.is_loopback());
    listeners.iter().any(|l| {
        l.port() == port
            && l.port() != 0
            && (ip == Some(l.ip())
                || (local && (l.ip().is_loopback() || l.ip().is_unspecified()))
                || (l.ip().is_unspecified() && ip.is_some_and(|ip| ip.is_unspecified())))
    })
}

fn is_loopback_url(u: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(u) else {
        return false;
    };
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The deployments of a configuration, the backends that discover theirs or pin their
/// weights, and the deployments left out for a missing key. `own` are the gateway's own
/// addresses, which no deployment may point at.
pub(super) struct Deployments {
    pub(crate) deployments: Vec<Arc<Deployment>>,
    pub(crate) discover: Vec<Arc<Endpoint>>,
    pub(crate) verify: Vec<Arc<Endpoint>>,
    pub(crate) disabled: Vec<String>,
}

pub(super) fn deployments(
    file: &Arc<str>,
    spec: &crate::config::spec::ConfigSpec,
    catalog: &Catalog,
    env: &dyn Env,
    own: [SocketAddr; 2],
    problems: &mut Problems,
) -> Deployments {
    let mut names = HashSet::new();
    let mut deployments = Vec::new();
    let mut discover = Vec::new();
    let mut verify = Vec::new();
    let mut disabled = Vec::new();
    for (i, d) in spec.deployments.iter().enumerate() {
        let cx = DeploymentCx {
            file,
            loc: d.referenced,
            index: i,
            catalog,
            env,
        };
        let d = &d.value;
        if !names.insert(d.name.clone()) {
            problems.at(
                file,
                cx.loc,
                cx.path("name"),
                format!("duplicate deployment name '{}'", d.name),
            );
            continue;
        }
        if let Some(base) = d.base_url.as_deref()
            && points_at(own, base)
        {
            cx.problem(
                problems,
                "base_url",
                format!(
                    "{} is this gateway's own address: every request to it would come back to the gateway",
                    crate::base::printable(base)
                ),
            );
            continue;
        }
        match cx.endpoint(d, problems) {
            Built::Skip => {}
            Built::Disabled => disabled.push(d.name.clone()),
            Built::Ok(ep) => {
                if d.discover {
                    discover.push(ep);
                } else {
                    if ep.expect.is_some() {
                        verify.push(ep.clone());
                    }
                    if let Some(model) = d.model.as_ref().and_then(|m| catalog.get(m)) {
                        let upstream = d.upstream_model.clone().unwrap_or_else(|| model.id.clone());
                        deployments.push(Arc::new(Deployment::configured(
                            d.name.clone(),
                            ep,
                            model.clone(),
                            upstream,
                        )));
                    }
                }
            }
        }
    }
    for d in &deployments {
        if let Some(m) = catalog.get(&d.name)
            && m.id != d.model.id
        {
            problems.0.push(crate::yaml::problem::Problem {
                file: file.clone(),
                line: 0,
                column: 0,
                path: "deployments".into(),
                message: format!(
                    "deployment '{}' has the id of another catalog model; rename it",
                    d.name
                ),
            });
        }
    }
    Deployments {
        deployments,
        discover,
        verify,
        disabled,
    }
}
