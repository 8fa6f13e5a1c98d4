//! modelgate: a model gateway that decides, per request, which model may and should answer,
//! by openness, license and cost.
//!
//! The modules are listed in the order a request meets them:
//! `server` accepts it, `auth` names the caller, `api` parses it, `policy` decides where it may
//! go, `limits` counts it against its caller's rates and budgets, `upstream` calls the chosen deployment through an `adapters` dialect, `stream` relays the
//! answer back, and `metrics` records what happened. `config` and `catalog` build the snapshot
//! every request reads.

pub mod api;
pub(crate) mod auth;
pub(crate) mod base;
pub mod exchange;
pub mod server;

pub(crate) mod conversations;
pub mod limits;
pub(crate) mod live;
pub mod policy;

pub mod adapters;
pub mod upstream;

pub(crate) mod accounting;
pub(crate) mod metrics;
pub(crate) mod stream;

pub mod catalog;
pub mod config;
pub(crate) mod discovery;

pub mod cli;
pub(crate) mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod hop;
pub(crate) mod pipeline;
pub mod telemetry;
pub(crate) mod yaml;
