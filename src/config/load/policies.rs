//! The policy files of a configuration, validated against the catalog.

use std::collections::HashSet;
use std::sync::Arc;

use serde_saphyr::Location;
use sha2::{Digest, Sha256};

use super::Sources;
use crate::catalog::Catalog;
use crate::config::policies::spec::PolicyFileSpec;
use crate::config::spec::ConfigSpec;
use crate::yaml::{self, problem::Problems};

/// The policies of a configuration's files, validated against the catalog, their names, and
/// the policy in force.
pub(super) fn policies(
    file: &Arc<str>,
    spec: &ConfigSpec,
    sources: &Sources,
    catalog: &Catalog,
    hasher: &mut Sha256,
    problems: &mut Problems,
) -> (
    Vec<Arc<crate::config::policies::spec::PolicySpec>>,
    HashSet<String>,
    String,
) {
    let mut policies = Vec::new();
    let mut policy_names = HashSet::new();
    // The names the replacing file defines (its own problems are reported when it is read).
    let replaced: HashSet<String> = sources
        .replacing
        .and_then(|r| sources.policies.get(r))
        .and_then(|(n, t)| yaml::parse::<PolicyFileSpec>(n, t, &mut Problems::default()))
        .map(|f| f.policies.into_iter().map(|p| p.value.name).collect())
        .unwrap_or_default();
    for (i, (name, text)) in sources.policies.iter().enumerate() {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
        if let Some(mut f) = yaml::parse::<PolicyFileSpec>(name, text, problems) {
            if sources.replacing != Some(i) {
                f.policies.retain(|p| !replaced.contains(&p.value.name));
            }
            crate::config::policies::validate::validate(
                name,
                &f.policies,
                catalog,
                &mut policy_names,
                problems,
            );
            policies.extend(f.policies.into_iter().map(|p| Arc::new(p.value)));
        }
    }
    let active_policy = spec.policies.active.as_ref().map_or_else(
        || crate::config::policies::DEFAULT_POLICY.to_owned(),
        |a| a.value.clone(),
    );
    if !policy_names.contains(&active_policy) {
        let loc = spec
            .policies
            .active
            .as_ref()
            .map_or(Location::UNKNOWN, |a| a.referenced);
        problems.at(
            file,
            loc,
            "policies.active",
            format!("no policy is named '{active_policy}'"),
        );
    }
    if let Some(s) = &spec.policies.shadow
        && !policy_names.contains(&s.value)
    {
        let why = format!("no policy is named '{}'", s.value);
        problems.at(file, s.referenced, "policies.shadow", why);
    }
    (policies, policy_names, active_policy)
}
