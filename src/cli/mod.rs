//! The command line: `serve`, `check`, `key new`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "modelgate",
    version,
    about = "A model gateway that routes by openness, license and cost"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (and the admin listener) until SIGTERM.
    Serve {
        /// The entry file; without it the built-in configuration is served.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// API address, overriding the file's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin address, overriding the file's `admin_listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Log line format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Validate a configuration and print every problem; exit 1 if there is any.
    Check {
        /// The entry file; without it the built-in configuration is checked.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show how a request would be decided, without calling anything: the policy and rule,
    /// the allowed deployments in order, and why each other one was refused.
    Explain {
        /// The entry file; without it the built-in configuration is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A chat completion request body (JSON).
        request: PathBuf,
        /// A request label, `k=v` (repeatable), as `x-modelgate-labels` would carry it.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The caller's tenant (when no --key is given).
        #[arg(long)]
        tenant: Option<String>,
        /// The caller's key, by its id in the configuration.
        #[arg(long)]
        key: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run policy tests: YAML cases (a request, and what must happen to it), one line per
    /// failing case and a count; exit 1 if any fails.
    Test {
        /// Test files, or directories of them. Default `policies/tests`.
        files: Vec<PathBuf>,
        /// Decide under this configuration instead of the one each file names.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show which decisions change between two configurations (`--config A --config B`) or two
    /// versions of a policy file (`A.yaml B.yaml`, with the configuration of `--config`): for
    /// each rule, deployments newly allowed, newly refused or tried in another order, and for
    /// which requests. Exit 1 if any decision changes.
    Diff {
        /// Two configurations, or one to which both policy files are applied.
        #[arg(long, short)]
        config: Vec<PathBuf>,
        /// Two policy files: the second's policies in place of the first's.
        policy_files: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the model catalog: class, license, commercial use and price of every model.
    Catalog {
        /// The entry file; without it the built-in configuration is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON (every fact, with its source) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Client keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a fresh key, and the entry to paste under `keys:`.
    New {
        /// The tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// A name for the key that is not secret (shown in logs).
        #[arg(long)]
        id: Option<String>,
    },
}

// === The commands that print ===

mod cases;
mod diff;
mod policy_test;

pub use diff::{DiffReport, run as diff};
pub use policy_test::{Report, run as test};

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;

use crate::accounting::tokens::PromptText;
use crate::config::keys::Caller;
use crate::config::load::{self, Overrides, ProcessEnv};
use crate::config::{Discovered, Origin, Snapshot};
use crate::exchange::chat::{ChatRequest, RequestLimits};
use crate::policy::{self, Ask, EndpointName, Needs, PromptSize, Routing};

/// The configuration as a running gateway would see it: its backends asked once what they
/// serve (each question bounded in time), so discovered models and pinned weights show as they
/// would be served.
pub fn load_snapshot(config: Option<PathBuf>) -> Result<Routing, String> {
    let origin = config.map_or(Origin::Embedded, Origin::File);
    let loaded = load::load(&origin, &Overrides::default(), &ProcessEnv)
        .map_err(|p| format!("the configuration is invalid:\n{p}"))?;
    let config = Arc::new(loaded.config);
    let discovered = probe_all(&config);
    Ok(Routing::at_rest(Snapshot::build(config, &discovered)))
}

/// Asks every discovering backend, and every backend whose weights are pinned, what it serves.
fn probe_all(config: &crate::config::Config) -> Discovered {
    if crate::discovery::probed(config) == 0 {
        return Discovered::default();
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Discovered::default();
    };
    let pools = crate::upstream::client::Pools::default();
    runtime.block_on(async {
        // A pinned file's digest may take a while to compute: wait for it (a one-shot command
        // has nothing better to do), within bounds.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let found = crate::discovery::probe_all(config, &pools).await;
            let pending = found.values().flatten().any(|e| e.digest_pending);
            if !pending || std::time::Instant::now() > until {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    })
}

/// What `modelgate check` says beyond validity: each served deployment whose model was not
/// identified or is retired, each deployment withheld, each policy that only labels reach.
pub fn check_notes(snapshot: &Routing) -> Vec<String> {
    let mut notes = Vec::new();
    for d in &snapshot.deployments {
        if d.discovered_as.is_some() || d.endpoint.expect.is_some() {
            notes.push(format!(
                "note: deployment '{}' serves {} (identified by {}: {})",
                d.name,
                d.model.id,
                d.identity.basis.as_str(),
                d.identity.evidence
            ));
        }
        if d.identity.basis == crate::catalog::identify::Basis::Unknown {
            notes.push(format!(
                "warning: deployment '{}' serves a model that was not identified; its openness, license and locality are unknown, and rules that ask about them refuse it: {}",
                d.name, d.identity.evidence
            ));
        }
        if let Some(day) = &d.model.retired {
            notes.push(format!(
                "warning: deployment '{}' serves {}, which its provider retired on {day}",
                d.name, d.model.id
            ));
        }
    }
    for (name, why) in &snapshot.withheld {
        notes.push(format!("warning: deployment '{name}' is not served: {why}"));
    }
    for w in policy::label_only_policies(snapshot) {
        notes.push(format!("warning: {w}"));
    }
    notes
}

/// `modelgate catalog`: the catalog as a table, or as JSON with every fact and its source.
pub fn catalog(config: Option<PathBuf>, as_json: bool) -> Result<String, String> {
    let snapshot = load_snapshot(config)?;
    let cat = &snapshot.config.catalog;
    if as_json {
        let served: Vec<_> = snapshot
            .deployments
            .iter()
            .map(|d| {
                json!({
                    "deployment": d.name, "model": d.model.id, "openness": d.model.openness.as_str(),
                    "license": d.model.license.id,
                    "locality": d.locality().map_or("unknown", |l| l.as_str()),
                    "identified": &*d.identity,
                })
            })
            .collect();
        let withheld: Vec<_> = snapshot
            .withheld
            .iter()
            .map(|(d, why)| json!({"deployment": d, "why": why}))
            .collect();
        return serde_json::to_string_pretty(&json!({
            "models": cat.models, "licenses": cat.licenses,
            "deployments": served, "withheld": withheld,
        }))
        .map_err(|e| e.to_string());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:<12} {:<24} {:<4} {:<12} {:>9} {:>9}",
        "MODEL", "CLASS", "LICENSE", "OSI", "COMMERCIAL", "IN $/M", "OUT $/M"
    );
    for m in &cat.models {
        let (i, o) = m
            .price
            .as_ref()
            .map_or(("-".to_owned(), "-".to_owned()), |p| {
                (format!("{:.3}", p.input), format!("{:.3}", p.output))
            });
        let _ = writeln!(
            out,
            "{:<36} {:<12} {:<24} {:<4} {:<12} {:>9} {:>9}",
            m.id,
            m.openness.as_str(),
            m.license.id,
            if m.license.osi_approved { "yes" } else { "no" },
            m.license.commercial_use.as_str(),
            i,
            o
        );
    }
    Ok(out)
}

/// `modelgate explain`: the decision for a request, and whether anything was allowed.
pub fn explain(
    config: Option<PathBuf>,
    request: &std::path::Path,
    labels: &[String],
    tenant: Option<String>,
    key: Option<String>,
    as_json: bool,
) -> Result<(String, bool), String> {
    let snapshot = load_snapshot(config)?;
    let body =
        std::fs::read(request).map_err(|e| format!("cannot read {}: {e}", request.display()))?;
    let req = ChatRequest::parse(&body, RequestLimits::default())
        .map_err(|e| format!("invalid request: {e}"))?;
    let caller = match (key, tenant) {
        (Some(k), _) => snapshot
            .config
            .keys
            .by_id(&k)
            .cloned()
            .ok_or_else(|| format!("no key has the id '{k}'"))?,
        (None, Some(t)) => Caller {
            tenant: Arc::from(t.as_str()),
            ..Caller::anonymous()
        },
        (None, None) => Caller::anonymous(),
    };
    let mut request_labels = Vec::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("write labels as k=v, not '{l}'"))?;
        request_labels.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    for (k, v) in req.metadata.iter().flatten() {
        if !request_labels.iter().any(|(rk, _)| rk == k) {
            request_labels.push((k.clone(), v.clone()));
        }
    }
    let prompt = PromptText::new(&req);
    let ask = Ask {
        model: &req.model,
        endpoint: EndpointName::ChatCompletions,
        caller: &caller,
        labels: &request_labels,
        needs: Needs {
            tools: req.uses_tools(),
            vision: req.has_images(),
            choices: req.n,
            hosted_tool: None,
        },
        prompt: &prompt,
        max_output: req.max_output_tokens(),
    };
    let decision = policy::decide(&ask, &snapshot);
    // What the policy's price cap and the budget reservation use, not a formula of its own.
    let worst = |d: &crate::config::Deployment| {
        policy::request_worst_case(d, prompt.tokens(&d.model), req.max_output_tokens(), req.n).0
    };
    match decision {
        Err(e) => {
            let text = if as_json {
                serde_json::to_string_pretty(&json!({"allowed": [], "error": e.body()}))
                    .map_err(|e| e.to_string())?
            } else {
                format!("refused ({}): {e}\n", e.status().as_u16())
            };
            Ok((text, false))
        }
        Ok(d) => {
            let text = if as_json {
                explain_json(&d, &worst)?
            } else {
                explain_text(&d, &worst, &snapshot)
            };
            Ok((text, true))
        }
    }
}

/// A decision as JSON: what is allowed, in order, and what was refused and why.
fn explain_json(
    d: &policy::Decision,
    worst: &dyn Fn(&crate::config::Deployment) -> f64,
) -> Result<String, String> {
    let allowed: Vec<_> = d
        .candidates()
        .iter()
        .map(|c| json!({
            "deployment": c.name, "model": c.model.id, "provider": c.endpoint.provider,
            "openness": c.model.openness.as_str(), "license": c.model.license.id,
            "locality": c.locality().map_or("unknown", |l| l.as_str()), "price": {"input": c.price.input, "output": c.price.output},
            "identified": &*c.identity,
            "worst_case_cost_usd": worst(c),
        }))
        .collect();
    let refused: Vec<_> = d
        .refused()
        .iter()
        .map(
            |(c, r)| json!({"deployment": c.name, "reason": r.kind.as_str(), "detail": &*r.detail}),
        )
        .collect();
    let v = json!({
        "policy": &*d.policy, "rule": &*d.rule, "base_rule": d.base_rule.as_deref(),
        "allowed": allowed, "held_back": d.held_back, "refused": refused,
    });
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

/// A decision as text, one line per deployment.
fn explain_text(
    d: &policy::Decision,
    worst: &dyn Fn(&crate::config::Deployment) -> f64,
    snapshot: &Snapshot,
) -> String {
    let mut out = String::new();
    let _ = write!(out, "policy {} rule {}", d.policy, d.rule);
    if let Some(b) = &d.base_rule {
        let _ = write!(out, " (and rule {b}, which the caller's own labels select)");
    }
    let _ = writeln!(out, "\nallowed, in the order they would be tried:");
    for (i, c) in d.candidates().iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {} — model {} ({}, {}; identified by {}{}), {}, ${}/{} per M tokens, worst case ${:.6}",
            i + 1,
            c.name,
            c.model.id,
            c.model.openness.as_str(),
            c.model.license.id,
            c.identity.basis.as_str(),
            c.quantization()
                .map(|q| format!(", {q}"))
                .unwrap_or_default(),
            c.locality().map_or("unknown", |l| l.as_str()),
            c.price.input,
            c.price.output,
            worst(c)
        );
    }
    if d.held_back > 0 {
        let _ = writeln!(
            out,
            "  ({} more allowed, not tried: the rule says fallback: false)",
            d.held_back
        );
    }
    let refused = d.refused();
    if !refused.is_empty() {
        let _ = writeln!(out, "refused:");
        for (c, r) in &refused {
            let _ = writeln!(out, "  {} — {}: {}", c.name, r.kind.as_str(), r.detail);
        }
    }
    if !snapshot.config.discover.is_empty() {
        let _ = writeln!(
            out,
            "(backends with `discover` were not asked what they serve)"
        );
    }
    out
}
