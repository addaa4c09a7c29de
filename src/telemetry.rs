//! Logging setup. Logs go to stderr (journald under systemd); the filter
//! comes from `CUTOVER_LOG` (default `info`), JSON lines with
//! `CUTOVER_LOG_FORMAT=json`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    let filter = EnvFilter::try_from_env("CUTOVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = std::env::var("CUTOVER_LOG_FORMAT").is_ok_and(|f| f == "json");
    // try_init: a second call (tests starting several proxies) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
