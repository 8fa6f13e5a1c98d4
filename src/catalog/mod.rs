//! The model catalog: what each model is (artifacts, derived openness class, license terms,
//! capabilities, list price), built from `providers/*.yaml` and validated once at load.

pub(crate) mod builtin;
pub(crate) mod duties;
pub(crate) mod identify;
pub(crate) mod names;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_saphyr::{Location, Spanned};

use crate::yaml::problem::Problems;
pub(crate) use spec::{
    ArtifactsSpec, CapabilitiesSpec, CommercialUse, LicenseKind, MofClass, Openness, OutputUse,
    PriceSpec, SourcesSpec, Task, TrainingCode, TrainingData,
};
use spec::{CatalogFileSpec, DutySpec, LicenseSpec, ModelSpec};

/// A license with the attributes policies test.
#[derive(Debug, Serialize)]
pub(crate) struct License {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) spdx: Option<String>,
    pub(crate) kind: LicenseKind,
    pub(crate) osi_approved: bool,
    pub(crate) open_per_mof: bool,
    pub(crate) commercial_use: CommercialUse,
    pub(crate) use_restrictions: bool,
    pub(crate) mau_limit: Option<u64>,
    pub(crate) attribution_required: bool,
    pub(crate) derivative_naming: Option<String>,
    pub(crate) output_use_restricted: OutputUse,
    pub(crate) hosted_service_is_distribution: bool,
    pub(crate) territorial_exclusions: Vec<String>,
    pub(crate) url: Option<String>,
    pub(crate) source: String,
    pub(crate) verified: bool,
    /// What the license obliges the licensee to do, each with its clause.
    pub(crate) duties: Vec<DutySpec>,
    /// The notice answers carry where notices are turned on (the texts of the duties serving
    /// brings on, in ASCII), made once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) notice: Option<String>,
    /// `notice` as the `x-modelgate-license-notice` header value.
    #[serde(skip)]
    pub(crate) notice_header: Option<http::HeaderValue>,
}

/// Price in USD per million tokens.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Price {
    pub(crate) input: f64,
    pub(crate) output: f64,
    pub(crate) cache_read: Option<f64>,
    pub(crate) cache_write: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) as_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source: Option<String>,
}

/// One model, validated.
#[derive(Debug, Serialize)]
pub struct Model {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) developer: String,
    pub(crate) license: Arc<License>,
    pub(crate) artifacts: ArtifactsSpec,
    /// Derived from the artifacts and the license, never typed by hand.
    pub(crate) openness: Openness,
    pub(crate) mof_class: Option<MofClass>,
    pub(crate) capabilities: CapabilitiesSpec,
    pub(crate) price: Option<Price>,
    #[serde(skip)]
    pub(crate) served_as: Vec<String>,
    pub(crate) sources: SourcesSpec,
    pub(crate) test_only: bool,
    /// Chat or embedding.
    pub(crate) task: Task,
    /// Not identified: served by a backend, but not (or not surely) any catalog model; openness,
    /// license and commercial use unknown.
    pub(crate) uncatalogued: bool,
    /// The day its provider stopped serving it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retired: Option<String>,
}

/// The catalog every snapshot carries.
#[derive(Debug, Default)]
pub struct Catalog {
    pub models: Vec<Arc<Model>>,
    pub(crate) licenses: Vec<Arc<License>>,
    by_id: HashMap<String, Arc<Model>>,
    /// Every name of every model (its id and `served_as`), by [`names::key`]; true when the
    /// only names with that key are Ollama tags.
    by_name: HashMap<String, (Arc<Model>, bool)>,
}

/// The openness class the facts imply (`shared/openness.md` §2): closed without weights;
/// open-source when the weights are under an open license and the training code is complete and
/// the training data documented in detail or released; open-weight otherwise.
pub(crate) fn derive_openness(artifacts: &ArtifactsSpec, license: &License) -> Openness {
    if !artifacts.weights {
        return Openness::Closed;
    }
    let open_license = license.osi_approved || license.open_per_mof;
    if open_license
        && artifacts.architecture
        && artifacts.training_code == TrainingCode::Full
        && artifacts.training_data >= TrainingData::Detailed
    {
        Openness::OpenSource
    } else {
        Openness::OpenWeight
    }
}

