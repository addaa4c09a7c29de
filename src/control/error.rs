//! Why the control plane refused a change. Each variant names the condition
//! with typed fields; [`ControlError::status`] is the one place that maps
//! them to admin API status codes, and [`ControlError::detail`] gives the
//! JSON `detail` object that tells a script which field or thing was wrong.

use std::net::SocketAddr;

use http::StatusCode;
use serde_json::{Value, json};

use crate::config::SplitError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route named {0:?}")]
    UnknownRoute(String),
    #[error("no pool named {0:?}")]
    UnknownPool(String),
    #[error("pool {pool:?} has no upstream {addr}")]
    UnknownUpstream { pool: String, addr: SocketAddr },
    #[error("pool {pool:?} already has upstream {addr}")]
    UpstreamExists { pool: String, addr: SocketAddr },
    #[error(
        "pool {0:?} has no healthy upstream in rotation: refusing to send it traffic (add ?force=true to insist)"
    )]
    NoUpstreamInRotation(String),
    /// A request body or path segment that does not parse; `field` names it.
    #[error("{field}: {reason}")]
    InvalidInput { field: String, reason: String },
    #[error("{0}")]
    InvalidSplit(#[from] SplitError),
    #[error("route {0:?} has a rollout running: pause or abort it first")]
    RolloutRunning(String),
    #[error("route {0:?} has no rollout")]
    NoRollout(String),
    #[error("the rollout of route {route:?} is {state}")]
    RolloutState { route: String, state: &'static str },
    #[error("route {route:?} sends no traffic to any pool but {pool:?}: nothing to roll out from")]
    NothingToRollOutFrom { route: String, pool: String },
    #[error("{0}")]
    NothingToUndo(String),
    #[error(
        "route {route:?} changed since its last change: its split is {now} now, not {after}; set it by hand"
    )]
    ChangedSince {
        route: String,
        now: String,
        after: String,
    },
    #[error("{0}")]
    InvalidSpec(#[from] crate::rollout::SpecError),
    #[error("this process handed over to pid {0} in a binary upgrade; send the call again")]
    Retired(u32),
    #[error("this instance was not started from a config file")]
    NoConfigFile,
    #[error("the config file has {} problem(s); the running config is unchanged", .0.len())]
    InvalidConfig(Vec<String>),
    #[error("{0}; the running config is unchanged")]
    Listener(String),
    #[error("{0}")]
    State(#[from] StateError),
    /// In a fleet, etcd cannot be reached: a change made here alone would
    /// leave this instance out of step with the others.
    #[error(
        "the fleet's state store (etcd) is unreachable ({0}): changes are refused until it is back; traffic is served from the last state"
    )]
    FleetUnavailable(String),
    /// Other instances' changes kept landing first.
    #[error(
        "other instances changed the fleet's state {0} times while this change was being made; send it again"
    )]
    FleetBusy(usize),
}

impl ControlError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ControlError {
        ControlError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The admin API's status code for this refusal.
    pub fn status(&self) -> StatusCode {
        use ControlError as E;
        match self {
            E::UnknownRoute(_)
            | E::UnknownPool(_)
            | E::UnknownUpstream { .. }
            | E::NoRollout(_) => StatusCode::NOT_FOUND,
            E::UpstreamExists { .. }
            | E::NoUpstreamInRotation(_)
            | E::Retired(_)
            | E::RolloutRunning(_)
            | E::RolloutState { .. }
            | E::NothingToRollOutFrom { .. }
            | E::NothingToUndo(_)
            | E::ChangedSince { .. } => StatusCode::CONFLICT,
            E::InvalidInput { .. }
            | E::InvalidSpec(_)
            | E::InvalidSplit(_)
            | E::NoConfigFile
            | E::InvalidConfig(_)
            | E::Listener(_) => StatusCode::BAD_REQUEST,
            E::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::FleetUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::FleetBusy(_) => StatusCode::CONFLICT,
        }
    }

    /// A machine-readable account of the refusal: a `code` and the typed
    /// fields of the condition.
    pub fn detail(&self) -> Value {
        use ControlError as E;
        match self {
            E::UnknownRoute(route) => json!({"code": "unknown_route", "route": route}),
            E::UnknownPool(pool) => json!({"code": "unknown_pool", "pool": pool}),
            E::UnknownUpstream { pool, addr } => {
                json!({"code": "unknown_upstream", "pool": pool, "addr": addr})
            }
            E::UpstreamExists { pool, addr } => {
                json!({"code": "upstream_exists", "pool": pool, "addr": addr})
            }
            E::NoUpstreamInRotation(pool) => {
                json!({"code": "no_upstream_in_rotation", "pool": pool, "hint": "force=true"})
            }
            E::InvalidInput { field, reason } => {
                json!({"code": "invalid_input", "field": field, "reason": reason})
            }
            E::InvalidSplit(e) => {
                let field = match e {
                    SplitError::Weight { pool, .. } | SplitError::Duplicate(pool) => pool.as_str(),
                    SplitError::Empty | SplitError::AllZero => "split",
                };
                json!({"code": "invalid_split", "field": field, "reason": e.to_string()})
            }
            E::RolloutRunning(route) => json!({"code": "rollout_running", "route": route}),
            E::NoRollout(route) => json!({"code": "no_rollout", "route": route}),
            E::RolloutState { route, state } => {
                json!({"code": "rollout_state", "route": route, "state": state})
            }
            E::NothingToRollOutFrom { route, pool } => {
                json!({"code": "nothing_to_roll_out_from", "route": route, "pool": pool})
            }
            E::NothingToUndo(why) => json!({"code": "nothing_to_undo", "reason": why}),
            E::ChangedSince { route, now, after } => {
                json!({"code": "changed_since", "route": route, "split": now, "left_at": after})
            }
            E::InvalidSpec(e) => {
                json!({"code": "invalid_rollout", "field": e.field, "reason": e.reason})
            }
            E::Retired(pid) => json!({"code": "retired", "new_pid": pid}),
            E::NoConfigFile => json!({"code": "no_config_file"}),
            E::InvalidConfig(problems) => json!({"code": "invalid_config", "problems": problems}),
            E::Listener(m) => json!({"code": "listener", "problems": [m]}),
            E::State(e) => json!({"code": "state", "reason": e.to_string()}),
            E::FleetUnavailable(why) => json!({"code": "fleet_unavailable", "reason": why}),
            E::FleetBusy(tries) => json!({"code": "fleet_busy", "tries": tries}),
        }
    }
}
