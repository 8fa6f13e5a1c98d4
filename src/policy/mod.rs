//! ④ Decide: which deployments may serve a request, and in which order to try them. Pure and
//! synchronous: the snapshot has everything needed.
//!
//! The [`Decision`] is the only way to name a deployment to the upstream layer, and only this
//! module can make one, so no retry or fallback can reach a deployment the decision left out.

use std::sync::Arc;

use http::StatusCode;

use crate::api::{ErrorBody, ErrorType};
use crate::auth::Caller;
use crate::config::{Deployment, Route, Snapshot};
use crate::error::printable;

/// The policy every request is decided by until policies are configured.
pub const DEFAULT_POLICY: &str = "default";

/// The outcome of deciding one request.
#[derive(Debug)]
pub struct Decision {
    /// The policy that decided.
    pub policy: Arc<str>,
    /// The allowed deployments, most preferred first. Private: only `decide` fills it.
    candidates: Vec<Arc<Deployment>>,
}

impl Decision {
    /// The deployments this request may use, in the order to try them.
    pub fn candidates(&self) -> &[Arc<Deployment>] {
        &self.candidates
    }

    /// Whether `d` is one of the allowed deployments.
    pub fn allows(&self, d: &Deployment) -> bool {
        self.candidates.iter().any(|c| std::ptr::eq(c.as_ref(), d))
    }
}

/// Why no deployment may serve a request.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("model '{0}' is not served here")]
    UnknownModel(String),
}

impl PolicyError {
    pub fn status(&self) -> StatusCode {
        match self {
            PolicyError::UnknownModel(_) => StatusCode::NOT_FOUND,
        }
    }

    pub fn body(&self) -> ErrorBody {
        match self {
            PolicyError::UnknownModel(m) => ErrorBody::new(
                ErrorType::InvalidRequestError,
                format!(
                    "model '{}' is not served by this gateway; GET /v1/models lists the models you can use",
                    printable(m)
                ),
            )
            .param("model")
            .code("model_not_found"),
        }
    }
}

/// Decides where a request for `model` may go.
pub fn decide(model: &str, _caller: &Caller, snapshot: &Snapshot) -> Result<Decision, PolicyError> {
    let mut candidates: Vec<Arc<Deployment>> = match snapshot.route(model) {
        None => return Err(PolicyError::UnknownModel(model.to_owned())),
        Some(Route::Deployment(i)) => snapshot.deployments.get(*i).cloned().into_iter().collect(),
        Some(Route::Model(idx)) => idx
            .iter()
            .filter_map(|i| snapshot.deployments.get(*i).cloned())
            .collect(),
        Some(Route::Auto) => snapshot
            .deployments
            .iter()
            .filter(|d| !d.model.test_only)
            .cloned()
            .collect(),
    };
    if candidates.is_empty() {
        return Err(PolicyError::UnknownModel(model.to_owned()));
    }
    // Local first (no data leaves the machine, no bill), then the cheapest.
    candidates.sort_by(|a, b| {
        (a.endpoint.locality as u8)
            .cmp(&(b.endpoint.locality as u8))
            .then((a.price.input + a.price.output).total_cmp(&(b.price.input + b.price.output)))
    });
    Ok(Decision {
        policy: Arc::from(DEFAULT_POLICY),
        candidates,
    })
}
