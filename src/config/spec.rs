//! The entry file `modelgate.yaml` as written: plain data, `deny_unknown_fields` everywhere.
//! Every field's doc comment is its user documentation; the configuration reference
//! (`docs/configuration.md`) is checked against these names by a test.

use crate::config::otlp::TelemetrySpec;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// `modelgate.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// Address of the API listener. Default `127.0.0.1:8400`.
    #[serde(default)]
    pub(crate) listen: Option<Spanned<String>>,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`). Default `127.0.0.1:8401`.
    #[serde(default)]
    pub(crate) admin_listen: Option<Spanned<String>>,
    /// `keys` (default): callers present a key from `keys`; with no keys configured the API must
    /// listen on a loopback address. `none`: no authentication, on any address.
    #[serde(default)]
    pub(crate) auth: Option<Spanned<AuthMode>>,
    /// Client keys, stored as SHA-256 hashes (`modelgate key new` makes one).
    #[serde(default)]
    pub(crate) keys: Vec<Spanned<KeySpec>>,
    /// Tenants: the policies their keys may use, labels they always carry, and their limits.
    /// A tenant named by a key but not listed here has no limits of its own.
    #[serde(default)]
    pub(crate) tenants: Vec<Spanned<TenantSpec>>,
    /// Which catalog files to load.
    #[serde(default)]
    pub(crate) catalog: CatalogRefSpec,
    /// Which policy files to load, and which policy is in force.
    #[serde(default)]
    pub(crate) policies: PoliciesRefSpec,
    /// Where models are served.
    #[serde(default)]
    pub(crate) deployments: Vec<Spanned<DeploymentSpec>>,
    /// Limits on requests.
    #[serde(default)]
    pub(crate) limits: LimitsSpec,
    /// Listener and shutdown settings.
    #[serde(default)]
    pub(crate) server: ServerSpec,
    /// Configuration reload.
    #[serde(default)]
    pub(crate) reload: ReloadSpec,
    /// Responses kept for `previous_response_id` (the Responses API's `store`).
    #[serde(default)]
    pub(crate) responses: ResponsesSpec,
    /// Traces: each request exported as OpenTelemetry spans.
    #[serde(default)]
    pub(crate) telemetry: TelemetrySpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    Keys,
    None,
}

/// One client key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// A name for the key that is not secret (shown in logs).
    pub(crate) id: String,
    /// The tenant the key belongs to.
    pub(crate) tenant: String,
    /// Hex SHA-256 of the key.
    pub(crate) sha256: String,
    /// The policy this key's requests are decided by, instead of `policies.active`.
    #[serde(default)]
    pub(crate) policy: Option<String>,
    /// The shadow policy of this key's requests, instead of its tenant's or `policies.shadow`.
    /// Any policy, whatever the tenant's `policies` allow: a shadow routes nothing.
    #[serde(default)]
    pub(crate) shadow: Option<String>,
    /// Labels every request with this key carries; a request cannot change them.
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// Limits of this key alone (on top of its tenant's).
    #[serde(default)]
    pub(crate) limits: Option<LimitSetSpec>,
    /// The UTC day (`2027-01-31`) from which the key no longer works.
    #[serde(default)]
    pub(crate) expires: Option<String>,
}

/// One tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// The name keys give as their `tenant`.
    pub(crate) name: String,
    /// Policies the tenant's keys may name; the first decides for keys that name none. Empty:
    /// any policy, and `policies.active` by default.
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    /// The shadow policy of the tenant's requests, instead of `policies.shadow` (a key's own
    /// comes first).
    #[serde(default)]
    pub(crate) shadow: Option<String>,
    /// Labels every request of the tenant carries (a key's own labels come on top).
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    /// Limits shared by all the tenant's keys.
    #[serde(default)]
    pub(crate) limits: Option<LimitSetSpec>,
}

/// Caps on requests, tokens and spend. Minutes are calendar minutes, days and months calendar
/// days and months, all in UTC.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSetSpec {
    /// Requests per minute.
    #[serde(default)]
    pub(crate) requests_per_minute: Option<u64>,
    /// Tokens per minute: the prompt (estimated) and `max_tokens` count when the request is
    /// admitted, as OpenAI counts them; the actual output is added when it is known.
    #[serde(default)]
    pub(crate) tokens_per_minute: Option<u64>,
    /// Spend per day, in US dollars. Each request reserves its worst-case cost before the call
    /// and is charged its actual cost after it.
    #[serde(default)]
    pub(crate) usd_per_day: Option<f64>,
    /// Spend per month, in US dollars, reserved and charged as per day.
    #[serde(default)]
    pub(crate) usd_per_month: Option<f64>,
}

/// The policy files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesRefSpec {
    /// Load the policies shipped inside the binary (`default` and the examples). Default true.
    #[serde(default = "defaults::yes")]
    pub(crate) builtin: bool,
    /// More policy files or directories of `*.yaml` files, relative to this file.
    #[serde(default)]
    pub(crate) paths: Vec<Spanned<String>>,
    /// The policy in force for callers whose key names none. Default `default`.
    #[serde(default)]
    pub(crate) active: Option<Spanned<String>>,
    /// A policy every request is decided by as well, without being routed by it: where it
    /// would have sent the request, or why it would have refused it, is counted in
    /// `modelgate_shadow_decisions_total` and written in the request's log line. For trying a
    /// policy on real traffic before it is made `active`. A caller whose own policy it is gets
    /// no shadow decision. Default none.
    #[serde(default)]
    pub(crate) shadow: Option<Spanned<String>>,
}

/// The catalog files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRefSpec {
    /// Load the catalog shipped inside the binary. Default true.
    #[serde(default = "defaults::yes")]
    pub(crate) builtin: bool,
    /// More catalog files or directories of `*.yaml` files, relative to this file.
    #[serde(default)]
    pub(crate) paths: Vec<Spanned<String>>,
}

/// The wire dialect and defaults of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// OpenAI's API (`https://api.openai.com/v1`).
    Openai,
    /// Any OpenAI-compatible server: vLLM, llama.cpp, Ollama's `/v1`, TGI.
    OpenaiCompatible,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
    /// The built-in echo test model: answers locally, no network.
    Echo,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Openai => "openai",
            Kind::OpenaiCompatible => "openai-compatible",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
            Kind::Echo => "echo",
        }
    }
}