impl Openness {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Openness::Unknown => "unknown",
            Openness::Closed => "closed",
            Openness::OpenWeight => "open-weight",
            Openness::OpenSource => "open-source",
        }
    }
}

impl CommercialUse {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CommercialUse::Allowed => "allowed",
            CommercialUse::Conditional => "conditional",
            CommercialUse::Prohibited => "prohibited",
            CommercialUse::Unknown => "unknown",
        }
    }
}

/// The id of the license given to models found on a backend but not in the catalog.
pub(crate) const UNKNOWN_LICENSE: &str = "unknown";

impl Catalog {
    /// Builds the catalog from parsed files, collecting every problem.
    pub(crate) fn build(
        files: Vec<(Arc<str>, CatalogFileSpec)>,
        problems: &mut Problems,
    ) -> Catalog {
        let mut licenses: HashMap<String, Arc<License>> = HashMap::new();
        let mut license_order = Vec::new();
        let mut models_spec: Vec<(Arc<str>, usize, Spanned<ModelSpec>)> = Vec::new();
        for (file, spec) in files {
            for (i, l) in spec.licenses.into_iter().enumerate() {
                let loc = l.referenced;
                let l = l.value;
                if licenses.contains_key(&l.id) {
                    problems.at(
                        &file,
                        loc,
                        format!("licenses[{i}].id"),
                        format!("duplicate license id '{}'", l.id),
                    );
                    continue;
                }
                for (j, d) in l.duties.iter().enumerate() {
                    if let Some(e) = duties::check(d) {
                        problems.at(&file, loc, format!("licenses[{i}].duties[{j}]"), e);
                    }
                }
                let license = Arc::new(License::from_spec(l));
                license_order.push(license.clone());
                licenses.insert(license.id.clone(), license);
            }
            for (i, m) in spec.models.into_iter().enumerate() {
                models_spec.push((file.clone(), i, m));
            }
        }
        if !licenses.contains_key(UNKNOWN_LICENSE) {
            let l = Arc::new(License::unknown());
            license_order.push(l.clone());
            licenses.insert(l.id.clone(), l);
        }

        let mut cat = Catalog {
            licenses: license_order,
            ..Catalog::default()
        };
        for (file, i, m) in models_spec {
            if let Some(model) = cat.model(&file, i, m, &licenses, problems) {
                cat.insert(Arc::new(model));
            }
        }
        cat
    }

