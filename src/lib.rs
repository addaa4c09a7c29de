//! cutover: an L7 reverse proxy for zero-downtime deployment.
//!
//! See docs/architecture.md for the modules and the request path.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod check_query;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connector;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod dns;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod instance;
pub mod lifecycle;
pub mod proxy;
pub mod queue;
pub mod rate_limit;
pub mod retry_budget;
pub mod rollout;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod state;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod traces;
pub mod traffic;
pub mod upgrade;
pub mod upstream;
pub mod upstream_tls;
pub mod webhook;

pub use error::Error;
