//! Loading: read the entry file and the catalog, parse them, and validate everything into a
//! [`Config`], collecting every problem (file, line, field) before refusing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use super::spec::ConfigSpec;
use super::{
    Config, EMBEDDED_CONFIG, Limits, Origin, ReloadSettings, ResponsesSettings, ServerSettings,
};
use crate::catalog::spec::CatalogFileSpec;
use crate::catalog::{Catalog, builtin};
use crate::config::keys::hex;
use crate::yaml;
use crate::yaml::problem::Problems;

/// Addresses given on the command line, which win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    /// A policy file whose policies take the place of the configuration's policies of the
    /// same names (`modelgate diff` of two versions of a policy file).
    pub policy_file: Option<PathBuf>,
}

/// How secrets are looked up: the process environment in production, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A loaded configuration and the paths it was read from (to watch them).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The entry file and the catalog paths it names (files or directories).
    pub(crate) watched: Vec<PathBuf>,
    /// Deployments left out because their optional key is missing (names, for the log).
    pub disabled: Vec<String>,
}

/// The files a configuration consists of, read but not yet parsed.
struct Sources {
    entry: (Arc<str>, String),
    catalog: Vec<(Arc<str>, String)>,
    policies: Vec<(Arc<str>, String)>,
    /// The policy file (its place in `policies`) whose policies replace those of the same
    /// names.
    replacing: Option<usize>,
    watched: Vec<PathBuf>,
}

/// Loads and validates a configuration.
pub fn load(origin: &Origin, overrides: &Overrides, env: &dyn Env) -> Result<Loaded, Problems> {
    let mut problems = Problems::default();
    let (entry_name, entry_text, base_dir, mut watched) = match origin {
        Origin::Embedded => (
            Arc::from("<built-in>/modelgate.yaml"),
            EMBEDDED_CONFIG.to_owned(),
            None,
            Vec::new(),
        ),
        Origin::File(path) => {
            let name: Arc<str> = Arc::from(path.display().to_string());
            match std::fs::read_to_string(path) {
                // An empty file is far more often a write in progress (or a mistake) than
                // a wish for the defaults.
                Ok(t) if t.trim().is_empty() => {
                    problems.file(&name, "the file is empty".to_owned());
                    return Err(problems);
                }
                Ok(t) => (
                    name,
                    t,
                    path.parent().map(Path::to_path_buf),
                    vec![path.clone()],
                ),
                Err(e) => {
                    problems.file(&name, format!("cannot read the configuration: {e}"));
                    return Err(problems);
                }
            }
        }
    };
    let Some(spec) = yaml::parse::<ConfigSpec>(&entry_name, &entry_text, &mut problems) else {
        return Err(problems);
    };

    let read = |builtin: &[(&str, &str)],
                dir: &str,
                paths: &[Spanned<String>],
                field: &str,
                problems: &mut Problems,
                watched: &mut Vec<PathBuf>| {
        let mut out: Vec<(Arc<str>, String)> = builtin
            .iter()
            .map(|(name, text)| {
                (
                    Arc::from(format!("<built-in>/{dir}/{name}")),
                    (*text).to_owned(),
                )
            })
            .collect();
        for p in paths {
            let path = resolve(base_dir.as_deref(), &p.value);
            match yaml_files(&path) {
                Ok(list) => {
                    for f in list {
                        let name: Arc<str> = Arc::from(f.display().to_string());
                        match std::fs::read_to_string(&f) {
                            Ok(t) => out.push((name, t)),
                            Err(e) => problems.file(&name, format!("cannot read: {e}")),
                        }
                    }
                }
                Err(e) => problems.at(&entry_name, p.referenced, field, e),
            }
            watched.push(path);
        }
        out
    };
    let catalog = read(
        if spec.catalog.builtin {
            builtin::FILES
        } else {
            &[]
        },
        "providers",
        &spec.catalog.paths,
        "catalog.paths",
        &mut problems,
        &mut watched,
    );
    let mut policies = read(
        if spec.policies.builtin {
            crate::config::policies::builtin::FILES
        } else {
            &[]
        },
        "policies",
        &spec.policies.paths,
        "policies.paths",
        &mut problems,
        &mut watched,
    );
    let mut replacing = None;
    if let Some(path) = &overrides.policy_file {
        let name: Arc<str> = Arc::from(path.display().to_string());
        match std::fs::read_to_string(path) {
            Ok(t) => {
                replacing = Some(policies.len());
                policies.push((name, t));
            }
            Err(e) => problems.file(&name, format!("cannot read: {e}")),
        }
    }
    let sources = Sources {
        entry: (entry_name.clone(), entry_text),
        catalog,
        policies,
        replacing,
        watched,
    };
    build(spec, sources, overrides, env, problems)
}

