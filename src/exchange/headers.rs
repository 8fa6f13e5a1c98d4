//! The headers the gateway adds to answers, the ones it reads from requests (the request id,
//! labels, Anthropic's key), made once: a lookup by string parses and hashes the name each time.

use http::HeaderName;

/// The request's id, as the client sent it (if well-formed) or as the gateway made it.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// A request's labels (`k=v, k2=v2`), named in errors about them.
pub(crate) const LABELS: &str = "x-modelgate-labels";
pub(crate) static X_LABELS: HeaderName = HeaderName::from_static(LABELS);
/// Anthropic's key header: a client's key to the gateway, and the gateway's to Anthropic.
pub(crate) static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

pub(crate) static X_MODEL: HeaderName = HeaderName::from_static("x-modelgate-model");
pub(crate) static X_PROVIDER: HeaderName = HeaderName::from_static("x-modelgate-provider");
pub(crate) static X_DEPLOYMENT: HeaderName = HeaderName::from_static("x-modelgate-deployment");
pub(crate) static X_POLICY: HeaderName = HeaderName::from_static("x-modelgate-policy");
pub(crate) static X_OPENNESS: HeaderName = HeaderName::from_static("x-modelgate-openness");
pub(crate) static X_LICENSE: HeaderName = HeaderName::from_static("x-modelgate-license");
pub(crate) static X_IDENTIFIED: HeaderName = HeaderName::from_static("x-modelgate-identified-by");
pub(crate) static X_QUANTIZATION: HeaderName = HeaderName::from_static("x-modelgate-quantization");
pub(crate) static X_RULE: HeaderName = HeaderName::from_static("x-modelgate-rule");
/// The notice the served model's license asks to be shown (`deployments[].notices`, or a
/// policy's `notices`).
pub(crate) static X_LICENSE_NOTICE: HeaderName =
    HeaderName::from_static("x-modelgate-license-notice");
pub(crate) static X_COST: HeaderName = HeaderName::from_static("x-modelgate-cost-usd");
