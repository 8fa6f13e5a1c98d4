//! Trace export settings: `telemetry.otlp` in `modelgate.yaml`, and the standard
//! `OTEL_EXPORTER_OTLP_*` variables where the file says nothing (the file wins). Off unless one
//! of them names an endpoint; `OTEL_SDK_DISABLED=true` turns it off whatever they say.

use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::config::load::Env;
use crate::yaml::problem::Problems;

/// Observability beyond metrics and logs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySpec {
    /// Export each request as an OpenTelemetry trace (OTLP over HTTP, protobuf). Off by
    /// default; the `OTEL_EXPORTER_OTLP_*` variables turn it on too.
    #[serde(default)]
    pub(crate) otlp: Option<Spanned<OtlpSpec>>,
}

/// Where and how traces are sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSpec {
    /// The collector: its base URL (`http://127.0.0.1:4318`, to which `/v1/traces` is added)
    /// or the full URL of its traces endpoint. Default `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// then `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub(crate) endpoint: Option<String>,
    /// The environment variable holding headers for the collector (`k=v,k2=v2`, values
    /// URL-encoded, as `OTEL_EXPORTER_OTLP_HEADERS`), typically an API key: kept out of the
    /// file, never logged. Default `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, then
    /// `OTEL_EXPORTER_OTLP_HEADERS`.
    #[serde(default)]
    pub(crate) headers_env: Option<String>,
    /// The share of new traces recorded, 0 to 1 (a client's `traceparent` decides for the
    /// traces it continues). Default `OTEL_TRACES_SAMPLER_ARG`, then 1.
    #[serde(default)]
    pub(crate) sample_ratio: Option<f64>,
    /// Spans waiting to be sent, at most; more are dropped and counted
    /// (`modelgate_trace_spans_total{result="queue_full"}`). Default 4,096.
    #[serde(default)]
    pub(crate) queue: Option<usize>,
}

/// Trace export, resolved.
#[derive(Debug, PartialEq)]
pub(crate) struct OtlpSettings {
    /// The traces endpoint's full URL.
    pub(crate) endpoint: String,
    /// Sent with every export; values marked sensitive.
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub(crate) sample_ratio: f64,
    pub(crate) service_name: String,
    pub(crate) queue: usize,
}

