//! ④ The decision again, before each attempt that starts after a reload (retries included):
//! the caller found again in the new configuration, the request decided again, and the attempt
//! allowed only to a deployment the new decision allows at the same place.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Ask, EndpointName, Needs, PromptSize, Routing, decide};
use crate::config::Deployment;
use crate::config::keys::Caller;

/// Whether an attempt may still go to a deployment: a reload since the decision may have
/// narrowed the policy, or changed or revoked the caller's key, and every attempt that starts
/// after it (retries included) follows the new configuration, with the caller found again in
/// it; a caller it no longer has may not go anywhere.
pub(crate) struct Recheck<'a, T> {
    /// What is in force now (a [`Routing`], or what holds one).
    live: Arc<ArcSwap<T>>,
    /// What the request was decided under: anything else (a reload, or discovery finding a
    /// backend's models changed under the same configuration) means deciding again.
    decided: Arc<T>,
    model: &'a str,
    endpoint: EndpointName,
    caller: &'a Caller,
    labels: &'a [(String, String)],
    needs: Needs,
    bytes: usize,
    max_output: Option<u32>,
    /// The deployments the newest routing allows, with that routing.
    cache: std::sync::Mutex<Option<Allowed<T>>>,
}

/// A routing, and the deployments it allows the request.
type Allowed<T> = (Arc<T>, Vec<Arc<Deployment>>);

/// What a request asks for, as a re-check needs it.
pub(crate) struct Asked<'a> {
    pub(crate) model: &'a str,
    pub(crate) endpoint: EndpointName,
    pub(crate) labels: &'a [(String, String)],
    pub(crate) needs: Needs,
    pub(crate) bytes: usize,
    pub(crate) max_output: Option<u32>,
}

impl<'a, T: AsRef<Routing>> Recheck<'a, T> {
    /// A re-check of a request decided under `decided`, against whatever `live` holds when
    /// an attempt starts.
    pub(crate) fn new(
        live: Arc<ArcSwap<T>>,
        decided: Arc<T>,
        caller: &'a Caller,
        asked: Asked<'a>,
    ) -> Recheck<'a, T> {
        Recheck {
            live,
            decided,
            model: asked.model,
            endpoint: asked.endpoint,
            caller,
            labels: asked.labels,
            needs: asked.needs,
            bytes: asked.bytes,
            max_output: asked.max_output,
            cache: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn allows(&self, d: &Deployment) -> bool {
        let now = self.live.load();
        // A key that expired while the request waited (a retry's backoff) goes no further.
        if self
            .caller
            .expires
            .is_some_and(|at| crate::base::unix_now() >= at)
        {
            return false;
        }
        if Arc::ptr_eq(&now, &self.decided) {
            return true;
        }
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.as_ref().is_none_or(|(at, _)| !Arc::ptr_eq(at, &now)) {
            let routing: &Routing = (**now).as_ref();
            let names = match routing.config.caller_again(self.caller) {
                Some(caller) => {
                    let size = ByteSize(self.bytes);
                    let ask = Ask {
                        model: self.model,
                        endpoint: self.endpoint,
                        caller: &caller,
                        labels: self.labels,
                        needs: self.needs,
                        prompt: &size,
                        max_output: self.max_output,
                    };
                    decide(&ask, routing)
                        .map(|dec| dec.candidates().unordered().cloned().collect())
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            *cache = Some((arc_swap::Guard::into_inner(now), names));
        }
        // Allowed by name is not enough: the deployment the attempt would use is the old
        // snapshot's, so it must still be the same place (address, key, facts) as the new one.
        cache
            .as_ref()
            .is_some_and(|(_, allowed)| allowed.iter().any(|n| n.name == d.name && n.same_place(d)))
    }
}

/// A prompt measured by its bytes only (embeddings, token counts).
pub(crate) struct ByteSize(pub usize);

impl PromptSize for ByteSize {
    fn bytes(&self) -> usize {
        self.0
    }
    fn tokens(&self, _: &crate::catalog::Model) -> u64 {
        (self.0 as u64).div_ceil(4)
    }
}
