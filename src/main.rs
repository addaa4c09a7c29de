//! The `cutover` command line: parse arguments, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use cutover::config::Config;
use cutover::{Error, demo, lifecycle, telemetry};

// The hot path allocates per request (header maps, futures, buffers):
// jemalloc's thread caches make that cheaper than glibc's malloc, and its
// background thread hands freed memory back to the OS within seconds,
// which glibc does not (e.g. after 10,000 idle connections were parked;
// see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "L7 reverse proxy for zero-downtime deployment"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file [default: ./cutover.toml, else /etc/cutover/cutover.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// If the runtime state file in [state] dir does not parse, move it
        /// aside and start from the config file alone (a valid one is kept).
        #[arg(long)]
        discard_state: bool,
    },
    /// Validate a config file and exit: 0 if valid, 1 with every problem.
    Check {
        /// Config file [default: ./cutover.toml, else /etc/cutover/cutover.toml]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Also look up every upstream given by DNS name; one that does not
        /// resolve is a problem.
        #[arg(long)]
        resolve: bool,
    },
    /// Admin client: status, split, rollout, mirror, drain, enable, disable, add, remove, reload…
    #[command(after_help = cutover::ctl::EXIT_CODES)]
    Ctl(Box<cutover::ctl::CtlArgs>),
    /// Zero-setup tour: two demo apps and the proxy on loopback.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin API listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Make the green app fail this percent of its requests (a bad
        /// release, to watch a rollout roll back); change it later with
        /// `curl GREEN/demo/fail?percent=N`.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        bad_green: u8,
        /// Requests per second the demo sends through the proxy itself, so
        /// rollouts have traffic to judge (0: none).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1000))]
        traffic: u32,
        /// Keep the demo's runtime changes in this directory and resume
        /// from it next time (default: a fresh directory under the system
        /// temp dir, removed when the demo stops: every run starts on blue).
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Print a shell completion script: `cutover completions bash >
    /// /etc/bash_completion.d/cutover`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man pages (roff) as one document: `cutover manpage >
    /// cutover.1`; with --dir, write one page per command instead
    /// (cutover.1, cutover-ctl.1, cutover-ctl-rollout.1, …), as the
    /// Debian package installs them.
    Manpage {
        /// Write each page to a file of its own in this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    match cli.command {
        Command::Check { config, resolve } => match lifecycle::find_config(config) {
            Ok(path) => check(path, resolve),
            Err(e) => no_config(&e),
        },
        Command::Run {
            config,
            discard_state,
        } => {
            // Before anything else: a binary upgrade re-runs exactly this.
            let launch = match cutover::upgrade::Launch::of_this_process() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("cutover: cannot tell how this process was started: {e}");
                    return ExitCode::from(2);
                }
            };
            let path = match lifecycle::find_config(config) {
                Ok(path) => path,
                Err(e) => return no_config(&e),
            };
            // Read the config before building the runtime: `workers` sizes it.
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return fail(&Error::from(e)),
            };
            if discard_state {
                let aside = cutover::state::Store::open(&config.state.dir)
                    .and_then(|store| store.set_aside_if_corrupt());
                match aside {
                    Ok(Some(aside)) => eprintln!(
                        "cutover: the runtime state did not parse; moved to {} (starting from the config file alone)",
                        aside.display()
                    ),
                    Ok(None) => {}
                    Err(e) => return fail(&Error::from(e)),
                }
            }
            let workers = config.proxy.workers;
            serve(workers, async move { lifecycle::run(&path, launch).await })
        }
        Command::Demo {
            listen,
            admin,
            bad_green,
            traffic,
            state,
        } => serve(
            0,
            demo::run(demo::Options {
                listen,
                admin,
                bad_green,
                traffic,
                state,
            }),
        ),
        Command::Ctl(args) => ctl(*args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "cutover",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Manpage { dir: None } => manpage(),
        Command::Manpage { dir: Some(dir) } => match clap_mangen::generate_to(Cli::command(), &dir)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cutover manpage: {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
    }
}

/// The man page of `cutover` and its subcommands, one roff document.
fn manpage() -> ExitCode {
    let command = Cli::command();
    let mut out = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .and_then(|()| {
            for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
                let name = format!("cutover-{}", sub.get_name());
                clap_mangen::Man::new(sub.clone())
                    .title(name)
                    .render(&mut out)?;
            }
            Ok(())
        });
    match rendered.and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover manpage: {e}");
            ExitCode::from(1)
        }
    }
}

fn ctl(args: cutover::ctl::CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cutover ctl: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cutover::ctl::run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cutover ctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A command line clap refused: exit 1, as every usage error does (clap's
/// own 2 means "rolled back" or "refused" to a pipeline running `ctl`).
/// `--help` and `--version` print and exit 0.
fn usage(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn no_config(why: &str) -> ExitCode {
    eprintln!("cutover: {why}");
    ExitCode::from(1)
}

fn check(path: PathBuf, resolve: bool) -> ExitCode {
    match Config::load(&path) {
        Ok(config) => {
            if resolve {
                let unresolved = unresolved_names(&config);
                for problem in &unresolved {
                    eprintln!("{}: {problem}", path.display());
                }
                if !unresolved.is_empty() {
                    return ExitCode::from(1);
                }
            }
            // The files it names are part of a valid config: read them as
            // `run` does.
            if let Err(problems) = lifecycle::check_files(&config) {
                for p in problems {
                    eprintln!("{}: {p}", path.display());
                }
                return ExitCode::from(1);
            }
            for note in config.notes() {
                eprintln!("{}: {note}", path.display());
            }
            println!("{}: ok: {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&Error::from(e)),
    }
}

/// `check --resolve`: each DNS-named upstream that does not resolve, as
/// `pool.NAME: host:port does not resolve: why`.
fn unresolved_names(config: &Config) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut problems = Vec::new();
    for pool in &config.pools {
        for n in &pool.named {
            let name = n.name();
            let why = match (n.host.as_str(), n.port).to_socket_addrs() {
                Ok(addrs) if addrs.len() > 0 => continue,
                Ok(_) => "no addresses".to_string(),
                Err(e) => e.to_string(),
            };
            problems.push(format!(
                "pool.{}: {name} does not resolve: {why}",
                pool.name
            ));
        }
    }
    problems
}

fn serve(workers: usize, main: impl Future<Output = Result<(), Error>>) -> ExitCode {
    telemetry::init_logging();
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    // One worker: a current-thread runtime, with no work-stealing queues or
    // cross-thread wake-ups to pay for on every request.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cutover: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}
