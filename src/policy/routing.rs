//! ④ What a decision reads: a snapshot, its policies compiled against its deployments, and
//! what has been observed of them at run time (kept by their users, read here).

use std::sync::Arc;

use super::compile::Policies;
use crate::config::{Deployment, Snapshot};

/// What the runtime has observed of a snapshot's deployments, as ranking needs it.
pub trait Observed: std::fmt::Debug + Send + Sync {
    /// The average time to first byte, if any was observed.
    fn latency_seconds(&self, d: &Deployment) -> Option<f64>;
}

/// Nothing observed yet (a check, an explanation, a test).
#[derive(Debug)]
struct Nothing;

impl Observed for Nothing {
    fn latency_seconds(&self, _: &Deployment) -> Option<f64> {
        None
    }
}

/// A snapshot with its policies compiled against its deployments: built once per snapshot.
#[derive(Debug)]
pub struct Routing {
    pub(crate) snapshot: Snapshot,
    pub(crate) policies: Policies,
    pub(super) observed: Arc<dyn Observed>,
}

impl Routing {
    pub(crate) fn new(snapshot: Snapshot, observed: Arc<dyn Observed>) -> Routing {
        let config = &snapshot.config;
        let policies = Policies::compile(
            &config.policies,
            &config.active_policy,
            &snapshot.deployments,
        );
        Routing {
            snapshot,
            policies,
            observed,
        }
    }

    /// Routing with nothing observed of any deployment.
    pub fn at_rest(snapshot: Snapshot) -> Routing {
        Routing::new(snapshot, Arc::new(Nothing))
    }
}

impl std::ops::Deref for Routing {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl AsRef<Routing> for Routing {
    fn as_ref(&self) -> &Routing {
        self
    }
}
