//! Integration tests: real sockets, real hyper upstreams, the proxy started
//! in-process (or as the real binary where signals matter).

mod support;

mod access_log;
mod admin;
mod architecture;
mod balance;
mod config_check;
mod connections;
mod ctl;
mod direct;
mod dns;
mod docs;
mod etcd_generated;
mod failures;
mod faults;
mod fleet;
mod grpc;
mod h2_frames;
mod h2c_smuggling;
mod load;
mod log_flood;
mod mirror;
mod nginx;
mod package;
pub mod process;
mod proxy_protocol;
mod queue;
mod rate_limit;
mod request_id;
mod resilience;
mod retry;
mod rollout;
mod rollout_checks;
mod rollout_ctl;
mod rollout_group;
mod routing;
mod status_page;
mod streaming;
mod systemd;
pub mod tls;
mod tracing;
mod traffic_rules;
mod upgrade;
mod upstream_misbehaviour;
mod upstream_protocols;
mod websocket;
