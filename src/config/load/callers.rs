//! Who may call: tenants, keys and whether a key is required, validated into callers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde_saphyr::Location;

use super::check_limit_set;
use crate::config::keys::{Caller, KeyStore};
use crate::config::policies::spec::PolicySpec;
use crate::config::scopes::LimitSet;
use crate::config::spec::{AuthMode, ConfigSpec, KeySpec, TenantSpec};
use crate::yaml::problem::Problems;

/// Who may call, as a configuration says.
pub(super) struct Callers {
    pub(crate) keys: KeyStore,
    /// Callers must present a key.
    pub(crate) auth_required: bool,
    /// The caller of a gateway without keys (the `default` tenant, with its limits).
    pub(crate) anonymous: Caller,
    /// Each configured tenant as a caller without a key (its labels, first policy and limits),
    /// for `modelgate test` and `diff`.
    pub(crate) tenants: BTreeMap<String, Caller>,
}

type Tenants<'a> = HashMap<&'a str, &'a TenantSpec>;

/// The policies callers may name: which exist, in which order (a caller keeps its shadow as a
/// position in it), and the ones that decide and shadow the requests of callers naming none.
pub(super) struct Named<'a> {
    pub(super) names: &'a HashSet<String>,
    pub(super) order: &'a [Arc<PolicySpec>],
    pub(super) active: &'a str,
    pub(super) shadow: Option<&'a str>,
}

impl Named<'_> {
    /// Refuses `name` at `path` when no policy has it.
    fn check(&self, file: &Arc<str>, loc: Location, path: String, name: &str, p: &mut Problems) {
        if !self.names.contains(name) {
            p.at(file, loc, path, format!("no policy is named '{name}'"));
        }
    }

    /// The shadow of a caller decided by policy `live` that names `own` (its key's or its
    /// tenant's), else `policies.shadow`: its position, or none when it is `live` itself (it
    /// would always agree).
    fn shadow_of(&self, live: &str, own: Option<&str>) -> Option<usize> {
        let shadow = own.or(self.shadow).filter(|s| *s != live)?;
        self.order.iter().position(|p| p.name == shadow)
    }
}

/// The callers of `spec`; the API listens on `listen`.
pub(super) fn callers(
    file: &Arc<str>,
    spec: &ConfigSpec,
    named: &Named<'_>,
    listen: SocketAddr,
    problems: &mut Problems,
) -> Callers {
    let tenants = tenants(file, spec, named, problems);
    let keys = keys(file, spec, &tenants, named, problems);
    let auth_required = auth_required(file, spec, &keys, listen, problems);
    let anonymous = caller_of(&tenants, named, None, "default");
    let by_name = tenants
        .keys()
        .map(|t| ((*t).to_owned(), caller_of(&tenants, named, None, t)))
        .collect();
    Callers {
        keys,
        auth_required,
        anonymous,
        tenants: by_name,
    }
}

fn tenants<'a>(
    file: &Arc<str>,
    spec: &'a ConfigSpec,
    named: &Named<'_>,
    problems: &mut Problems,
) -> Tenants<'a> {
    let mut tenants: Tenants<'a> = HashMap::new();
    for (i, t) in spec.tenants.iter().enumerate() {
        let loc = t.referenced;
        let t = &t.value;
        let path = |f: &str| format!("tenants[{i}].{f}");
        if t.name.trim().is_empty() || tenants.insert(t.name.as_str(), t).is_some() {
            problems.at(
                file,
                loc,
                path("name"),
                "tenant names must be non-empty and unique",
            );
        }
        for p in &t.policies {
            named.check(file, loc, path("policies"), p, problems);
        }
        if let Some(s) = &t.shadow {
            named.check(file, loc, path("shadow"), s, problems);
        }
        if let Some(l) = &t.limits {
            check_limit_set(l, file, loc, &path("limits"), problems);
        }
    }
    tenants
}

