//! Configuration: the entry file and the catalog, validated into [`Config`]; with what local
//! backends were found to serve, turned into the [`Snapshot`] each request reads once.

pub(crate) mod deployment;
pub mod keys;
pub mod load;
pub mod otlp;
pub mod policies;
pub(crate) mod resilience;
pub(crate) mod scopes;
pub(crate) mod secret;
pub mod spec;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::config::keys::KeyStore;
pub use deployment::{Deployment, Endpoint, Timeouts};

/// The built-in entry file served by `modelgate serve` without `--config`.
pub(crate) const EMBEDDED_CONFIG: &str = include_str!("default.yaml");

/// Where a configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    File(PathBuf),
}

/// Limits on requests and upstream answers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: u64,
    pub(crate) max_messages: usize,
    pub(crate) max_json_depth: usize,
    pub(crate) max_response_bytes: u64,
    pub(crate) max_sse_line_bytes: usize,
    pub(crate) body_read_timeout: std::time::Duration,
}

/// Listener settings, read at start.
#[derive(Clone, Debug)]
pub(crate) struct ServerSettings {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) drain_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) max_open_streams: usize,
    pub(crate) write_stall_timeout: Duration,
}

/// Where and for how long responses are kept for `previous_response_id`; read at start.
#[derive(Clone, Debug)]
pub(crate) struct ResponsesSettings {
    /// `memory` or a `redis://` URL.
    pub(crate) store: String,
    pub(crate) ttl: Duration,
    pub(crate) max_items: usize,
    pub(crate) max_bytes: usize,
    pub(crate) memory_bytes: usize,
}

/// Reload settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReloadSettings {
    pub(crate) poll_interval: Duration,
    pub(crate) discovery_interval: Duration,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// SHA-256 (hex) of every file that went into it.
    pub hash: String,
    pub(crate) server: ServerSettings,
    /// Callers must present a key.
    pub(crate) auth_required: bool,
    pub(crate) keys: KeyStore,
    pub catalog: Arc<Catalog>,
    /// Deployments with a fixed model.
    pub deployments: Vec<Arc<Deployment>>,
    /// Backends whose models are discovered at run time.
    pub discover: Vec<Arc<Endpoint>>,
    /// Backends of configured deployments whose weights are pinned (`expect`): asked like
    /// discovered ones, served once the digest matches.
    pub(crate) verify: Vec<Arc<Endpoint>>,
    /// Every loaded policy, validated.
    pub(crate) policies: Vec<Arc<crate::config::policies::spec::PolicySpec>>,
    /// The policy in force for callers whose key names none.
    pub(crate) active_policy: String,
    pub(crate) limits: Limits,
    /// Where limit counters are kept: `memory`, or a Redis URL.
    pub(crate) limit_store: String,
    pub(crate) on_store_error: spec::StoreErrorMode,
    /// The caller of a gateway without keys (the `default` tenant, with its limits).
    pub(crate) anonymous: crate::config::keys::Caller,
    /// Each configured tenant as a caller without a key.
    pub(crate) tenants: std::collections::BTreeMap<String, crate::config::keys::Caller>,
    pub(crate) reload: ReloadSettings,
    pub(crate) responses: ResponsesSettings,
    /// Trace export, when on.
    pub(crate) otlp: Option<Arc<otlp::OtlpSettings>>,
}

/// What each probed backend said it serves, by endpoint name.
pub type Discovered = HashMap<String, Vec<crate::catalog::identify::Evidence>>;

/// The facts one request reads: the configuration plus the deployments that exist right now,
/// and the table from requested names to deployments. Built once per change, never per
/// request; what is learned at run time about its deployments is kept beside it, by each
/// deployment's index in `deployments`.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub deployments: Vec<Arc<Deployment>>,
    routes: HashMap<String, Route>,
    /// Model ids for `GET /v1/models`, in catalog order, with their deployments.
    pub(crate) listed: Vec<(Arc<crate::catalog::Model>, Vec<usize>)>,
    /// Deployments not served, and why (weights that do not match their pinned digest).
    pub(crate) withheld: Vec<(String, String)>,
}

/// What a requested name stands for.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// A model id (or a name a backend serves it under): its deployments.
    Model(Vec<usize>),
    /// One deployment, asked for by name.
    Deployment(usize),
    /// `auto`: every deployment of a language model.
    Auto,
}

/// The alias that lets the policy choose among all models.
pub(crate) const AUTO: &str = "auto";

impl Snapshot {
    /// Expands discovered backends into deployments and builds the route table.
    pub fn build(config: Arc<Config>, discovered: &Discovered) -> Snapshot {
        let mut withheld = Vec::new();
        let mut deployments = configured(&config, discovered, &mut withheld);
        deployments.extend(discovered_deployments(&config, discovered, &mut withheld));
        let deployments: Vec<Arc<Deployment>> = deployments
            .iter()
            .enumerate()
            .map(|(i, d)| Arc::new(d.at_index(i)))
            .collect();
        let (routes, by_model) = route_table(&config, &deployments);
        Snapshot {
            config,
            deployments,
            routes,
            listed: by_model,
            withheld,
        }
    }

    pub(crate) fn route(&self, requested: &str) -> Option<&Route> {
        self.routes.get(requested)
    }

