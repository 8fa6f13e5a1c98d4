//! The generated world as the YAML files the gateway loads: catalog, policies, configuration.

use super::*;

fn quoted(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

/// A model without weights must carry provider terms.
fn model_license(m: &ModelFacts) -> String {
    if m.weights {
        format!("l{}", m.license)
    } else {
        "terms".into()
    }
}

impl World {
    pub(super) fn catalog_yaml(&self) -> String {
        let mut s = String::from("licenses:\n");
        for (i, l) in self.licenses.iter().enumerate() {
            s += &format!(
                "  - {{id: l{i}, name: L, kind: {}, osi_approved: {}, commercial_use: {}, use_restrictions: {}, {}attribution_required: false, output_use_restricted: none, territorial_exclusions: {}, source: t}}\n",
                if l.osi {
                    "permissive"
                } else {
                    "custom_community"
                },
                l.osi,
                COMMERCIAL[l.commercial],
                l.restricted,
                l.mau
                    .map(|m| format!("mau_limit: {m}, "))
                    .unwrap_or_default(),
                if l.excludes_eu { "[EU]" } else { "[]" },
            );
        }
        s += "  - {id: terms, name: T, kind: proprietary_terms, osi_approved: false, commercial_use: allowed, use_restrictions: true, attribution_required: false, output_use_restricted: unknown, source: t}\nmodels:\n";
        for (i, m) in self.models.iter().enumerate() {
            s += &format!(
                "  - {{id: m{i}, name: M, developer: d, license: {}, artifacts: {{weights: {}, architecture: true, training_code: {}, training_data: {}}}, capabilities: {{context_window: {}, tools: {}, vision: {}}}, sources: {{artifacts: t, license: t}}}}\n",
                model_license(m),
                m.weights,
                if m.full_code { "full" } else { "inference" },
                if m.data_released {
                    "released"
                } else {
                    "summary"
                },
                WINDOWS[m.window],
                m.tools,
                m.vision,
            );
        }
        s
    }

    pub(super) fn policy_yaml(&self) -> String {
        format!("policies:\n{}", self.rules_yaml("p", &self.rules))
    }

    /// One policy named `name` with `rules`, as an item of a `policies:` list.
    pub(super) fn rules_yaml(&self, name: &str, rules: &[Rule]) -> String {
        let n_models = self.models.len();
        let mut s = format!("  - name: {name}\n    rules:\n");
        for (i, r) in rules.iter().enumerate() {
            let q = &r.require;
            let models = quoted(r.models.iter().map(|m| {
                if *m == n_models {
                    "auto".to_owned()
                } else {
                    format!("m{m}")
                }
            }));
            s += &format!(
                "      - name: r{i}\n        fallback: {}\n        match: {{tenants: {}, models: {}{}}}\n",
                r.fallback,
                quoted(r.tenants.iter().map(|t| format!("t{t}"))),
                models,
                r.label
                    .map(|l| format!(", labels: {{data: v{l}}}"))
                    .unwrap_or_default(),
            );
            s += &format!(
                "        require:\n          openness: {}\n          locality: {}\n          regions: {}\n          data: {{retains_prompts: {}}}\n          capabilities: {{tools: {}{}}}\n",
                quoted(q.openness.iter().map(|o| OPENNESS[*o].to_owned())),
                quoted(q.locality.iter().map(|l| LOCALITY[*l].to_owned())),
                quoted(q.regions.iter().map(|r| REGIONS[*r].to_owned())),
                if q.no_retention { "false" } else { "null" },
                q.tools,
                q.min_window
                    .map(|w| format!(", min_context_window: {}", WINDOWS[w]))
                    .unwrap_or_default(),
            );
            s += &format!(
                "          license: {{commercial_use: {}{}{}{}{}}}\n",
                quoted(q.commercial.iter().map(|c| COMMERCIAL[*c].to_owned())),
                q.osi
                    .map(|o| format!(", osi_approved: {o}"))
                    .unwrap_or_default(),
                if q.no_restrictions {
                    ", use_restrictions: false"
                } else {
                    ""
                },
                q.mau
                    .map(|m| format!(", monthly_active_users: {m}"))
                    .unwrap_or_default(),
                if q.operator_eu {
                    ", operator_region: EU"
                } else {
                    ""
                },
            );
            s += &format!(
                "          max_price: {{{}{}}}\n",
                q.max_input
                    .map(|p| format!("input_per_million: {p}, "))
                    .unwrap_or_default(),
                q.per_request
                    .map(|p| format!("per_request: {p}"))
                    .unwrap_or_default(),
            );
        }
        s
    }

    pub(super) fn config_yaml(&self) -> String {
        let mut s = String::from(
            "catalog: {builtin: false}\npolicies: {builtin: false, active: p}\ndeployments:\n",
        );
        for (i, d) in self.deployments.iter().enumerate() {
            s += &format!(
                "  - {{name: d{i}, kind: openai-compatible, base_url: 'http://127.0.0.1:{}/v1', model: m{}, locality: {}, data: {{retains_prompts: {}}}, {}price: {{input: {}, output: {}}}}}\n",
                1000 + i,
                d.model,
                LOCALITY[d.locality],
                d.retains,
                d.region
                    .map(|r| format!("region: {}, ", REGIONS[r]))
                    .unwrap_or_default(),
                d.price.0,
                d.price.1,
            );
        }
        s
    }

    pub(super) fn requested(&self) -> String {
        let (nm, nd) = (self.models.len(), self.deployments.len());
        let t = self.request.target;
        if t < nm {
            format!("m{t}")
        } else if t < nm + nd {
            format!("d{}", t - nm)
        } else if t == nm + nd {
            "auto".into()
        } else {
            "unknown-model".into()
        }
    }
}