/// Where the deployment runs, relative to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Locality {
    /// On this machine or in this pod.
    Local,
    /// In the same cluster or private network.
    Cluster,
    /// A third party's API over the internet.
    Remote,
}

impl Locality {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Locality::Local => "local",
            Locality::Cluster => "cluster",
            Locality::Remote => "remote",
        }
    }
}

/// One place where a model is served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Unique name; clients may also ask for a deployment by name.
    pub(crate) name: String,
    /// Wire dialect.
    pub(crate) kind: Kind,
    /// Provider label for headers and metrics (`vllm`, `ollama`). Defaults to the kind.
    #[serde(default)]
    pub(crate) provider: Option<String>,
    /// Catalog id of the model served. Required unless `discover` is set.
    #[serde(default)]
    pub(crate) model: Option<String>,
    /// Model name the backend expects. Defaults to the catalog id.
    #[serde(default)]
    pub(crate) upstream_model: Option<String>,
    /// Base URL of the API, up to and including the version (`http://127.0.0.1:8000/v1`).
    /// Defaults to the provider's public API for `openai`, `anthropic` and `gemini`.
    #[serde(default)]
    pub(crate) base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub(crate) api_key_env: Option<String>,
    /// File holding the API key (a mounted Kubernetes Secret, for instance).
    #[serde(default)]
    pub(crate) api_key_file: Option<String>,
    /// When the key variable or file is missing, leave the deployment out instead of refusing
    /// the configuration.
    #[serde(default)]
    pub(crate) optional: bool,
    /// Ask the backend which models it serves (`GET /models`) and serve each of them, identified
    /// from what the backend says about the weights (vLLM's `root`, Ollama's `/api/show`, the
    /// GGUF header of a file this process can read), then by the served name matched whole
    /// against the catalog's names; a model that cannot be identified is served as `unknown`.
    /// Probed at start, every second until it answers, then every `reload.discovery_interval`.
    #[serde(default)]
    pub(crate) discover: bool,
    /// The weights this backend must serve, pinned: `{sha256: <64 hex>}` (of the GGUF file, or
    /// Ollama's blob) or `{revision: <40 hex>}` (a Hugging Face commit, as vLLM's root shows it).
    /// Until the backend shows a matching digest the deployment is not served; a mismatch says
    /// which digest was expected and which was found.
    #[serde(default)]
    pub(crate) expect: Option<ExpectSpec>,
    /// Of a discovering backend: leave out every model that cannot be identified, instead of
    /// serving it as unknown (which only policies that ask nothing about openness, license or
    /// locality allow).
    #[serde(default)]
    pub(crate) refuse_unidentified: bool,
    /// Where it runs. Defaults to `local` for loopback addresses, `remote` otherwise.
    #[serde(default)]
    pub(crate) locality: Option<Locality>,
    /// What the provider does with prompts.
    #[serde(default)]
    pub(crate) data: DataHandlingSpec,
    /// Region the deployment runs in (`eu-west-1`), for policies.
    #[serde(default)]
    pub(crate) region: Option<String>,
    /// Quantization of the served weights (`q4_k_m`, `fp8`), for information.
    #[serde(default)]
    pub(crate) quantization: Option<String>,
    /// Price per million tokens on this deployment. Defaults to the catalog's list price for
    /// remote deployments and 0 for local and cluster ones.
    #[serde(default)]
    pub(crate) price: Option<DeploymentPriceSpec>,
    /// Ask for `stream_options.include_usage` on streams. Default true; turn off for backends
    /// that reject it.
    #[serde(default)]
    pub(crate) stream_usage: Option<bool>,
    /// Per-phase timeouts.
    #[serde(default)]
    pub(crate) timeouts: TimeoutsSpec,
    /// Retries of this deployment before the next allowed one is tried.
    #[serde(default)]
    pub(crate) retries: RetriesSpec,
    /// Outlier ejection of this deployment.
    #[serde(default)]
    pub(crate) breaker: BreakerSpec,
    /// Requests and tokens per minute this deployment may take from this gateway (from every
    /// gateway, with a shared `limits.store`); over them, the next allowed deployment is tried.
    #[serde(default)]
    pub(crate) limits: Option<DeploymentLimitsSpec>,
    /// Put the notice its model's license asks to be shown ("Built with Llama", Gemma's use
    /// restrictions) on every answer, in the `x-modelgate-license-notice` header, for an
    /// application that serves third parties to show. Only licenses with a duty that serving
    /// brings on have one (`GET /v1/models` lists the duties). Default false.
    #[serde(default)]
    pub(crate) notices: bool,
    /// Send the trace context (`traceparent`, naming the attempt's span) with requests to this
    /// deployment, when traces are exported: for a backend that records its own spans into the
    /// request's trace. Default false: a third party learns nothing of the caller's traces.
    #[serde(default)]
    pub(crate) trace_context: bool,
}

