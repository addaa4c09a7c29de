//! `cutover ctl`: the admin API from the command line, a client of it
//! (nothing here runs in the proxy). Prints a readable table or line (or
//! the API's JSON with `--json`); an API error is one clear line on stderr
//! and a non-zero exit. One function per verb: `verbs`, and `rollout` for
//! the rollout verbs; `client` speaks to the API, `text` prints.

mod client;
mod rollout;
mod text;
mod verbs;

use std::path::PathBuf;

use serde_json::Value;

pub use client::{CtlError, EXIT_ABORTED, EXIT_CODES, EXIT_NOT_HEALTHY, EXIT_ROLLED_BACK};
pub use text::status_table;

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`).
    #[arg(
        long,
        env = "CUTOVER_ADMIN",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    admin: String,
    /// File holding the admin bearer token.
    #[arg(long, env = "CUTOVER_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an `https://` admin API against;
    /// without it, the system's CAs.
    #[arg(long, env = "CUTOVER_CA", global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for an admin API that asks for one
    /// (`[admin] tls.client_ca`); with --key.
    #[arg(long, env = "CUTOVER_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "CUTOVER_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand, Debug)]
enum Verb {
    /// Routes with their configured and effective split, mirrors, and
    /// every upstream's state and in-flight count.
    Status {
        /// Also every instance of the fleet (`[cluster]`): its revision,
        /// last heartbeat and requests in flight.
        #[arg(long)]
        fleet: bool,
    },
    /// Set a route's split: `cutover ctl split app blue=90 green=10`.
    Split {
        /// The route, as named in the config file.
        route: String,
        /// Relative weights; pools not named get 0.
        #[arg(required = true, value_name = "POOL=WEIGHT")]
        weights: Vec<String>,
        /// Send traffic even to a pool with no healthy upstream.
        #[arg(long)]
        force: bool,
    },
    /// Copy a share of a route's requests to a pool and compare its answers
    /// with the clients': `cutover ctl mirror app green=10` (0 stops it).
    Mirror {
        /// The route whose requests are copied.
        route: String,
        /// Where copies go and the percent of requests copied (0 to 100).
        #[arg(value_name = "POOL=PERCENT")]
        target: String,
    },
    /// Progressive shift to a pool, judged on live traffic, rolled back by
    /// itself on a breach. With --wait: one line per event; exit 0 promoted,
    /// 2 rolled back, 3 aborted, 1 error.
    Rollout(Box<rollout::RolloutArgs>),
    /// Put a route's split back to what it was before its last change (a
    /// promoted rollout, a split set by hand); --pool: every route whose
    /// last change moved the pool's share. Refused if the split moved since.
    Undo {
        /// The route to undo.
        #[arg(required_unless_present = "pool", conflicts_with = "pool")]
        route: Option<String>,
        /// Undo every route whose last change moved this pool's share.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Approve a rollout waiting for approval, or skip the rest of its step.
    Promote {
        /// The route whose rollout to promote.
        route: String,
    },
    /// Hold a rollout at its step (analysis stops; the split stays).
    Pause {
        /// The route whose rollout to pause.
        route: String,
    },
    /// Go on with a paused rollout.
    Resume {
        /// The route whose rollout to resume.
        route: String,
    },
    /// Stop a rollout and return to the split it started from.
    Abort {
        /// The route whose rollout to abort.
        route: String,
    },
    /// No new requests to an upstream (or every upstream of a pool);
    /// in-flight ones finish.
    Drain {
        /// The pool.
        pool: String,
        /// One upstream, IP:PORT; without it the whole pool drains.
        addr: Option<String>,
        /// How long sticky clients may still reach it, e.g. 10m (default 30s).
        #[arg(long)]
        timeout: Option<String>,
        /// Wait, showing progress, until drained.
        #[arg(long)]
        wait: bool,
    },
    /// Back into rotation (clears disable and drain).
    Enable {
        /// The upstream's pool.
        pool: String,
        /// The upstream, IP:PORT.
        addr: String,
    },
    /// Out of rotation now.
    Disable {
        /// The upstream's pool.
        pool: String,
        /// The upstream, IP:PORT.
        addr: String,
    },
    /// Add an upstream to a pool.
    Add {
        /// The pool to add to.
        pool: String,
        /// The new upstream, IP:PORT.
        addr: String,
        /// Its weight within the pool.
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove an upstream from a pool: it drains first, then leaves.
    Remove {
        /// The upstream's pool.
        pool: String,
        /// The upstream, IP:PORT.
        addr: String,
        /// Wait, showing progress, until it is gone.
        #[arg(long)]
        wait: bool,
    },
    /// Whether every upstream of a pool is healthy (in rotation: not
    /// unhealthy, ejected, disabled or draining); exit 0 if so, 5 if not —
    /// a deploy script's guard before it moves traffic.
    Health {
        /// The pool, as named in the config file.
        pool: String,
    },
    /// The last entries of the audit log: who changed what, and how it ended.
    Audit {
        /// How many entries, newest last.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Re-read the config file.
    Reload,
    /// Binary upgrade: a new process takes the listening sockets.
    Upgrade,
}

/// What a verb says: the API's JSON (printed with `--json`), the readable
/// text (printed otherwise) and the exit code.
struct Said {
    json: Value,
    text: String,
    exit: u8,
}

impl Said {
    fn new(json: Value, text: String) -> Said {
        Said {
            json,
            text,
            exit: 0,
        }
    }
}

/// Runs one `cutover ctl` command: `Ok` with its exit code (0, or how a
/// waited rollout ended, or an unhealthy pool), or the error.
pub async fn run(args: CtlArgs) -> Result<u8, CtlError> {
    let client_cert = args.cert.as_deref().zip(args.key.as_deref());
    let api = client::Api::connect(
        &args.admin,
        args.token_file.as_deref(),
        args.ca.as_deref(),
        client_cert,
    )?;
    let said = match args.verb {
        Verb::Status { fleet } => verbs::status(&api, fleet).await?,
        Verb::Split {
            route,
            weights,
            force,
        } => verbs::split(&api, &route, &weights, force).await?,
        Verb::Mirror { route, target } => verbs::mirror(&api, &route, &target).await?,
        Verb::Rollout(r) if r.wait => return rollout::start_and_wait(&api, &r).await,
        Verb::Rollout(r) => rollout::start(&api, &r).await?,
        Verb::Undo { route, pool } => {
            rollout::undo(&api, route.as_deref(), pool.as_deref()).await?
        }
        Verb::Promote { route } => rollout::step(&api, &route, "promote").await?,
        Verb::Pause { route } => rollout::step(&api, &route, "pause").await?,
        Verb::Resume { route } => rollout::step(&api, &route, "resume").await?,
        Verb::Abort { route } => rollout::step(&api, &route, "abort").await?,
        Verb::Drain {
            pool,
            addr,
            timeout,
            wait,
        } => verbs::drain(&api, &pool, addr.as_deref(), timeout, wait).await?,
        Verb::Enable { pool, addr } => verbs::upstream_action(&api, &pool, &addr, "enable").await?,
        Verb::Disable { pool, addr } => {
            verbs::upstream_action(&api, &pool, &addr, "disable").await?
        }
        Verb::Add { pool, addr, weight } => verbs::add(&api, &pool, &addr, weight).await?,
        Verb::Remove { pool, addr, wait } => verbs::remove(&api, &pool, &addr, wait).await?,
        Verb::Health { pool } => verbs::health(&api, &pool).await?,
        Verb::Audit { limit } => verbs::audit(&api, limit).await?,
        Verb::Reload => verbs::reload(&api).await?,
        Verb::Upgrade => verbs::upgrade(&api).await?,
    };
    if args.json {
        let json = serde_json::to_string_pretty(&said.json).unwrap_or_default();
        println!("{json}");
    } else {
        println!("{}", said.text);
    }
    Ok(said.exit)
}
