//! `GET /v1/models` and `GET /v1/models/{id}`: the models this caller may use, with the
//! deployments its policy allows.

use bytes::Bytes;
use http::StatusCode;

use crate::api::models::{ModelList, ModelObject};
use crate::auth::Authed;
use crate::config::{Deployment, Route};
use crate::error::GatewayError;
use crate::policy::{self, PolicyError};
use crate::stream::respond::json_response;
use crate::upstream;

use super::Outcome;

/// `GET /v1/models`, or `GET /v1/models/{id}` for one.
pub(crate) fn models<B>(authed: &Authed<B>) -> Outcome {
    match authed.request.uri().path().strip_prefix("/v1/models/") {
        Some(id) if !id.is_empty() => get_model(authed, &percent_decode(id)),
        _ => list_models(authed),
    }
}

/// `GET /v1/models`: the models this caller may use, with the deployments its policy allows.
fn list_models<B>(authed: &Authed<B>) -> Outcome {
    let current = &authed.current;
    let created = upstream::unix_now();
    let notices = policy_notices(authed);
    let data = current
        .listed
        .iter()
        .filter_map(|(m, idx)| {
            let deps: Vec<&Deployment> = policy::listable(current, &authed.caller, &m.id, idx)
                .into_iter()
                .filter_map(|i| current.deployments.get(i).map(AsRef::as_ref))
                .collect();
            (!deps.is_empty()).then(|| ModelObject::new(&m.id, m, &deps, created, notices))
        })
        .collect();
    let body = serde_json::to_vec(&ModelList {
        object: "list",
        data,
    })
    .unwrap_or_default();
    Outcome::unlogged(json_response(StatusCode::OK, Bytes::from(body)))
}

/// `GET /v1/models/{id}`: one model, if this caller may use it.
fn get_model<B>(authed: &Authed<B>, id: &str) -> Outcome {
    let current = &authed.current;
    let created = upstream::unix_now();
    let indices: Vec<usize> = match current.route(id) {
        Some(Route::Model(idx)) => idx.clone(),
        Some(Route::Deployment(i)) => vec![*i],
        Some(Route::Auto) | None => Vec::new(),
    };
    let deps: Vec<&Deployment> = policy::listable(current, &authed.caller, id, &indices)
        .into_iter()
        .filter_map(|i| current.deployments.get(i).map(AsRef::as_ref))
        .collect();
    match deps.first() {
        Some(d) => {
            let object = ModelObject::new(id, &d.model, &deps, created, policy_notices(authed));
            let body = serde_json::to_vec(&object).unwrap_or_default();
            Outcome::unlogged(json_response(StatusCode::OK, Bytes::from(body)))
        }
        None => GatewayError::from(PolicyError::UnknownModel(id.to_owned())).into(),
    }
}

/// Whether the caller's policy puts license notices on every answer.
fn policy_notices<B>(authed: &Authed<B>) -> bool {
    authed
        .current
        .policies
        .for_caller(authed.caller.policy.as_deref())
        .is_some_and(|p| p.notices)
}

/// Decodes `%XX` escapes of a path segment (model ids such as `llama3.2:3b` arrive escaped).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("llama3.2%3A3b"), "llama3.2:3b");
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