/// A pinned digest of served weights.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpectSpec {
    #[serde(default)]
    pub(crate) sha256: Option<String>,
    #[serde(default)]
    pub(crate) revision: Option<String>,
}

/// Caps on what one deployment is sent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentLimitsSpec {
    /// Requests per minute.
    #[serde(default)]
    pub(crate) requests_per_minute: Option<u64>,
    /// Tokens per minute (the prompt, estimated, and `max_tokens`).
    #[serde(default)]
    pub(crate) tokens_per_minute: Option<u64>,
}

/// Failures that may be retried on the same deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RetryOn {
    /// Connection refused, or reset before any byte of the answer.
    Connect,
    /// No answer within the first-byte or first-token timeout.
    Timeout,
    /// HTTP 408.
    #[serde(rename = "408")]
    RequestTimeout,
    /// HTTP 429.
    #[serde(rename = "429")]
    RateLimited,
    /// HTTP 500 to 599, and a stream that failed before its first content.
    #[serde(rename = "5xx")]
    ServerError,
}

/// Retries of one deployment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesSpec {
    /// Retries after the first try. Default 1; 0 moves straight to the next deployment.
    #[serde(default)]
    pub(crate) attempts: Option<u32>,
    /// Failures retried. Default all of them.
    #[serde(default)]
    pub(crate) on: Option<Vec<RetryOn>>,
    /// First backoff ceiling (waits are random up to it, doubling each retry). Default 100ms.
    #[serde(default)]
    pub(crate) backoff: Option<Dur>,
    /// Largest backoff ceiling. Default 2s.
    #[serde(default)]
    pub(crate) max_backoff: Option<Dur>,
    /// Longest `Retry-After` waited for; a longer one moves on to the next deployment.
    /// Default 10s.
    #[serde(default)]
    pub(crate) max_retry_after: Option<Dur>,
    /// Retries may add at most this fraction of the deployment's recent requests. Default 0.2.
    #[serde(default)]
    pub(crate) budget_ratio: Option<f64>,
    /// ...plus this many retries per second. Default 3.
    #[serde(default)]
    pub(crate) budget_min_per_second: Option<u32>,
}

