//! ③ `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's `Model` objects, extended with what
//! modelgate knows about each model (openness class, license terms, price per deployment).

use serde::Serialize;

use crate::catalog::{Model, Price};
use crate::config::Deployment;

/// `{"object":"list","data":[...]}`.
#[derive(Serialize)]
pub(crate) struct ModelList<'a> {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<ModelObject<'a>>,
}

/// One `Model`, with extension fields.
#[derive(Serialize)]
pub(crate) struct ModelObject<'a> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) owned_by: &'a str,
    /// `closed`, `open-weight` or `open-source`, derived from the catalog's facts.
    pub(crate) openness: &'static str,
    pub(crate) license: LicenseSummary<'a>,
    pub(crate) context_window: u32,
    /// A test model, not a language model.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) test_only: bool,
    /// Not in the catalog: found on a local backend.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) uncatalogued: bool,
    /// Where the model can be served for this caller.
    pub(crate) deployments: Vec<DeploymentSummary<'a>>,
}

#[derive(Serialize)]
pub(crate) struct LicenseSummary<'a> {
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) osi_approved: bool,
    pub(crate) commercial_use: &'static str,
    pub(crate) use_restrictions: bool,
    /// What the license obliges whoever uses, serves or passes on the model to do, each with
    /// its clause (none listed when it obliges nothing or nobody checked).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) duties: &'a [crate::catalog::spec::DutySpec],
    /// The notice answers from it carry where notices are turned on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) notice: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct DeploymentSummary<'a> {
    pub(crate) name: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) locality: &'static str,
    /// USD per million tokens on this deployment.
    pub(crate) price: PriceSummary,
    /// How its model was identified (configuration, digest, metadata, name, unknown), from
    /// what, and the quantization where known.
    pub(crate) identified: &'a crate::catalog::identify::Identity,
    /// Its answers to this caller carry the license notice (`deployments[].notices`, or the
    /// caller's policy's `notices`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) notices: bool,
}

#[derive(Serialize)]
pub(crate) struct PriceSummary {
    pub(crate) input: f64,
    pub(crate) output: f64,
}

impl From<&Price> for PriceSummary {
    fn from(p: &Price) -> Self {
        PriceSummary {
            input: p.input,
            output: p.output,
        }
    }
}

impl<'a> ModelObject<'a> {
    pub(crate) fn new(
        id: &'a str,
        model: &'a Model,
        deployments: &[&'a Deployment],
        created: u64,
        policy_notices: bool,
    ) -> Self {
        ModelObject {
            id,
            object: "model",
            created,
            owned_by: &model.developer,
            openness: model.openness.as_str(),
            license: LicenseSummary {
                id: &model.license.id,
                name: &model.license.name,
                osi_approved: model.license.osi_approved,
                commercial_use: model.license.commercial_use.as_str(),
                use_restrictions: model.license.use_restrictions,
                duties: &model.license.duties,
                notice: model.license.notice.as_deref(),
            },
            context_window: model.capabilities.context_window,
            test_only: model.test_only,
            uncatalogued: model.uncatalogued,
            deployments: deployments
                .iter()
                .map(|d| DeploymentSummary {
                    name: &d.name,
                    provider: &d.endpoint.provider,
                    locality: d.locality().map_or("unknown", |l| l.as_str()),
                    price: (&d.price).into(),
                    identified: &d.identity,
                    notices: (d.endpoint.notices || policy_notices)
                        && d.model.license.notice.is_some(),
                })
                .collect(),
        }
    }
}