/// Loads a configuration given as texts: the entry file's, and catalog and policy files in
/// place of its `paths` (the built-in files are added as the entry says). For tests, fuzzing
/// and tools that hold configurations in memory.
pub fn load_texts(
    entry: &str,
    catalog: &[(&str, &str)],
    policies: &[(&str, &str)],
    env: &dyn Env,
) -> Result<Loaded, Problems> {
    let mut problems = Problems::default();
    let name: Arc<str> = Arc::from("modelgate.yaml");
    let Some(spec) = yaml::parse::<ConfigSpec>(&name, entry, &mut problems) else {
        return Err(problems);
    };
    let texts = |builtin: bool,
                 files: &'static [(&'static str, &'static str)],
                 dir: &str,
                 extra: &[(&str, &str)]| {
        let shipped = if builtin { files } else { &[] };
        shipped
            .iter()
            .map(|(n, t)| (Arc::from(format!("<built-in>/{dir}/{n}")), (*t).to_owned()))
            .chain(extra.iter().map(|(n, t)| (Arc::from(*n), (*t).to_owned())))
            .collect::<Vec<(Arc<str>, String)>>()
    };
    let sources = Sources {
        entry: (name, entry.to_owned()),
        catalog: texts(spec.catalog.builtin, builtin::FILES, "providers", catalog),
        policies: texts(
            spec.policies.builtin,
            crate::config::policies::builtin::FILES,
            "policies",
            policies,
        ),
        replacing: None,
        watched: Vec::new(),
    };
    build(spec, sources, &Overrides::default(), env, problems)
}

fn build(
    spec: ConfigSpec,
    sources: Sources,
    overrides: &Overrides,
    env: &dyn Env,
    mut problems: Problems,
) -> Result<Loaded, Problems> {
    let file = sources.entry.0.clone();
    let mut hasher = Sha256::new();
    hasher.update(sources.entry.1.as_bytes());

    let mut catalog_files = Vec::new();
    for (name, text) in &sources.catalog {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
        if let Some(f) = yaml::parse::<CatalogFileSpec>(name, text, &mut problems) {
            catalog_files.push((name.clone(), f));
        }
    }
    let catalog = Arc::new(Catalog::build(catalog_files, &mut problems));

    let (policies, policy_names, active_policy) =
        policies::policies(&file, &spec, &sources, &catalog, &mut hasher, &mut problems);
    let listen = address(
        &file,
        spec.listen.as_ref(),
        "listen",
        "127.0.0.1:8400",
        overrides.listen,
        &mut problems,
    );
    let admin_listen = address(
        &file,
        spec.admin_listen.as_ref(),
        "admin_listen",
        "127.0.0.1:8401",
        overrides.admin_listen,
        &mut problems,
    );
    let named = callers::Named {
        names: &policy_names,
        order: &policies,
        active: &active_policy,
        shadow: spec.policies.shadow.as_ref().map(|s| s.value.as_str()),
    };
    let callers = callers::callers(&file, &spec, &named, listen, &mut problems);
    let built = deployment::deployments(
        &file,
        &spec,
        &catalog,
        env,
        [listen, admin_listen],
        &mut problems,
    );
    let settings = settings(&file, &spec, [listen, admin_listen], &mut problems);
    let otlp = crate::config::otlp::resolve(&file, &spec.telemetry, env, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Loaded {
        config: Config {
            hash: hex(&hasher.finalize())[..16].to_owned(),
            server: settings.server,
            auth_required: callers.auth_required,
            keys: callers.keys,
            catalog,
            deployments: built.deployments,
            discover: built.discover,
            verify: built.verify,
            policies,
            active_policy,
            limits: settings.limits,
            limit_store: settings.limit_store,
            on_store_error: spec.limits.on_store_error,
            anonymous: callers.anonymous,
            tenants: callers.tenants,
            reload: settings.reload,
            responses: settings.responses,
            otlp,
        },
        watched: sources.watched,
        disabled: built.disabled,
    })
}