/// The caller of a key (none: of tenant `tenant` without a key), with its tenant's labels and
/// limits, and the policies that decide and shadow its requests.
fn caller_of(
    tenants: &Tenants<'_>,
    named: &Named<'_>,
    key: Option<&KeySpec>,
    tenant: &str,
) -> Caller {
    let tenant = key.map_or(tenant, |k| k.tenant.as_str());
    let t = tenants.get(tenant);
    let mut all: BTreeMap<String, String> = t.map(|t| t.labels.clone()).unwrap_or_default();
    if let Some(k) = key {
        all.extend(k.labels.iter().map(|(a, b)| (a.clone(), b.clone())));
    }
    let none = LimitSet::default();
    let tenant_limits = t
        .and_then(|t| t.limits.as_ref())
        .map_or(none, LimitSet::from_spec);
    let key_limits = key.map(|k| {
        let limits = k.limits.as_ref().map_or(none, LimitSet::from_spec);
        (k.id.as_str(), limits)
    });
    let policy = key
        .and_then(|k| k.policy.as_deref())
        .or_else(|| t.and_then(|t| t.policies.first()).map(String::as_str));
    let own_shadow = key
        .and_then(|k| k.shadow.as_deref())
        .or_else(|| t.and_then(|t| t.shadow.as_deref()));
    Caller {
        key_id: key.map(|k| Arc::from(k.id.as_str())),
        tenant: Arc::from(tenant),
        policy: policy.map(Arc::from),
        shadow: named.shadow_of(policy.unwrap_or(named.active), own_shadow),
        labels: Arc::from(all.into_iter().collect::<Vec<_>>()),
        limits: Arc::from(crate::config::scopes::caller_scopes(
            key_limits.as_ref().map(|(id, l)| (*id, l)),
            (tenant, &tenant_limits),
        )),
        expires: None,
        digest: None,
    }
}

fn keys(
    file: &Arc<str>,
    spec: &ConfigSpec,
    tenants: &Tenants<'_>,
    named: &Named<'_>,
    problems: &mut Problems,
) -> KeyStore {
    let mut keys = KeyStore::default();
    let mut key_ids = HashSet::new();
    for (i, k) in spec.keys.iter().enumerate() {
        let loc = k.referenced;
        let k = &k.value;
        let path = |f: &str| format!("keys[{i}].{f}");
        if k.id.trim().is_empty() || !key_ids.insert(k.id.clone()) {
            problems.at(
                file,
                loc,
                path("id"),
                "key ids must be non-empty and unique",
            );
        }
        if k.tenant.trim().is_empty() {
            problems.at(file, loc, path("tenant"), "must not be empty");
        }
        if let Some(p) = &k.policy {
            named.check(file, loc, path("policy"), p, problems);
        }
        if let Some(s) = &k.shadow {
            named.check(file, loc, path("shadow"), s, problems);
        }
        if let (Some(p), Some(t)) = (&k.policy, tenants.get(k.tenant.as_str()))
            && !t.policies.is_empty()
            && !t.policies.contains(p)
        {
            problems.at(
                file,
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
            check_limit_set(l, file, loc, &path("limits"), problems);
        }
        let mut caller = caller_of(tenants, named, Some(k), "");
        if let Some(e) = &k.expires {
            caller.expires = crate::base::day_start(e);
            if caller.expires.is_none() {
                problems.at(
                    file,
                    loc,
                    path("expires"),
                    "must be a date such as 2027-01-31",
                );
            }
        }
        if let Err(e) = keys.insert_caller(&k.sha256, caller) {
            problems.at(file, loc, path("sha256"), e);
        }
    }
    keys
}

/// Whether callers must present a key: refused where none are configured and the API
/// would listen beyond this machine.
fn auth_required(
    file: &Arc<str>,
    spec: &ConfigSpec,
    keys: &KeyStore,
    listen: SocketAddr,
    problems: &mut Problems,
) -> bool {
    let mode = spec.auth.as_ref().map_or(AuthMode::Keys, |a| a.value);
    let auth_loc = spec
        .auth
        .as_ref()
        .map_or(Location::UNKNOWN, |a| a.referenced);
    match mode {
        AuthMode::None => {
            if !keys.is_empty() {
                problems.at(
                    file,
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
                    file,
                    loc,
                    "listen",
                    format!(
                        "the API would listen on {listen}, beyond this machine, with no keys: configure 'keys', or say 'auth: none' to allow it"
                    ),
                );
            }
            !keys.is_empty()
        }
    }
}
