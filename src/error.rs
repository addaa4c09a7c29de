//! The crate's error type: each module's error wrapped by `#[from]`.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Bind(#[from] crate::server::BindError),
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Token(#[from] crate::admin::TokenError),
    #[error("{0}")]
    Tls(String),
    /// Files the config names that cannot be used (`lifecycle::check_files`).
    #[error("{0}")]
    Files(String),
    #[error("cannot open the access log: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("cannot start tracing: {0}")]
    Tracing(String),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl Error {
    /// Process exit code: 1 for a bad config or a file it names that
    /// `cutover check` refuses too (SPEC.md), 2 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Tls(_)
            | Error::Files(_)
            | Error::Cluster(_)
            | Error::Token(_) => 1,
            _ => 2,
        }
    }
}
