//! Loading: read the entry file and the catalog, parse them, and validate everything into a
//! [`Config`], collecting every problem (file, line, field) before refusing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_saphyr::{Location, Spanned};
use sha2::{Digest, Sha256};

use super::deployment::{Deployment, Endpoint, Timeouts};
use super::problem::Problems;
use super::secret::{Masks, Secret};
use super::spec::{AuthMode, ConfigSpec, DeploymentSpec, Kind, Locality};
use super::{Config, EMBEDDED_CONFIG, Limits, Origin, ReloadSettings, ServerSettings, yaml};
use crate::auth::keys::{Caller, KeyStore, hex};
use crate::catalog::spec::CatalogFileSpec;
use crate::catalog::{Catalog, builtin};
use crate::limits::LimitSet;
use crate::policy::spec::PolicyFileSpec;
use crate::upstream::breaker::BreakerConfig;
use crate::upstream::client;
use crate::upstream::retry::RetryPolicy;

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
            crate::policy::compile::validate(
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
            problems.0.push(super::problem::Problem {
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

enum Built {
    Ok(Arc<Endpoint>),
    /// Optional and its key is missing.
    Disabled,
    /// Invalid; the problems say why.
    Skip,
}

impl DeploymentCx<'_> {
    /// The pinned digest: one of sha256 (64 hex digits) or revision (40), on a local backend.
    fn expect(
        &self,
        d: &DeploymentSpec,
        problems: &mut Problems,
    ) -> Option<crate::catalog::identify::Digest> {
        use crate::catalog::identify::Digest;
        let e = d.expect.as_ref()?;
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let digest = match (&e.sha256, &e.revision) {
            (Some(h), None) => {
                let h = h.strip_prefix("sha256:").unwrap_or(h);
                hex(h, 64).then(|| Digest::Sha256(h.to_ascii_lowercase()))
            }
            (None, Some(r)) => hex(r, 40).then(|| Digest::Revision(r.to_ascii_lowercase())),
            _ => None,
        };
        if digest.is_none() {
            self.problem(
                problems,
                "expect",
                "give one of 'sha256' (64 hex digits) or 'revision' (a 40-hex-digit commit)",
            );
        }
        if !matches!(d.kind, Kind::OpenaiCompatible) {
            self.problem(
                problems,
                "expect",
                "only the weights of an OpenAI-compatible backend (vLLM, llama.cpp, Ollama) can be checked",
            );
        }
        digest
    }
}

struct DeploymentCx<'a> {
    file: &'a Arc<str>,
    loc: Location,
    index: usize,
    catalog: &'a Catalog,
    env: &'a dyn Env,
}

impl DeploymentCx<'_> {
    fn path(&self, field: &str) -> String {
        format!("deployments[{}].{field}", self.index)
    }

    fn problem(&self, problems: &mut Problems, field: &str, message: impl Into<String>) {
        problems.at(self.file, self.loc, self.path(field), message);
    }

    fn endpoint(&self, d: &DeploymentSpec, problems: &mut Problems) -> Built {
        let before = problems.len();
        if d.name.is_empty() || d.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problem(problems, "name", "must be non-empty, without spaces");
        }
        if d.name == super::AUTO {
            self.problem(
                problems,
                "name",
                "'auto' is reserved for the policy's own choice",
            );
        }
        // The model.
        if d.discover {
            if !matches!(d.kind, Kind::OpenaiCompatible | Kind::Openai) {
                self.problem(
                    problems,
                    "discover",
                    "only OpenAI-compatible backends can be discovered",
                );
            }
            if d.model.is_some() || d.upstream_model.is_some() {
                self.problem(problems, "model", "a discovered backend names its models itself: remove 'model' and 'upstream_model'");
            }
        } else if d.refuse_unidentified {
            self.problem(
                problems,
                "refuse_unidentified",
                "only a discovering backend ('discover: true') has models to identify",
            );
        } else {
            match &d.model {
                None => self.problem(problems, "model", "missing: name the catalog model this deployment serves (or set 'discover: true')"),
                Some(m) if self.catalog.get(m).is_none() => self.problem(
                    problems,
                    "model",
                    format!("unknown model '{m}': add it to a catalog file (`modelgate catalog` lists the known ones)"),
                ),
                Some(_) => {}
            }
        }
        // Where it is.
        let base_url = match (d.kind, &d.base_url) {
            (Kind::Echo, Some(_)) => {
                self.problem(
                    problems,
                    "base_url",
                    "the echo model runs inside the gateway and has no URL",
                );
                String::new()
            }
            (Kind::Echo, None) => String::new(),
            (_, Some(u)) => self.base_url(u, problems),
            (Kind::Openai, None) => "https://api.openai.com/v1".into(),
            (Kind::Anthropic, None) => "https://api.anthropic.com/v1".into(),
            (Kind::Gemini, None) => "https://generativelanguage.googleapis.com/v1beta".into(),
            (Kind::OpenaiCompatible, None) => {
                self.problem(problems, "base_url", "missing: an OpenAI-compatible backend needs its URL, such as http://127.0.0.1:8000/v1");
                String::new()
            }
        };
        // Its key.
        let key = match (&d.api_key_env, &d.api_key_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    problems,
                    "api_key_file",
                    "give the key either by 'api_key_env' or by 'api_key_file'",
                );
                None
            }
            (Some(var), None) => {
                if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.problem(
                        problems,
                        "api_key_env",
                        "must be the name of an environment variable",
                    );
                    None
                } else {
                    match self.env.var(var) {
                        Some(v) => Some(Secret::new(v.trim().to_owned())),
                        None if d.optional => return Built::Disabled,
                        None => {
                            self.problem(
                                problems,
                                "api_key_env",
                                format!("environment variable {var} is not set"),
                            );
                            None
                        }
                    }
                }
            }
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) => Some(Secret::new(v.trim().to_owned())),
                Err(_) if d.optional => return Built::Disabled,
                Err(e) => {
                    self.problem(
                        problems,
                        "api_key_file",
                        format!("cannot read the key file: {}", e.kind()),
                    );
                    None
                }
            },
            (None, None) => {
                if matches!(d.kind, Kind::Openai | Kind::Anthropic | Kind::Gemini) {
                    self.problem(
                        problems,
                        "api_key_env",
                        format!(
                            "a {} deployment needs a key: set 'api_key_env'",
                            d.kind.as_str()
                        ),
                    );
                }
                None
            }
        };
        let masks = key
            .as_ref()
            .map_or_else(Default::default, |k| Masks::of(&[k]));
        let auth_header = key.and_then(|k| {
            let (name, value) = match d.kind {
                Kind::Anthropic => (HeaderName::from_static("x-api-key"), k.expose().to_owned()),
                Kind::Gemini => (
                    HeaderName::from_static("x-goog-api-key"),
                    k.expose().to_owned(),
                ),
                _ => (
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", k.expose()),
                ),
            };
            match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some((name, v))
                }
                Err(_) => {
                    self.problem(
                        problems,
                        "api_key_env",
                        "the key contains characters a header cannot carry",
                    );
                    None
                }
            }
        });
        let price_override = d.price.as_ref().map(|p| (p.input, p.output));
        if let Some((i, o)) = price_override
            && (!i.is_finite() || !o.is_finite() || i < 0.0 || o < 0.0)
        {
            self.problem(problems, "price", "prices must be finite and not negative");
        }
        let defaults = Timeouts::default();
        let t = &d.timeouts;
        let timeouts = Timeouts {
            connect: t.connect.map_or(defaults.connect, |d| d.0),
            first_byte: t.first_byte.map_or(defaults.first_byte, |d| d.0),
            first_token: t.first_token.map_or(defaults.first_token, |d| d.0),
            idle: t.idle.map_or(defaults.idle, |d| d.0),
            total: t.total.map_or(defaults.total, |d| d.0),
            stream_total: t.stream_total.map_or(defaults.stream_total, |d| d.0),
        };
        if [
            timeouts.connect,
            timeouts.first_byte,
            timeouts.first_token,
            timeouts.idle,
            timeouts.total,
            timeouts.stream_total,
        ]
        .iter()
        .any(Duration::is_zero)
        {
            self.problem(problems, "timeouts", "timeouts must be more than 0");
        }
        let rd = RetryPolicy::default();
        let r = &d.retries;
        let retry = RetryPolicy {
            attempts: r.attempts.unwrap_or(rd.attempts),
            on: r.on.clone().unwrap_or(rd.on),
            base: r.backoff.map_or(rd.base, |d| d.0),
            max: r.max_backoff.map_or(rd.max, |d| d.0),
            max_retry_after: r.max_retry_after.map_or(rd.max_retry_after, |d| d.0),
            budget_ratio: r.budget_ratio.unwrap_or(rd.budget_ratio),
            budget_min_per_second: r.budget_min_per_second.unwrap_or(rd.budget_min_per_second),
        };
        if !(0.0..=10.0).contains(&retry.budget_ratio) || retry.attempts > 10 {
            self.problem(
                problems,
                "retries",
                "attempts are at most 10 and budget_ratio between 0 and 10",
            );
        }
        let bd = BreakerConfig::default();
        let b = &d.breaker;
        let breaker = (b.consecutive_failures != Some(0)).then(|| BreakerConfig {
            consecutive_failures: b.consecutive_failures.unwrap_or(bd.consecutive_failures),
            failure_rate: b.failure_rate.unwrap_or(bd.failure_rate),
            base_ejection: b.base_ejection.map_or(bd.base_ejection, |d| d.0),
            max_ejection: b.max_ejection.map_or(bd.max_ejection, |d| d.0),
            ..bd
        });
        if breaker
            .is_some_and(|b| !(0.0..=1.0).contains(&b.failure_rate) || b.base_ejection.is_zero())
        {
            self.problem(
                problems,
                "breaker",
                "failure_rate is between 0 and 1 and base_ejection more than 0",
            );
        }
        let expect = self.expect(d, problems);
        if problems.len() > before {
            return Built::Skip;
        }
        let locality =
            d.locality
                .unwrap_or(if d.kind == Kind::Echo || is_loopback_url(&base_url) {
                    Locality::Local
                } else {
                    Locality::Remote
                });
        let client = client::build(&timeouts);
        Built::Ok(Arc::new(Endpoint {
            name: d.name.clone(),
            kind: d.kind,
            provider: d
                .provider
                .clone()
                .unwrap_or_else(|| d.kind.as_str().to_owned()),
            base_url,
            auth_header,
            masks,
            locality,
            data: d.data,
            region: d.region.clone(),
            quantization: d.quantization.clone(),
            discover: d.discover,
            refuse_unidentified: d.refuse_unidentified,
            expect,
            price_override,
            stream_usage: d.stream_usage.unwrap_or(true),
            timeouts,
            retry,
            breaker,
            limits: d
                .limits
                .as_ref()
                .map(LimitSet::for_deployment)
                .filter(|l| !l.is_empty())
                .map(|limits| crate::limits::Scope {
                    kind: crate::limits::ScopeKind::Deployment,
                    name: Arc::from(d.name.as_str()),
                    limits,
                }),
            client,
        }))
    }

    fn base_url(&self, u: &str, problems: &mut Problems) -> String {
        match reqwest::Url::parse(u) {
            Err(e) => {
                self.problem(problems, "base_url", format!("not a URL: {e}"));
                String::new()
            }
            Ok(url) => {
                if !matches!(url.scheme(), "http" | "https") {
                    self.problem(problems, "base_url", "must be an http:// or https:// URL");
                } else if url.host_str().is_none_or(str::is_empty) {
                    self.problem(problems, "base_url", "must name a host");
                } else if !url.username().is_empty() || url.password().is_some() {
                    self.problem(
                        problems,
                        "base_url",
                        "must not carry credentials: use 'api_key_env'",
                    );
                } else if url.query().is_some() || url.fragment().is_some() {
                    self.problem(problems, "base_url", "must not have a query or a fragment");
                }
                u.trim_end_matches('/').to_owned()
            }
        }
    }
}

/// Whether a base URL names one of the gateway's own listeners: the same port on the same
/// address, on a loopback address or name, or on any address when a listener takes them all.
fn points_at(listeners: [SocketAddr; 2], u: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(u) else {
        return false;
    };
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
    let ip = host.parse::<IpAddr>().ok();
    let local = host.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.is_loopback());
    listeners.iter().any(|l| {
        l.port() == port
            && l.port() != 0
            && (ip == Some(l.ip())
                || (local && (l.ip().is_loopback() || l.ip().is_unspecified()))
                || (l.ip().is_unspecified() && ip.is_some_and(|ip| ip.is_unspecified())))
    })
}

fn is_loopback_url(u: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(u) else {
        return false;
    };
    let host = url.host_str().unwrap_or("");
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

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
