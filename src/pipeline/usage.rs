//! `GET /v1/usage`: a key reads its own tenant's usage of the current day and month; every
//! tenant's is on the admin listener.

use crate::auth::Authed;
use crate::error::GatewayError;
use crate::stream::respond::json_response;

use super::Outcome;

/// `GET /v1/usage[?tenant=…]`.
pub(crate) async fn usage<B>(authed: Authed<B>) -> Outcome {
    let asked = authed
        .request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("tenant=")));
    if asked.is_some_and(|t| t != &*authed.caller.tenant) {
        return GatewayError::Forbidden(
            "a key may read its own tenant's usage only; every tenant's is on the admin listener",
        )
        .into();
    }
    match authed
        .current
        .limiter
        .usage(Some(&authed.caller.tenant))
        .await
    {
        Ok(report) => Outcome::unlogged(json_response(http::StatusCode::OK, report.to_json())),
        Err(e) => GatewayError::from(e).into(),
    }
}