    /// The model of the `i`th entry of `file`, checked; none when it cannot be one.
    fn model(
        &self,
        file: &Arc<str>,
        i: usize,
        m: Spanned<ModelSpec>,
        licenses: &HashMap<String, Arc<License>>,
        problems: &mut Problems,
    ) -> Option<Model> {
        let loc = m.referenced;
        let m = m.value;
        let path = |f: &str| format!("models[{i}].{f}");
        if m.id.is_empty() || m.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.at(
                file,
                loc,
                path("id"),
                "a model id must be non-empty and contain no spaces",
            );
            return None;
        }
        if self.by_id.contains_key(&m.id) {
            problems.at(
                file,
                loc,
                path("id"),
                format!("duplicate model id '{}'", m.id),
            );
            return None;
        }
        let Some(license) = licenses.get(&m.license).cloned() else {
            problems.at(
                file,
                loc,
                path("license"),
                format!(
                    "unknown license '{}'; define it under 'licenses'",
                    m.license
                ),
            );
            return None;
        };
        let derived = Catalog::check_facts(&m, &license, file, loc, &path, problems)?;
        if !self.names_free(&m, file, loc, &path, problems) {
            return None;
        }
        let model = Model {
            served_as: m.served_as.iter().map(|s| s.to_ascii_lowercase()).collect(),
            retired: m.retired,
            id: m.id,
            name: m.name,
            developer: m.developer,
            license,
            artifacts: m.artifacts,
            openness: derived,
            mof_class: m.mof_class,
            capabilities: m.capabilities,
            price: m.price.map(|p| Price {
                input: p.input,
                output: p.output,
                cache_read: p.cache_read,
                cache_write: p.cache_write,
                as_of: Some(p.as_of),
                source: Some(p.source),
            }),
            sources: m.sources,
            test_only: m.test_only,
            task: m.task,
            uncatalogued: false,
        };
        Some(model)
    }

    /// The facts a model states that its artifacts and license must bear out; the openness
    /// they make (none when they contradict its stated one).
    fn check_facts(
        m: &ModelSpec,
        license: &License,
        file: &Arc<str>,
        loc: Location,
        path: &dyn Fn(&str) -> String,
        problems: &mut Problems,
    ) -> Option<Openness> {
        // A test model is no model: it has no class, whatever its code's license says.
        let derived = if m.test_only {
            Openness::Unknown
        } else {
            derive_openness(&m.artifacts, license)
        };
        if let Some(stated) = m.openness
            && stated != derived
        {
            problems.at(
                file,
                loc,
                path("openness"),
                format!(
                    "states '{}' but its artifacts and license make it '{}'",
                    stated.as_str(),
                    derived.as_str()
                ),
            );
            return None;
        }
        if !m.artifacts.weights && license.kind != LicenseKind::ProprietaryTerms && !m.test_only {
            problems.at(
                file,
                loc,
                path("license"),
                "a model without published weights is governed by its provider's terms: use a license of kind 'proprietary_terms'",
            );
        }
        if let Some(p) = &m.price
            && let Err(e) = check_price(p)
        {
            problems.at(file, loc, path("price"), e);
        }
        if m.capabilities.context_window == 0 {
            problems.at(
                file,
                loc,
                path("capabilities.context_window"),
                "must be at least 1",
            );
        }
        if let Some(day) = &m.retired
            && !is_date(day)
        {
            problems.at(file, loc, path("retired"), "a date, as YYYY-MM-DD");
        }
        Some(derived)
    }

    /// Whether the model's id and served names are free: each names it alone.
    fn names_free(
        &self,
        m: &ModelSpec,
        file: &Arc<str>,
        loc: Location,
        path: &dyn Fn(&str) -> String,
        problems: &mut Problems,
    ) -> bool {
        let mut names_ok = true;
        for (j, name) in std::iter::once(&m.id).chain(&m.served_as).enumerate() {
            let k = names::key(name);
            let taken = self
                .by_name
                .get(&k)
                .filter(|(other, _)| other.id != m.id)
                .map(|(other, _)| other.id.clone());
            if k.is_empty() || taken.is_some() {
                let field = if j == 0 {
                    path("id")
                } else {
                    path(&format!("served_as[{}]", j - 1))
                };
                problems.at(
                    file,
                    loc,
                    field,
                    match taken {
                        Some(other) => format!(
                            "'{name}' is also a name of '{other}': a served name must stand for one model"
                        ),
                        None => format!("'{name}' names nothing once normalised"),
                    },
                );
                names_ok = false;
            }
        }
        names_ok
    }

    fn insert(&mut self, m: Arc<Model>) {
        for name in std::iter::once(&m.id).chain(&m.served_as) {
            let tag = names::is_tag(name);
            self.by_name
                .entry(names::key(name))
                .and_modify(|(_, tag_only)| *tag_only &= tag)
                .or_insert((m.clone(), tag));
        }
        self.by_id.insert(m.id.clone(), m.clone());
        self.models.push(m);
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Model>> {
        self.by_id.get(id)
    }

    pub(crate) fn license(&self, id: &str) -> Option<&Arc<License>> {
        self.licenses.iter().find(|l| l.id == id)
    }

    /// The catalog model a served name stands for: one whose id or `served_as` is the same
    /// name once both are normalised ([`names::key`]). Never a part of a name: `distilgpt2` is
    /// not GPT-2, and `gpt-4o-mini` is not `gpt-4o`.
    pub(crate) fn match_served_name(&self, served: &str) -> Option<&Arc<Model>> {
        self.match_served_name_as(served, names::is_tag(served))
    }

    /// [`Catalog::match_served_name`], saying whether the name is an Ollama tag: a name that is
    /// not one never matches a name the catalog has only as a tag.
    pub(crate) fn match_served_name_as(&self, served: &str, tag: bool) -> Option<&Arc<Model>> {
        if let Some(m) = self.by_id.get(served) {
            return Some(m);
        }
        self.by_name
            .get(&names::key(served))
            .filter(|(_, tag_only)| tag || !tag_only)
            .map(|(m, _)| m)
    }

    /// A model entry for a name a backend serves that could not be identified: a name is
    /// evidence of nothing (a loopback proxy may front a closed API), so its openness, license
    /// and commercial use are unknown, and every policy that asks about them refuses it.
    pub(crate) fn uncatalogued(&self, served: &str) -> Model {
        let license = self
            .licenses
            .iter()
            .find(|l| l.id == UNKNOWN_LICENSE)
            .cloned()
            .unwrap_or_else(|| Arc::new(License::unknown()));
        let artifacts = ArtifactsSpec {
            weights: false,
            weights_gated: false,
            architecture: false,
            training_code: TrainingCode::None,
            training_data: TrainingData::None,
            checkpoints: false,
        };
        Model {
            id: served.to_owned(),
            name: served.to_owned(),
            developer: "unknown".into(),
            openness: Openness::Unknown,
            license,
            artifacts,
            mof_class: None,
            capabilities: CapabilitiesSpec {
                context_window: 2048,
                max_output_tokens: None,
                tools: false,
                vision: false,
                json_mode: false,
            },
            price: None,
            served_as: Vec::new(),
            sources: SourcesSpec {
                artifacts: "served by a backend; not identified".into(),
                license: "unknown".into(),
                capabilities: None,
                mof: None,
            },
            test_only: false,
            task: if served.to_ascii_lowercase().contains("embed") {
                Task::Embedding
            } else {
                Task::Chat
            },
            uncatalogued: true,
            retired: None,
        }
    }
}