/// The settings, or `None` when export is off. Problems name the field (or the variable).
pub(crate) fn resolve(
    file: &Arc<str>,
    spec: &TelemetrySpec,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<Arc<OtlpSettings>> {
    if env
        .var("OTEL_SDK_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return None;
    }
    let given = spec.otlp.as_ref();
    let at = given.map_or(Location::UNKNOWN, |s| s.referenced);
    let o = given.map(|s| &s.value);
    let mut problem = |field: &str, message: String| {
        let path = if field.starts_with("OTEL_") {
            String::new()
        } else {
            format!("telemetry.otlp.{field}")
        };
        let message = if path.is_empty() {
            format!("{field}: {message}")
        } else {
            message
        };
        problems.at(file, at, path, message);
    };
    let endpoint = match o.and_then(|o| o.endpoint.clone()) {
        Some(e) => traces_url(&e),
        None => match env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(e) => e,
            None => traces_url(&env.var("OTEL_EXPORTER_OTLP_ENDPOINT")?),
        },
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || reqwest::Url::parse(&endpoint).is_err()
    {
        problem("endpoint", format!("'{endpoint}' is not an http(s) URL"));
        return None;
    }
    if let Some(p) = env.var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && p != "http/protobuf"
    {
        problem(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            format!("'{p}' is not supported; traces are sent as http/protobuf"),
        );
    }
    let headers_var = o.and_then(|o| o.headers_env.as_deref());
    let raw = match headers_var {
        Some(var) => match env.var(var) {
            Some(v) => Some(v),
            None => {
                problem(
                    "headers_env",
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
        None => env
            .var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| env.var("OTEL_EXPORTER_OTLP_HEADERS")),
    };
    let headers = match raw.as_deref().map(parse_headers).transpose() {
        Ok(h) => h.unwrap_or_default(),
        Err(e) => {
            // The value itself is a secret: only what is wrong with it is said.
            problem(
                headers_var.map_or("OTEL_EXPORTER_OTLP_HEADERS", |_| "headers_env"),
                e,
            );
            Vec::new()
        }
    };
    let sample_ratio = match o.and_then(|o| o.sample_ratio) {
        Some(r) => r,
        None => env
            .var("OTEL_TRACES_SAMPLER_ARG")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1.0),
    };
    if !(0.0..=1.0).contains(&sample_ratio) {
        problem(
            "sample_ratio",
            format!("{sample_ratio} is not between 0 and 1"),
        );
    }
    let queue = o.and_then(|o| o.queue).unwrap_or(4096);
    if queue == 0 || queue > 1_000_000 {
        problem("queue", format!("{queue} is not between 1 and 1,000,000"));
        return None;
    }
    Some(Arc::new(OtlpSettings {
        endpoint,
        headers,
        sample_ratio: sample_ratio.clamp(0.0, 1.0),
        service_name: env
            .var("OTEL_SERVICE_NAME")
            .unwrap_or_else(|| "modelgate".to_owned()),
        queue,
    }))
}

/// A base URL gets OTLP/HTTP's traces path; a URL with a path is used as it is.
fn traces_url(base: &str) -> String {
    let trimmed = base.trim().trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// `k=v,k2=v2` with URL-encoded values, as `OTEL_EXPORTER_OTLP_HEADERS` is written.
fn parse_headers(raw: &str) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err("headers must be written k=v,k2=v2".into());
        };
        let name = http::HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| "a header name is not a valid HTTP header name".to_owned())?;
        let decoded = percent_decode(v.trim()).ok_or("a header value is not valid URL encoding")?;
        let mut value = http::HeaderValue::from_bytes(&decoded)
            .map_err(|_| "a header value has characters a header cannot carry".to_owned())?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn resolved(
        spec: &TelemetrySpec,
        e: &HashMap<String, String>,
    ) -> (Option<Arc<OtlpSettings>>, Problems) {
        let mut p = Problems::default();
        let s = resolve(&Arc::from("modelgate.yaml"), spec, e, &mut p);
        (s, p)
    }

    #[test]
    fn off_unless_an_endpoint_is_named() {
        let (s, p) = resolved(&TelemetrySpec::default(), &env(&[]));
        assert!(s.is_none() && p.is_empty());
        let (s, _) = resolved(
            &TelemetrySpec::default(),
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]),
        );
        assert_eq!(s.unwrap().endpoint, "http://127.0.0.1:4318/v1/traces");
        let (s, _) = resolved(
            &TelemetrySpec::default(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
        );
        assert!(s.is_none());
    }

    #[test]
    fn headers_are_decoded_and_sensitive() {
        let (s, p) = resolved(
            &TelemetrySpec::default(),
            &env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://collector.example/otlp/traces",
                ),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20s3cret, x-team=ml",
                ),
                ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ]),
        );
        assert!(p.is_empty(), "{p}");
        let s = s.unwrap();
        assert_eq!(s.endpoint, "https://collector.example/otlp/traces");
        assert_eq!(s.headers[0].1.as_bytes(), b"Bearer s3cret");
        assert!(s.headers[0].1.is_sensitive());
        assert!((s.sample_ratio - 0.5).abs() < 1e-9);
    }

    #[test]
    fn bad_headers_are_refused_without_their_value() {
        let (_, p) = resolved(
            &TelemetrySpec::default(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%0As3cret",
                ),
            ]),
        );
        let text = p.to_string();
        assert!(
            text.contains("OTEL_EXPORTER_OTLP_HEADERS") && !text.contains("s3cret"),
            "{text}"
        );
    }

    #[test]
    fn traces_urls() {
        assert_eq!(traces_url("http://h:4318"), "http://h:4318/v1/traces");
        assert_eq!(traces_url("http://h:4318/"), "http://h:4318/v1/traces");
        assert_eq!(traces_url("http://h/custom/path"), "http://h/custom/path");
    }
}
