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
#[derive(PartialEq)]
pub(crate) struct OtlpSettings {
    /// The traces endpoint's full URL.
    pub(crate) endpoint: String,
    /// Sent with every export; values marked sensitive.
    pub(crate) headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub(crate) sample_ratio: f64,
    pub(crate) service_name: String,
    pub(crate) queue: usize,
}

impl std::fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers and the endpoint's user part and query may carry a key: the host only.
        let host = reqwest::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        f.debug_struct("OtlpSettings")
            .field("host", &host)
            .field("sample_ratio", &self.sample_ratio)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
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
    let o = given.map(|s| &s.value);
    let mut report = Report {
        file,
        at: given.map_or(Location::UNKNOWN, |s| s.referenced),
        problems,
    };
    let (endpoint, file_names_endpoint) = endpoint(o, given.is_some(), env, &mut report)?;
    let headers = headers(o, file_names_endpoint, env, &mut report);
    let sample_ratio = match o.and_then(|o| o.sample_ratio) {
        Some(r) => r,
        None => match env.var("OTEL_TRACES_SAMPLER_ARG") {
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                report.problem("OTEL_TRACES_SAMPLER_ARG", "is not a number".into());
                1.0
            }),
            None => 1.0,
        },
    };
    if !(0.0..=1.0).contains(&sample_ratio) {
        let why = format!("{sample_ratio} is not between 0 and 1");
        report.problem("sample_ratio", why);
    }
    let queue = o.and_then(|o| o.queue).unwrap_or(4096);
    if queue == 0 || queue > 1_000_000 {
        report.problem("queue", format!("{queue} is not between 1 and 1,000,000"));
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

/// Where problems of the `telemetry.otlp` block are reported.
struct Report<'a> {
    file: &'a Arc<str>,
    at: Location,
    problems: &'a mut Problems,
}

impl Report<'_> {
    /// A problem with `field` of the block, or with the variable `field` names.
    fn problem(&mut self, field: &str, message: String) {
        if field.starts_with("OTEL_") {
            let message = format!("{field}: {message}");
            self.problems.at(self.file, self.at, String::new(), message);
        } else {
            let path = format!("telemetry.otlp.{field}");
            self.problems.at(self.file, self.at, path, message);
        }
    }
}

/// The traces endpoint, and whether the file named it; `None` when export is off or the
/// endpoint is wrong.
fn endpoint(
    o: Option<&OtlpSpec>,
    block: bool,
    env: &dyn Env,
    report: &mut Report<'_>,
) -> Option<(String, bool)> {
    let from_file = o.and_then(|o| o.endpoint.clone());
    let file_names_endpoint = from_file.is_some();
    // Where the endpoint came from: a problem names the field, or the variable.
    let (endpoint, source) = match from_file {
        Some(e) => (traces_url(&e), "endpoint"),
        None => match env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(e) => (e, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            None => match env.var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(e) => (traces_url(&e), "OTEL_EXPORTER_OTLP_ENDPOINT"),
                None if block => {
                    let why = "is required (or OTEL_EXPORTER_OTLP_ENDPOINT in the environment)";
                    report.problem("endpoint", why.into());
                    return None;
                }
                None => return None,
            },
        },
    };
    // Not echoed: a URL may carry a token in its user part or query.
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || reqwest::Url::parse(&endpoint).is_err()
    {
        report.problem(source, "is not an http(s) URL".into());
        return None;
    }
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(p) = env.var(var)
            && p != "http/protobuf"
        {
            let why = format!("'{p}' is not supported; traces are sent as http/protobuf");
            report.problem(var, why);
        }
    }
    Some((endpoint, file_names_endpoint))
}

/// The collector's headers. For the file's endpoint they come only from the file's
/// `headers_env`: a vendor's key in the environment is not sent to an endpoint the file chose.
fn headers(
    o: Option<&OtlpSpec>,
    file_names_endpoint: bool,
    env: &dyn Env,
    report: &mut Report<'_>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let headers_var = o.and_then(|o| o.headers_env.as_deref());
    let (raw, source) = match headers_var {
        Some(var) => match env.var(var) {
            Some(v) => (Some(v), "headers_env"),
            None => {
                let why = format!("environment variable {var} is not set");
                report.problem("headers_env", why);
                (None, "headers_env")
            }
        },
        None if file_names_endpoint => (None, "headers_env"),
        None => match env.var("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(v) => (Some(v), "OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
            None => (
                env.var("OTEL_EXPORTER_OTLP_HEADERS"),
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
        },
    };
    match raw.as_deref().map(parse_headers).transpose() {
        Ok(h) => h.unwrap_or_default(),
        Err(e) => {
            // The value itself is a secret: only what is wrong with it is said.
            report.problem(source, e);
            Vec::new()
        }
    }
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
    fn the_files_endpoint_gets_no_headers_from_the_environment() {
        let spec: TelemetrySpec =
            serde_json::from_str(r#"{"otlp": {"endpoint": "http://127.0.0.1:4318"}}"#).unwrap();
        let (s, p) = resolved(
            &spec,
            &env(&[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20vendor",
            )]),
        );
        assert!(p.is_empty(), "{p}");
        assert!(s.unwrap().headers.is_empty());
    }

    #[test]
    fn problems_name_where_the_value_came_from() {
        let (_, p) = resolved(
            &TelemetrySpec::default(),
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://h?token=abc")]),
        );
        let text = p.to_string();
        assert!(
            text.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && !text.contains("token=abc"),
            "{text}"
        );
        let spec: TelemetrySpec =
            serde_json::from_str(r#"{"otlp": {"sample_ratio": 0.5}}"#).unwrap();
        let (_, p) = resolved(&spec, &env(&[]));
        assert!(p.to_string().contains("telemetry.otlp.endpoint"), "{p}");
        let (_, p) = resolved(
            &TelemetrySpec::default(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "half"),
            ]),
        );
        assert!(p.to_string().contains("OTEL_TRACES_SAMPLER_ARG"), "{p}");
    }

    #[test]
    fn traces_urls() {
        assert_eq!(traces_url("http://h:4318"), "http://h:4318/v1/traces");
        assert_eq!(traces_url("http://h:4318/"), "http://h:4318/v1/traces");
        assert_eq!(traces_url("http://h/custom/path"), "http://h/custom/path");
    }
}