/// `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn check_price(p: &PriceSpec) -> Result<(), String> {
    let all = [Some(p.input), Some(p.output), p.cache_read, p.cache_write];
    if all.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
        return Err("prices must be finite and not negative".into());
    }
    if p.as_of.is_empty() || p.source.is_empty() {
        return Err("a price needs 'as_of' and 'source'".into());
    }
    Ok(())
}

impl License {
    fn from_spec(l: LicenseSpec) -> License {
        let (notice, notice_header) = duties::answer_notice(&l.duties).unzip();
        License {
            open_per_mof: l.open_per_mof.unwrap_or(l.osi_approved),
            id: l.id,
            name: l.name,
            spdx: l.spdx,
            kind: l.kind,
            osi_approved: l.osi_approved,
            commercial_use: l.commercial_use,
            use_restrictions: l.use_restrictions,
            mau_limit: l.mau_limit,
            attribution_required: l.attribution_required,
            derivative_naming: l.derivative_naming,
            output_use_restricted: l.output_use_restricted,
            hosted_service_is_distribution: l.hosted_service_is_distribution,
            territorial_exclusions: l.territorial_exclusions,
            url: l.url,
            source: l.source,
            verified: l.verified,
            duties: l.duties,
            notice,
            notice_header,
        }
    }

    fn unknown() -> License {
        License {
            id: UNKNOWN_LICENSE.into(),
            name: "Unknown license (model not in the catalog)".into(),
            spdx: None,
            kind: LicenseKind::Unknown,
            osi_approved: false,
            open_per_mof: false,
            commercial_use: CommercialUse::Unknown,
            use_restrictions: true,
            mau_limit: None,
            attribution_required: true,
            derivative_naming: None,
            output_use_restricted: OutputUse::Unknown,
            hosted_service_is_distribution: false,
            territorial_exclusions: Vec::new(),
            url: None,
            source: "modelgate: assumed unknown".into(),
            verified: false,
            duties: Vec::new(),
            notice: None,
            notice_header: None,
        }
    }
}

#[cfg(test)]
mod tests;

/// The shipped catalog, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::Arc;

    use super::{Catalog, builtin, spec::CatalogFileSpec};
    use crate::yaml::problem::Problems;

    pub(crate) fn shipped() -> Catalog {
        let mut problems = Problems::default();
        let files = builtin::FILES
            .iter()
            .filter_map(|(name, text)| {
                let name: Arc<str> = Arc::from(*name);
                crate::yaml::parse::<CatalogFileSpec>(&name, text, &mut problems).map(|f| (name, f))
            })
            .collect();
        let cat = Catalog::build(files, &mut problems);
        assert!(problems.is_empty(), "{problems}");
        cat
    }
}
