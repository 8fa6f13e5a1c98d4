//! What a request reads, once, at its start: the snapshot in force with its policies, and
//! beside it what each runtime owner keeps for that snapshot's deployments (health, metric
//! series, the limiter), by each deployment's index. A reload or a discovery builds a new one
//! and swaps it in whole; health and counters carry over to the deployments that stayed.

use std::sync::Arc;

use crate::config::Snapshot;
use crate::limits::Limiter;
use crate::metrics::SeriesTable;
use crate::policy::Routing;
use crate::upstream::health::{HealthBook, Healths};

/// The state in force: every request loads it once, a reload swaps it whole.
pub(crate) type Live = Arc<arc_swap::ArcSwap<Current>>;

#[derive(Debug)]
pub struct Current {
    pub(crate) routing: Routing,
    /// Ejection, retry budgets, cooldowns and latency of each deployment.
    pub(crate) health: Arc<Healths>,
    /// Each deployment's metric series.
    pub(crate) series: SeriesTable,
    /// Rate limits and budgets: kept across reloads while the store stays the same.
    pub(crate) limiter: Arc<Limiter>,
    /// The trace exporter, when traces are exported: kept across reloads while its settings
    /// stay the same.
    pub(crate) tracer: Option<Arc<crate::telemetry::traces::Tracer>>,
}

impl Current {
    /// The state for `snapshot`, keeping what `book` knows of its deployments.
    pub(crate) fn new(
        snapshot: Snapshot,
        book: &HealthBook,
        limiter: Arc<Limiter>,
        tracer: Option<Arc<crate::telemetry::traces::Tracer>>,
    ) -> Current {
        let health = Arc::new(book.healths(&snapshot));
        let series = SeriesTable::new(&snapshot);
        Current {
            routing: Routing::new(snapshot, health.clone()),
            health,
            series,
            limiter,
            tracer,
        }
    }
}

impl std::ops::Deref for Current {
    type Target = Routing;

    fn deref(&self) -> &Routing {
        &self.routing
    }
}

impl AsRef<Routing> for Current {
    fn as_ref(&self) -> &Routing {
        &self.routing
    }
}
