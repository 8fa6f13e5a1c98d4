//! ① The way out: every request of the API listener passes here when it ends, whether it was
//! answered, refused before the pipeline (401, 413), shed, unrouted (404, 405), or dropped
//! because its client left or a bug panicked. Here, and only here, it is counted in
//! `modelgate_requests_total`, taken off `modelgate_in_flight_requests`, and logged if the
//! pipeline has not logged it already: exactly once, by a guard that also runs on drop.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response};

use crate::metrics::{Metrics, status_class};
use crate::stream::body::ResponseBody;

/// A response on its way out, with what the boundary counts and logs it by.
pub(crate) struct Exit {
    pub(crate) response: Response<ResponseBody>,
    pub(crate) endpoint: &'static str,
    pub(crate) policy: Option<Arc<str>>,
    /// The pipeline wrote the request's line (or will, when its stream ends).
    pub(crate) logged: bool,
}

impl Exit {
    /// The response of an endpoint's (or a refusal's) outcome, on `endpoint`.
    pub(crate) fn of(outcome: crate::pipeline::Outcome, endpoint: &'static str) -> Exit {
        Exit {
            response: outcome.response,
            endpoint,
            policy: outcome.policy,
            logged: outcome.logged,
        }
    }
}

/// One request on its way out. Dropped without an answer, it counts as cancelled (or, while
/// a panic unwinds, as the 500 the service answers for it).
pub(crate) struct Guard {
    metrics: Arc<Metrics>,
    started: Instant,
    request_id: HeaderValue,
    method: http::Method,
    /// The request's URI (a shared handle on the bytes hyper read, not a copy).
    uri: http::Uri,
    done: bool,
}

impl Guard {
    pub(crate) fn new<B>(metrics: Arc<Metrics>, req: &Request<B>, request_id: HeaderValue) -> Self {
        metrics.in_flight.inc();
        Guard {
            metrics,
            started: Instant::now(),
            request_id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            done: false,
        }
    }

    pub(crate) fn answered(&mut self, exit: &Exit) {
        let policy = exit.policy.as_deref();
        self.counted(exit.response.status(), exit.endpoint, policy, exit.logged);
    }

    /// Counts (and logs, unless the pipeline did) an answer with `status` from `endpoint`
    /// under `policy`: [`Guard::answered`] for a response already given away.
    pub(crate) fn counted(
        &mut self,
        status: http::StatusCode,
        endpoint: &'static str,
        policy: Option<&str>,
        logged: bool,
    ) {
        self.finish(endpoint, status_class(status), policy.unwrap_or("none"));
        if !logged {
            let error = if status.is_success() {
                "-"
            } else {
                status.canonical_reason().unwrap_or("error")
            };
            if tracing::enabled!(tracing::Level::INFO)
                && let Some(mut line) = crate::telemetry::info_line("request answered")
            {
                line.str("request_id", self.request_id.to_str().unwrap_or("-"))
                    .str("method", self.method.as_str())
                    .str("path", &crate::base::printable(self.uri.path()))
                    .str("endpoint", endpoint)
                    .u64("status", status.as_u16().into())
                    .str("error", error)
                    .u64("duration_ms", self.started.elapsed().as_millis() as u64);
            }
        }
    }

    pub(crate) fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The request's handling panicked, and the panic was caught: a 500 (unless it was
    /// counted already, and the panic came after).
    pub(crate) fn panicked(&mut self) {
        if !self.done {
            self.unanswered(true);
        }
    }

    /// Counted and logged as gone without an answer.
    fn unanswered(&mut self, panicked: bool) {
        let endpoint = super::app::endpoint_of(self.uri.path());
        let (class, what) = if panicked {
            ("5xx", "request failed: the gateway panicked")
        } else {
            ("cancelled", "request cancelled: the client went away")
        };
        self.finish(endpoint, class, "none");
        if tracing::enabled!(tracing::Level::INFO)
            && let Some(mut line) = crate::telemetry::info_line(what)
        {
            line.str("request_id", self.request_id.to_str().unwrap_or("-"))
                .str("method", self.method.as_str())
                .str("path", &crate::base::printable(self.uri.path()))
                .str("endpoint", endpoint)
                .u64("duration_ms", self.started.elapsed().as_millis() as u64);
        }
    }

    fn finish(&mut self, endpoint: &str, class: &str, policy: &str) {
        self.done = true;
        self.metrics.in_flight.dec();
        self.metrics
            .requests
            .with_label_values(&[endpoint, class, policy])
            .inc();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.unanswered(std::thread::panicking());
        }
    }
}
