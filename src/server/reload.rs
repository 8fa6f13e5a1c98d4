//! Reload: build a new snapshot, validate it, then swap it in atomically; on any problem keep
//! the old one. Triggered by SIGHUP, by a change of the watched files, and by what discovered
//! backends say they serve. A request loads the snapshot once and keeps it to its end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::load::{self, Env, Loaded, Overrides};
use crate::config::{Config, Discovered, Origin, Snapshot};
use crate::live::{Current, Live};
use crate::metrics::Metrics;
use crate::telemetry::traces::Tracer;
use arc_swap::ArcSwap;

/// The reloadable state of a running gateway.
pub struct State {
    pub live: Live,
    /// What is known of each deployment, kept across snapshots.
    pub(crate) health: crate::upstream::health::HealthBook,
    /// Connections to upstreams, for requests and discovery alike.
    pub(crate) pools: Arc<crate::upstream::client::Pools>,
    origin: Origin,
    overrides: Overrides,
    env: Box<dyn Env + Send + Sync>,
    metrics: Arc<Metrics>,
    /// The limiter in force; replaced only when `limits.store` changes, so counters survive
    /// reloads.
    limiter: Mutex<Arc<crate::limits::Limiter>>,
    /// The trace exporter in force; replaced only when its settings change.
    tracer: Mutex<Option<Arc<Tracer>>>,
    inner: Mutex<Inner>,
}

struct Inner {
    config: Arc<Config>,
    watched: Vec<PathBuf>,
    fingerprint: [u8; 32],
    discovered: Discovered,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// A new configuration is in force.
    Changed { hash: String },
    /// The files hold the configuration already in force.
    Unchanged,
    /// The files hold an invalid configuration; the old one stays.
    Refused { problems: String },
}