    /// Every requested name with what it stands for (for tables built once per snapshot).
    pub(crate) fn routes(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.routes.iter().map(|(name, r)| (name.as_str(), r))
    }
}

/// The configured deployments that are served: all but those whose pinned weights the
/// backend has not shown (those are `withheld`, with why).
fn configured(
    config: &Config,
    discovered: &Discovered,
    withheld: &mut Vec<(String, String)>,
) -> Vec<Arc<Deployment>> {
    let mut deployments: Vec<Arc<Deployment>> = Vec::with_capacity(config.deployments.len());
    for d in &config.deployments {
        let Some(want) = &d.endpoint.expect else {
            deployments.push(d.clone());
            continue;
        };
        let evidence = discovered
            .get(&d.endpoint.name)
            .and_then(|found| found.iter().find(|e| e.served == d.upstream_model));
        let verdict = match evidence {
            None => Err(format!(
                "its weights are pinned ({want}) and the backend has not shown them yet"
            )),
            Some(ev) => {
                crate::catalog::identify::identify(&config.catalog, ev, Some(want), Some(&d.model))
            }
        };
        match verdict {
            Ok(identity) => deployments.push(Arc::new(d.with_identity(identity))),
            Err(why) => withheld.push((d.name.clone(), why)),
        }
    }
    deployments
}

/// A deployment for every model a discovering backend listed, identified from what it
/// showed; models it cannot serve are `withheld`, with why.
fn discovered_deployments(
    config: &Config,
    discovered: &Discovered,
    withheld: &mut Vec<(String, String)>,
) -> Vec<Arc<Deployment>> {
    let mut deployments = Vec::new();
    for ep in &config.discover {
        let Some(found) = discovered.get(&ep.name) else {
            continue;
        };
        for ev in found {
            let identity = match crate::catalog::identify::identify(
                &config.catalog,
                ev,
                ep.expect.as_ref(),
                None,
            ) {
                Ok(i) => i,
                Err(why) => {
                    // Named by the backend's configured name: what a backend lists stays
                    // out of metric labels.
                    withheld.push((ep.name.clone(), format!("'{}': {why}", ev.served)));
                    continue;
                }
            };
            if identity.model.is_none() && ep.refuse_unidentified {
                withheld.push((
                    ep.name.clone(),
                    format!(
                        "'{}' was not identified ({}), and the backend says refuse_unidentified",
                        ev.served, identity.evidence
                    ),
                ));
                continue;
            }
            let model = match identity
                .model
                .as_deref()
                .and_then(|id| config.catalog.get(id))
            {
                Some(m) => m.clone(),
                // Known by what the backend calls it, unless that is a catalog model's
                // name: an unidentified model never passes for one (in routes, listings
                // and rules that name models). Then it goes by its deployment's name.
                None if config.catalog.match_served_name(&ev.served).is_some() => Arc::new(
                    config
                        .catalog
                        .uncatalogued(&format!("{}/{}", ep.name, ev.served)),
                ),
                None => Arc::new(config.catalog.uncatalogued(&ev.served)),
            };
            deployments.push(Arc::new(Deployment::discovered(
                ep.clone(),
                model,
                &ev.served,
                identity,
            )));
        }
    }
    deployments
}

/// What each requested name stands for, and the models to list with their deployments (in
/// catalog order).
#[expect(clippy::type_complexity, reason = "the snapshot's own two fields")]
fn route_table(
    config: &Config,
    deployments: &[Arc<Deployment>],
) -> (
    HashMap<String, Route>,
    Vec<(Arc<crate::catalog::Model>, Vec<usize>)>,
) {
    let mut routes: HashMap<String, Route> = HashMap::new();
    let mut by_model: Vec<(Arc<crate::catalog::Model>, Vec<usize>)> = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        match by_model.iter_mut().find(|(m, _)| m.id == d.model.id) {
            Some((_, v)) => v.push(i),
            None => by_model.push((d.model.clone(), vec![i])),
        }
    }
    for (m, idx) in &by_model {
        routes.insert(m.id.clone(), Route::Model(idx.clone()));
    }
    // A model is also reachable under the name its backend uses (`upstream_model`, or the
    // name a backend listed), unless that name is a catalog id or stands for deployments
    // of different models.
    let mut served: HashMap<&str, (Option<&str>, Vec<usize>)> = HashMap::new();
    for (i, d) in deployments.iter().enumerate() {
        let e = served
            .entry(d.upstream_model.as_str())
            .or_insert((Some(d.model.id.as_str()), Vec::new()));
        if e.0 != Some(d.model.id.as_str()) {
            e.0 = None;
        }
        e.1.push(i);
    }
    // Deployment names first: a backend's name for a model never hides a deployment.
    for (i, d) in deployments.iter().enumerate() {
        routes.entry(d.name.clone()).or_insert(Route::Deployment(i));
    }
    let mut served: Vec<_> = served.into_iter().collect();
    served.sort_by_key(|(_, (_, idx))| idx[0]);
    for (name, (model, idx)) in served {
        if model.is_some() && !routes.contains_key(name) {
            routes.insert(name.to_owned(), Route::Model(idx));
        }
    }
    routes.insert(AUTO.to_owned(), Route::Auto);
    by_model.sort_by_key(|(m, _)| {
        config
            .catalog
            .models
            .iter()
            .position(|c| c.id == m.id)
            .unwrap_or(usize::MAX)
    });
    (routes, by_model)
}