/// Outlier ejection of one deployment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Consecutive failures that eject the deployment. Default 5; 0 turns ejection off.
    #[serde(default)]
    pub(crate) consecutive_failures: Option<u32>,
    /// Failure rate (0 to 1) over the last 20 attempts (at least 10) that ejects it. Default 0.5.
    #[serde(default)]
    pub(crate) failure_rate: Option<f64>,
    /// First ejection; each further one doubles it. Default 1s.
    #[serde(default)]
    pub(crate) base_ejection: Option<Dur>,
    /// Longest ejection. Default 30s.
    #[serde(default)]
    pub(crate) max_ejection: Option<Dur>,
}

/// What the provider does with prompts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataHandlingSpec {
    /// Prompts are kept after the answer (for abuse monitoring, for instance). Undeclared is
    /// unknown: a rule that requires `false` refuses it, except on a `local` deployment.
    #[serde(default)]
    pub(crate) retains_prompts: Option<bool>,
    /// Prompts are used to train models. Undeclared is unknown, as above.
    #[serde(default)]
    pub(crate) trains_on_prompts: Option<bool>,
}

/// A deployment's own price.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentPriceSpec {
    /// USD per million input tokens.
    pub(crate) input: f64,
    /// USD per million output tokens.
    pub(crate) output: f64,
}

/// Per-phase timeouts of a deployment.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// TCP and TLS connect. Default 5s.
    #[serde(default)]
    pub(crate) connect: Option<Dur>,
    /// From sending the request to the response headers. Default 120s.
    #[serde(default)]
    pub(crate) first_byte: Option<Dur>,
    /// From the response headers of a stream to its first content (text, a tool call): until
    /// then the request can still go elsewhere. Default 120s.
    #[serde(default)]
    pub(crate) first_token: Option<Dur>,
    /// Longest silence between two chunks of a stream. Default 120s.
    #[serde(default)]
    pub(crate) idle: Option<Dur>,
    /// Whole non-streaming request, retries and fallbacks included. Default 600s. Never applied
    /// to a stream once it has begun.
    #[serde(default)]
    pub(crate) total: Option<Dur>,
    /// Backstop for a stream that never ends. Default 30m.
    #[serde(default)]
    pub(crate) stream_total: Option<Dur>,
}

/// Limits on requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest request body in bytes. Default 8 MiB.
    #[serde(default = "defaults::max_body")]
    pub(crate) max_body_bytes: u64,
    /// Most messages in one request. Default 10,000.
    #[serde(default = "defaults::max_messages")]
    pub(crate) max_messages: usize,
    /// Deepest nesting of arrays and objects in a request body. Default 64.
    #[serde(default = "defaults::max_depth")]
    pub(crate) max_json_depth: usize,
    /// Largest upstream response body in bytes (non-streaming). Default 16 MiB.
    #[serde(default = "defaults::max_response")]
    pub(crate) max_response_bytes: u64,
    /// Longest SSE line from an upstream, and largest SSE event (its data lines together), in
    /// bytes; over it the attempt fails. Default 1 MiB.
    #[serde(default = "defaults::max_sse_line")]
    pub(crate) max_sse_line_bytes: usize,
    /// Time a client has to send its whole request body (408 after it). Default 30s.
    #[serde(default)]
    pub(crate) body_read_timeout: Option<Dur>,
    /// Where rate-limit and budget counters are kept: `memory` (default; this process only) or
    /// `redis://host:port[/db]`, shared by every gateway using the same Redis.
    #[serde(default)]
    pub(crate) store: Option<Spanned<String>>,
    /// What happens when the store cannot be reached: `closed` (default) refuses requests that
    /// have limits with 503 `limit_store_unavailable`; `open` lets them through uncounted.
    #[serde(default)]
    pub(crate) on_store_error: StoreErrorMode,
}