impl State {
    pub(crate) fn new(
        loaded: Loaded,
        origin: Origin,
        overrides: Overrides,
        env: Box<dyn Env + Send + Sync>,
        metrics: Arc<Metrics>,
    ) -> Arc<State> {
        let config = Arc::new(loaded.config);
        let health = crate::upstream::health::HealthBook::default();
        // As many idle connections per upstream host as requests and streams may be open.
        let pools = Arc::new(crate::upstream::client::Pools::new(
            config
                .server
                .max_concurrent_requests
                .saturating_add(config.server.max_open_streams),
        ));
        let limiter = Arc::new(crate::limits::Limiter::for_config(&config));
        limiter.count_errors_in(metrics.limit_store_errors.clone());
        let tracer = tracer_for(&config, None, &pools, &metrics);
        let current = Current::new(
            Snapshot::build(config.clone(), &Discovered::default()),
            &health,
            limiter.clone(),
            tracer.clone(),
        );
        metrics.set_config(&current, &current.series);
        let fingerprint = load::fingerprint(&loaded.watched);
        Arc::new(State {
            live: Arc::new(ArcSwap::from_pointee(current)),
            health,
            pools,
            origin,
            overrides,
            env,
            metrics,
            limiter: Mutex::new(limiter),
            tracer: Mutex::new(tracer),
            inner: Mutex::new(Inner {
                config,
                watched: loaded.watched,
                fingerprint,
                discovered: Discovered::default(),
            }),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner().config.clone()
    }

    /// Reads the files again and, if they hold a valid configuration, puts it in force.
    pub fn reload(&self) -> Reloaded {
        let result = load::load(&self.origin, &self.overrides, self.env.as_ref());
        let mut inner = self.inner();
        match result {
            Err(problems) => {
                inner.fingerprint = load::fingerprint(&inner.watched);
                self.metrics
                    .config
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(
                    event = "config_reload",
                    result = "error",
                    problems = problems.len(),
                    "configuration refused; the previous one stays in force: {}",
                    // One line per event: the problems joined, not one per line.
                    problems.to_string().lines().collect::<Vec<_>>().join("; ")
                );
                Reloaded::Refused {
                    problems: problems.to_string(),
                }
            }
            Ok(loaded) => {
                inner.watched = loaded.watched;
                inner.fingerprint = load::fingerprint(&inner.watched);
                if loaded.config.hash == inner.config.hash {
                    self.metrics
                        .config
                        .config_reloads
                        .with_label_values(&["unchanged"])
                        .inc();
                    return Reloaded::Unchanged;
                }
                let old = &inner.config.server;
                let new = &loaded.config.server;
                if old.listen != new.listen || old.admin_listen != new.admin_listen {
                    tracing::warn!(
                        "listen addresses changed: they take effect at the next restart"
                    );
                }
                if !loaded.disabled.is_empty() {
                    tracing::info!(deployments = ?loaded.disabled, "deployments left out: their keys are not set");
                }
                let hash = loaded.config.hash.clone();
                inner.config = Arc::new(loaded.config);
                self.publish(&inner);
                self.metrics
                    .config
                    .config_reloads
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(event = "config_reload", result = "ok", hash = %hash, "configuration reloaded");
                Reloaded::Changed { hash }
            }
        }
    }

    /// The watched files' fingerprint, when it differs from the last load's.
    fn files_changed(&self) -> Option<[u8; 32]> {
        let (watched, last) = {
            let inner = self.inner();
            (inner.watched.clone(), inner.fingerprint)
        };
        if watched.is_empty() {
            return None;
        }
        let now = load::fingerprint(&watched);
        (now != last).then_some(now)
    }

    fn publish(&self, inner: &Inner) {
        let limiter = {
            let mut l = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
            let c = &inner.config;
            if l.describes() != c.limit_store || l.on_error != c.on_store_error {
                let fresh = Arc::new(crate::limits::Limiter::for_config(c));
                fresh.count_errors_in(self.metrics.limit_store_errors.clone());
                *l = fresh;
            }
            l.clone()
        };
        let tracer = {
            let mut t = self.tracer.lock().unwrap_or_else(PoisonError::into_inner);
            *t = tracer_for(&inner.config, t.take(), &self.pools, &self.metrics);
            t.clone()
        };
        let snapshot = Current::new(
            Snapshot::build(inner.config.clone(), &inner.discovered),
            &self.health,
            limiter,
            tracer,
        );
        self.metrics.set_config(&snapshot, &snapshot.series);
        let before = self.live.load();
        for (name, why) in &snapshot.withheld {
            if !before.withheld.iter().any(|(n, w)| n == name && w == why) {
                tracing::warn!(deployment = %name, "deployment not served: {why}");
            }
        }
        for d in &snapshot.deployments {
            if d.identity.basis == crate::catalog::identify::Basis::Unknown
                && !before
                    .deployments
                    .iter()
                    .any(|b| b.name == d.name && b.identity.evidence == d.identity.evidence)
            {
                tracing::warn!(
                    deployment = %d.endpoint.name,
                    "a served model was not identified; its openness, license and locality are unknown, and policies that ask about them refuse it: {}",
                    d.identity.evidence
                );
            }
        }
        self.live.store(Arc::new(snapshot));
    }

    /// Asks every discovering backend (and every backend whose weights are pinned) what it
    /// serves, and updates the snapshot on a change. Returns whether every one answered.
    pub(crate) async fn discover(&self) -> bool {
        let config = self.config();
        let asked = crate::discovery::probed(&config);
        if asked == 0 {
            return true;
        }
        let found = crate::discovery::probe_all(&config, &self.pools).await;
        // A digest still being taken counts as not answered yet: asked again in a second.
        let all_answered =
            found.len() == asked && found.values().flatten().all(|e| !e.digest_pending);
        let mut inner = self.inner();
        if found != inner.discovered {
            for (name, models) in &found {
                if inner.discovered.get(name) != Some(models) {
                    let served: Vec<&str> = models.iter().map(|e| e.served.as_str()).collect();
                    tracing::info!(backend = %name, models = ?served, "backend discovered");
                }
            }
            for name in inner.discovered.keys() {
                if !found.contains_key(name) {
                    tracing::info!(backend = %name, "backend no longer answers");
                }
            }
            inner.discovered = found;
            self.publish(&inner);
        }
        all_answered
    }
}

/// Reloads on SIGHUP and whenever the watched files change, until the process ends.
/// How long changed files must stay unchanged before they are loaded.
const SETTLE: Duration = Duration::from_millis(100);

pub(crate) async fn watch(state: Arc<State>) {
    let poll = state.config().reload.poll_interval;
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    let mut tick = (!poll.is_zero()).then(|| tokio::time::interval(poll));
    loop {
        let hup_fired = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let ticked = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup_fired => {
                tracing::info!("SIGHUP: reloading the configuration");
                state.reload();
            }
            () = ticked => {
                // A writer that writes in place may be half done: load only files that
                // stayed the same for a moment (write-then-rename needs no such wait).
                if let Some(seen) = state.files_changed() {
                    tokio::time::sleep(SETTLE.min(poll)).await;
                    if state.files_changed() == Some(seen) {
                        state.reload();
                    }
                }
            }
        }
    }
}

/// Asks discovering backends what they serve, every `discovery_interval`.
/// Until every backend has answered once, they are asked every second (one that starts after
/// the gateway serves within a second of answering, not an interval later).
pub(crate) async fn discovery(state: Arc<State>) {
    let mut all_answered = false;
    loop {
        let every = state.config().reload.discovery_interval;
        let wait = if all_answered {
            every
        } else {
            every.min(Duration::from_secs(1))
        };
        tokio::time::sleep(wait).await;
        all_answered = state.discover().await;
    }
}

/// The trace exporter for `config`: `kept` while the settings are the same (its queue and
/// connection stay), a new one when they change, none when export is off.
fn tracer_for(
    config: &Config,
    kept: Option<Arc<Tracer>>,
    pools: &crate::upstream::client::Pools,
    metrics: &Metrics,
) -> Option<Arc<Tracer>> {
    let settings = config.otlp.as_ref()?;
    if let Some(t) = kept.filter(|t| t.settings == *settings) {
        return Some(t);
    }
    let client = match pools.control(Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the trace exporter's client: traces are not exported");
            return None;
        }
    };
    Some(Tracer::start(
        settings.clone(),
        client,
        metrics.trace_counters(),
    ))
}