/// The server's, the limits' and reloading's settings.
struct Settings {
    server: ServerSettings,
    limits: Limits,
    limit_store: String,
    reload: ReloadSettings,
    responses: ResponsesSettings,
}

/// A store setting: `memory` (the default) or a Redis URL the client accepts.
fn store(
    file: &Arc<str>,
    field: &str,
    value: &Option<Spanned<String>>,
    problems: &mut Problems,
) -> String {
    let Some(s) = value.as_ref().filter(|s| s.value != "memory") else {
        return "memory".to_owned();
    };
    if !s.value.starts_with("redis://") {
        problems.at(
            file,
            s.referenced,
            field,
            "must be 'memory' or a redis:// URL",
        );
    } else if let Err(e) = redis::Client::open(s.value.as_str()) {
        // The store opens the same URL the same way when it starts.
        problems.at(file, s.referenced, field, format!("not a Redis URL: {e}"));
    }
    s.value.clone()
}

/// The most connections, requests or streams a setting may allow at once.
const MAX_PERMITS: usize = 1_000_000;

fn settings(
    file: &Arc<str>,
    spec: &ConfigSpec,
    [listen, admin_listen]: [SocketAddr; 2],
    problems: &mut Problems,
) -> Settings {
    let dur = |d: &Option<crate::config::spec::Dur>, default: u64| {
        d.map_or(Duration::from_secs(default), |d| d.0)
    };
    let server = ServerSettings {
        listen,
        admin_listen,
        drain_timeout: dur(&spec.server.drain_timeout, 30),
        header_read_timeout: dur(&spec.server.header_read_timeout, 10),
        idle_timeout: dur(&spec.server.idle_timeout, 300),
        max_connections: spec.server.max_connections.unwrap_or(10_000).max(1),
        max_concurrent_requests: spec.server.max_concurrent_requests.unwrap_or(1024).max(1),
        max_open_streams: spec.server.max_open_streams.unwrap_or(4096),
        write_stall_timeout: dur(&spec.server.write_stall_timeout, 30),
    };
    for (field, d) in [
        ("server.header_read_timeout", server.header_read_timeout),
        ("server.idle_timeout", server.idle_timeout),
        ("server.write_stall_timeout", server.write_stall_timeout),
    ] {
        if d.is_zero() {
            problems.at(file, Location::UNKNOWN, field, "must be more than 0");
        }
    }
    // Each is a pool of permits made at start: a number past any machine's sockets is a
    // mistake, and would not start.
    for (field, n) in [
        ("server.max_connections", server.max_connections),
        (
            "server.max_concurrent_requests",
            server.max_concurrent_requests,
        ),
        ("server.max_open_streams", server.max_open_streams),
    ] {
        if n > MAX_PERMITS {
            problems.at(file, Location::UNKNOWN, field, "must be at most 1,000,000");
        }
    }
    let limit_store = store(file, "limits.store", &spec.limits.store, problems);
    let limits = Limits {
        max_body_bytes: spec.limits.max_body_bytes,
        max_messages: spec.limits.max_messages,
        max_json_depth: spec.limits.max_json_depth,
        max_response_bytes: spec.limits.max_response_bytes,
        max_sse_line_bytes: spec.limits.max_sse_line_bytes,
        body_read_timeout: dur(&spec.limits.body_read_timeout, 30).max(Duration::from_millis(100)),
    };
    if limits.max_body_bytes == 0
        || limits.max_messages == 0
        || limits.max_json_depth == 0
        || limits.max_response_bytes == 0
        || limits.max_sse_line_bytes < 1024
    {
        problems.at(
            file,
            Location::UNKNOWN,
            "limits",
            "limits must be positive (max_sse_line_bytes at least 1024)",
        );
    }
    let reload = ReloadSettings {
        poll_interval: dur(&spec.reload.poll_interval, 2),
        discovery_interval: dur(&spec.reload.discovery_interval, 15)
            .max(Duration::from_millis(100)),
    };
    let r = &spec.responses;
    let responses = ResponsesSettings {
        store: store(file, "responses.store", &r.store, problems),
        ttl: dur(&r.ttl, 720 * 3600),
        max_items: r.max_items.unwrap_or(1000),
        max_bytes: r.max_bytes.unwrap_or(4 << 20),
        memory_bytes: r.memory_bytes.unwrap_or(256 << 20),
    };
    if responses.ttl.is_zero() || responses.max_items == 0 || responses.max_bytes == 0 {
        problems.at(
            file,
            Location::UNKNOWN,
            "responses",
            "ttl, max_items and max_bytes must be more than 0",
        );
    }
    Settings {
        server,
        limits,
        limit_store,
        reload,
        responses,
    }
}

