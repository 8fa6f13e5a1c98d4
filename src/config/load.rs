//! Loading: read the entry file and the catalog, parse them, and validate everything into a
//! [`Config`], collecting every problem (file, line, field) before refusing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use super::deployment::Deployment;
use super::spec::{AuthMode, ConfigSpec};
use super::{Config, EMBEDDED_CONFIG, Limits, Origin, ReloadSettings, ServerSettings};
use crate::catalog::spec::CatalogFileSpec;
use crate::catalog::{Catalog, builtin};
use crate::config::keys::{Caller, KeyStore, hex};
use crate::limits::LimitSet;
use crate::policy::spec::PolicyFileSpec;
use crate::yaml;
use crate::yaml::problem::Problems;

/// Addresses given on the command line, which win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
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
    pub watched: Vec<PathBuf>,
    /// Deployments left out because their optional key is missing (names, for the log).
    pub disabled: Vec<String>,
}

/// The files a configuration consists of, read but not yet parsed.
struct Sources {
    entry: (Arc<str>, String),
    catalog: Vec<(Arc<str>, String)>,
    policies: Vec<(Arc<str>, String)>,
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
    let policies = read(
        if spec.policies.builtin {
            crate::policy::builtin::FILES
        } else {
            &[]
        },
        "policies",
        &spec.policies.paths,
        "policies.paths",
        &mut problems,
        &mut watched,
    );
    let sources = Sources {
        entry: (entry_name.clone(), entry_text),
        catalog,
        policies,
        watched,
    };
    build(origin, spec, sources, overrides, env, problems)
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
            crate::policy::builtin::FILES,
            "policies",
            policies,
        ),
        watched: Vec::new(),
    };
    build(
        &Origin::Embedded,
        spec,
        sources,
        &Overrides::default(),
        env,
        problems,
    )
}

