//! ③ `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's `Model` objects, extended with what
//! modelgate knows about each model (openness class, license terms, price per deployment).

use serde::Serialize;

use crate::catalog::{Model, Price};
use crate::config::Deployment;

/// `{"object":"list","data":[...]}`.
#[derive(Serialize)]
pub struct ModelList<'a> {
    pub object: &'static str,
    pub data: Vec<ModelObject<'a>>,
}

/// One `Model`, with extension fields.
#[derive(Serialize)]
pub struct ModelObject<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'a str,
    /// `closed`, `open-weight` or `open-source`, derived from the catalog's facts.
    pub openness: &'static str,
    pub license: LicenseSummary<'a>,
    pub context_window: u32,
    /// A test model, not a language model.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub test_only: bool,
    /// Not in the catalog: found on a local backend.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub uncatalogued: bool,
    /// Where the model can be served for this caller.
    pub deployments: Vec<DeploymentSummary<'a>>,
}

#[derive(Serialize)]
pub struct LicenseSummary<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub osi_approved: bool,
    pub commercial_use: &'static str,
    pub use_restrictions: bool,
}

#[derive(Serialize)]
pub struct DeploymentSummary<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    pub locality: &'static str,
    /// USD per million tokens on this deployment.
    pub price: PriceSummary,
    /// How its model was identified (configuration, digest, metadata, name, unknown), from
    /// what, and the quantization where known.
    pub identified: &'a crate::catalog::identify::Identity,
}

#[derive(Serialize)]
pub struct PriceSummary {
    pub input: f64,
    pub output: f64,
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
    pub fn new(
        id: &'a str,
        model: &'a Model,
        deployments: &[&'a Deployment],
        created: u64,
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
                })
                .collect(),
        }
    }
}