fn address(
    file: &Arc<str>,
    spec: Option<&Spanned<String>>,
    field: &str,
    default: &str,
    cli: Option<SocketAddr>,
    problems: &mut Problems,
) -> SocketAddr {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 0));
    if let Some(a) = cli {
        return a;
    }
    let Some(s) = spec else {
        return default.parse().unwrap_or(fallback);
    };
    match s.value.parse() {
        Ok(a) => a,
        Err(_) => {
            problems.at(
                file,
                s.referenced,
                field,
                format!("'{}' is not an address such as 127.0.0.1:8400", s.value),
            );
            fallback
        }
    }
}

/// A path from the configuration, relative to the configuration's directory.
fn resolve(base: Option<&Path>, p: &str) -> PathBuf {
    let p = Path::new(p);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

/// A fingerprint of the watched paths: changes when any file under them changes, appears or
/// goes. Kubernetes swaps a ConfigMap's files through a symlink; reading contents sees it.
pub(crate) fn fingerprint(watched: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in watched {
        h.update(p.as_os_str().as_encoded_bytes());
        let files = if p.is_dir() {
            yaml_files(p).unwrap_or_default()
        } else {
            vec![p.clone()]
        };
        for f in files {
            h.update(f.as_os_str().as_encoded_bytes());
            match std::fs::read(&f) {
                Ok(b) => h.update(&b),
                Err(_) => h.update(b"\0missing"),
            }
        }
    }
    h.finalize().into()
}

/// A catalog or policy path: a file, or a directory whose `*.yaml` / `*.yml` files are read in name order.
pub(crate) fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut out: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        out.sort();
        Ok(out)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err(format!(
            "{} is neither a file nor a directory",
            path.display()
        ))
    }
}

mod callers;
mod deployment;
mod policies;
#[cfg(test)]
mod tests;

/// Refuses limits that cannot mean what they say.
fn check_limit_set(
    l: &super::spec::LimitSetSpec,
    file: &Arc<str>,
    loc: Location,
    path: &str,
    problems: &mut Problems,
) {
    for (name, v) in [
        ("usd_per_day", l.usd_per_day),
        ("usd_per_month", l.usd_per_month),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            problems.at(
                file,
                loc,
                format!("{path}.{name}"),
                "must be a number of dollars, 0 or more",
            );
        }
    }
}