fn build(
    origin: &Origin,
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

    // Policies.
    let mut policies = Vec::new();
    let mut policy_names = HashSet::new();
    for (name, text) in &sources.policies {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
        if let Some(f) = yaml::parse::<PolicyFileSpec>(name, text, &mut problems) {
            crate::policy::validate::validate(
                name,
                &f.policies,
                &catalog,
                &mut policy_names,
                &mut problems,
            );
            policies.extend(f.policies.into_iter().map(|p| Arc::new(p.value)));
        }
    }
    let active_policy = spec.policies.active.as_ref().map_or_else(
        || crate::policy::DEFAULT_POLICY.to_owned(),
        |a| a.value.clone(),
    );
    if !policy_names.contains(&active_policy) {
        let loc = spec
            .policies
            .active
            .as_ref()
            .map_or(Location::UNKNOWN, |a| a.referenced);
        problems.at(
            &file,
            loc,
            "policies.active",
            format!("no policy is named '{active_policy}'"),
        );
    }

    // Listeners and authentication.
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
    let mut tenants: HashMap<&str, &super::spec::TenantSpec> = HashMap::new();
    for (i, t) in spec.tenants.iter().enumerate() {
        let loc = t.referenced;
        let t = &t.value;
        let path = |f: &str| format!("tenants[{i}].{f}");
        if t.name.trim().is_empty() || tenants.insert(t.name.as_str(), t).is_some() {
            problems.at(
                &file,
                loc,
                path("name"),
                "tenant names must be non-empty and unique",
            );
        }
        for p in &t.policies {
            if !policy_names.contains(p) {
                problems.at(
                    &file,
                    loc,
                    path("policies"),
                    format!("no policy is named '{p}'"),
                );
            }
        }
        if let Some(l) = &t.limits {
            check_limit_set(l, &file, loc, &path("limits"), &mut problems);
        }
    }
    let caller_of = |key: Option<(&str, Option<&super::spec::LimitSetSpec>)>,
                     tenant: &str,
                     policy: Option<&str>,
                     labels: &BTreeMap<String, String>| {
        let t = tenants.get(tenant);
        let mut all: BTreeMap<String, String> = t.map(|t| t.labels.clone()).unwrap_or_default();
        all.extend(labels.iter().map(|(a, b)| (a.clone(), b.clone())));
        let none = LimitSet::default();
        let tenant_limits = t
            .and_then(|t| t.limits.as_ref())
            .map_or(none, LimitSet::from_spec);
        let key_limits = key.map(|(id, l)| (id, l.map_or(none, LimitSet::from_spec)));
        Caller {
            key_id: key.map(|(id, _)| Arc::from(id)),
            tenant: Arc::from(tenant),
            policy: policy
                .or_else(|| t.and_then(|t| t.policies.first()).map(String::as_str))
                .map(Arc::from),
            labels: Arc::from(all.into_iter().collect::<Vec<_>>()),
            limits: Arc::from(crate::limits::caller_scopes(
                key_limits.as_ref().map(|(id, l)| (*id, l)),
                (tenant, &tenant_limits),
            )),
            expires: None,
            digest: None,
        }
    };
    let mut keys = KeyStore::default();
    let mut key_ids = HashSet::new();
    for (i, k) in spec.keys.iter().enumerate() {
        let loc = k.referenced;
        let k = &k.value;
        let path = |f: &str| format!("keys[{i}].{f}");
        if k.id.trim().is_empty() || !key_ids.insert(k.id.clone()) {
            problems.at(
                &file,
                loc,
                path("id"),
                "key ids must be non-empty and unique",
            );
        }
        if k.tenant.trim().is_empty() {
            problems.at(&file, loc, path("tenant"), "must not be empty");
        }
        if let Some(p) = &k.policy
            && !policy_names.contains(p)
        {
            problems.at(
                &file,
                loc,
                path("policy"),
                format!("no policy is named '{p}'"),
            );
        }
        if let (Some(p), Some(t)) = (&k.policy, tenants.get(k.tenant.as_str()))
            && !t.policies.is_empty()
            && !t.policies.contains(p)
        {
            problems.at(
                &file,
                loc,
                path("policy"),
                format!(
                    "tenant '{}' may not use policy '{p}' (its policies: {})",
                    k.tenant,
                    t.policies.join(", ")
                ),
            );
        }
        if let Some(l) = &k.limits {
            check_limit_set(l, &file, loc, &path("limits"), &mut problems);
        }
        let mut caller = caller_of(
            Some((k.id.as_str(), k.limits.as_ref())),
            &k.tenant,
            k.policy.as_deref(),
            &k.labels,
        );
        if let Some(e) = &k.expires {
            caller.expires = crate::limits::window::day_start(e);
            if caller.expires.is_none() {
                problems.at(
                    &file,
                    loc,
                    path("expires"),
                    "must be a date such as 2027-01-31",
                );
            }
        }
        if let Err(e) = keys.insert_caller(&k.sha256, caller) {
            problems.at(&file, loc, path("sha256"), e);
        }
    }
    let mode = spec.auth.as_ref().map_or(AuthMode::Keys, |a| a.value);
    let auth_loc = spec
        .auth
        .as_ref()
        .map_or(Location::UNKNOWN, |a| a.referenced);
    let auth_required = match mode {
        AuthMode::None => {
            if !keys.is_empty() {
                problems.at(
                    &file,
                    auth_loc,
                    "auth",
                    "'auth: none' but keys are configured; remove one or the other",
                );
            }
            false
        }
        AuthMode::Keys => {
            if keys.is_empty() && !listen.ip().is_loopback() {
                let loc = spec
                    .listen
                    .as_ref()
                    .map_or(Location::UNKNOWN, |l| l.referenced);
                problems.at(
                    &file,
                    loc,
                    "listen",
                    format!(
                        "the API would listen on {listen}, beyond this machine, with no keys: configure 'keys', or say 'auth: none' to allow it"
                    ),
                );
            }
            !keys.is_empty()
        }
    };

    // Deployments.
    let mut names = HashSet::new();
    let mut deployments = Vec::new();
    let mut discover = Vec::new();
    let mut verify = Vec::new();
    let mut disabled = Vec::new();
    for (i, d) in spec.deployments.iter().enumerate() {
        let cx = DeploymentCx {
            file: &file,
            loc: d.referenced,
            index: i,
            catalog: &catalog,
            env,
        };
        let d = &d.value;
        if !names.insert(d.name.clone()) {
            problems.at(
                &file,
                cx.loc,
                cx.path("name"),
                format!("duplicate deployment name '{}'", d.name),
            );
            continue;
        }
        if let Some(base) = d.base_url.as_deref()
            && points_at([listen, admin_listen], base)
        {
            cx.problem(
                &mut problems,
                "base_url",
                format!(
                    "{} is this gateway's own address: every request to it would come back to the gateway",
                    crate::base::printable(base)
                ),
            );
            continue;
        }
        match cx.endpoint(d, &mut problems) {
            Built::Skip => {}
            Built::Disabled => disabled.push(d.name.clone()),
            Built::Ok(ep) => {
                if d.discover {
                    discover.push(ep);
                } else {
                    if ep.expect.is_some() {
                        verify.push(ep.clone());
                    }
                    if let Some(model) = d.model.as_ref().and_then(|m| catalog.get(m)) {
                        let upstream = d.upstream_model.clone().unwrap_or_else(|| model.id.clone());
                        deployments.push(Arc::new(Deployment::configured(
                            d.name.clone(),
                            ep,
                            model.clone(),
                            upstream,
                        )));
                    }
                }
            }
        }
    }
    for d in &deployments {
        if let Some(m) = catalog.get(&d.name)
            && m.id != d.model.id
        {
            problems.0.push(crate::yaml::problem::Problem {
                file: file.clone(),
                line: 0,
                column: 0,
                path: "deployments".into(),
                message: format!(
                    "deployment '{}' has the id of another catalog model; rename it",
                    d.name
                ),
            });
        }
    }

    let dur = |d: &Option<super::spec::Dur>, default: u64| {
        d.map_or(Duration::from_secs(default), |d| d.0)
    };
    let server = ServerSettings {
        listen,
        admin_listen,
        drain_timeout: dur(&spec.server.drain_timeout, 30),
        header_read_timeout: dur(&spec.server.header_read_timeout, 10),
        max_connections: spec.server.max_connections.unwrap_or(10_000).max(1),
        max_concurrent_requests: spec.server.max_concurrent_requests.unwrap_or(1024).max(1),
        write_stall_timeout: dur(&spec.server.write_stall_timeout, 30),
    };
    for (field, d) in [
        ("server.header_read_timeout", server.header_read_timeout),
        ("server.write_stall_timeout", server.write_stall_timeout),
    ] {
        if d.is_zero() {
            problems.at(&file, Location::UNKNOWN, field, "must be more than 0");
        }
    }
    let anonymous = caller_of(None, "default", None, &BTreeMap::new());
    let limit_store = match &spec.limits.store {
        None => "memory".to_owned(),
        Some(s) if s.value == "memory" => "memory".to_owned(),
        Some(s) => {
            if !s.value.starts_with("redis://") {
                problems.at(
                    &file,
                    s.referenced,
                    "limits.store",
                    "must be 'memory' or a redis:// URL",
                );
            } else if let Err(e) = crate::limits::redis_store::RedisStore::new(&s.value) {
                problems.at(&file, s.referenced, "limits.store", e);
            }
            s.value.clone()
        }
    };
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
            &file,
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

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Loaded {
        config: Config {
            origin: origin.clone(),
            hash: hex(&hasher.finalize())[..16].to_owned(),
            server,
            auth_required,
            keys,
            catalog,
            deployments,
            discover,
            verify,
            policies,
            active_policy,
            limits,
            limit_store,
            on_store_error: spec.limits.on_store_error,
            anonymous,
            reload,
        },
        watched: sources.watched,
        disabled,
    })
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
pub fn fingerprint(watched: &[PathBuf]) -> [u8; 32] {
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
fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
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

mod deployment;
#[cfg(test)]
mod tests;

use deployment::{Built, DeploymentCx, points_at};

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