/// Behaviour when the limit store is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorMode {
    #[default]
    Closed,
    Open,
}

/// Listener and shutdown settings. Changing them needs a restart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// How long in-flight requests and streams may run after SIGTERM. Default 30s.
    #[serde(default)]
    pub(crate) drain_timeout: Option<Dur>,
    /// Time a client has to send its request headers, from their first byte (or from the
    /// connection's start), enforced to within a tenth of it (at most 1s late). Default 10s.
    #[serde(default)]
    pub(crate) header_read_timeout: Option<Dur>,
    /// How long a client connection may wait idle for its next request, no byte of it sent,
    /// before it is closed: longer than clients' pools keep idle connections, so that they
    /// close them first (a request sent as the gateway closes its connection is lost).
    /// Default 5m.
    #[serde(default)]
    pub(crate) idle_timeout: Option<Dur>,
    /// Most connections open at once on the API listener. Default 10,000.
    #[serde(default)]
    pub(crate) max_connections: Option<usize>,
    /// Most requests served at once until their answer starts (a stream's first content);
    /// more are refused with 503 and `Retry-After` rather than queued. Default 1,024. Read at
    /// start.
    #[serde(default)]
    pub(crate) max_concurrent_requests: Option<usize>,
    /// Most streams past their first content counted apart from the requests above: a stream
    /// that has started gives its request slot back and holds one of these until it ends (when
    /// none is free it keeps its request slot). An open stream costs about 40 KiB. Default
    /// 4,096. Read at start.
    #[serde(default)]
    pub(crate) max_open_streams: Option<usize>,
    /// A client that reads nothing of its response for this long is disconnected (and the
    /// upstream request behind it cancelled). Default 30s.
    #[serde(default)]
    pub(crate) write_stall_timeout: Option<Dur>,
}

/// Reload settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSpec {
    /// How often the configuration files are checked for changes. Default 2s; 0 turns the
    /// check off (SIGHUP still reloads).
    #[serde(default)]
    pub(crate) poll_interval: Option<Dur>,
    /// How often backends with `discover` are asked for their models. Default 15s.
    #[serde(default)]
    pub(crate) discovery_interval: Option<Dur>,
}

/// Responses the Responses API keeps (`store: true`, its default) so that a later request can
/// continue them with `previous_response_id`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesSpec {
    /// Where they are kept: `memory` (default; this process only) or `redis://host:port[/db]`,
    /// shared by every gateway using the same Redis (each also keeps its own in memory).
    /// Read at start.
    #[serde(default)]
    pub(crate) store: Option<Spanned<String>>,
    /// How long one is kept after it was written. Default 720h (30 days, as OpenAI).
    #[serde(default)]
    pub(crate) ttl: Option<Dur>,
    /// Most items one conversation may hold, its history included; a turn over it is refused
    /// with 400. Default 1,000.
    #[serde(default)]
    pub(crate) max_items: Option<usize>,
    /// Most bytes of JSON one conversation may hold; over it, 400. Default 4 MiB.
    #[serde(default)]
    pub(crate) max_bytes: Option<usize>,
    /// Most bytes all kept responses may take in memory; the oldest are forgotten first.
    /// Default 256 MiB.
    #[serde(default)]
    pub(crate) memory_bytes: Option<usize>,
}

mod defaults;
mod duration;

pub(crate) use duration::Dur;
#[cfg(test)]
pub(crate) use duration::parse_duration;

#[cfg(test)]
mod tests;
