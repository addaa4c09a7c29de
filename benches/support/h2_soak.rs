//! HTTP/2 load for benches/soak.sh: CLIENTS clients, each on its own
//! prior-knowledge connection (the `h2` crate), sending one GET after
//! another for SECONDS. A request the server's GOAWAY says it did not
//! process goes again on a new connection (RFC 9113 §6.8, as browsers
//! do); any other failure counts. Prints `requests N failed M`.
//!
//!   cargo run --release --example h2_soak -- http://127.0.0.1:8080/ 8 60

#[path = "../../tests/it/support/h2_client.rs"]
mod h2_client;

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(clients), Some(seconds)) = (
        args.get(1).cloned(),
        args.get(2).and_then(|c| c.parse::<usize>().ok()),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: h2_soak URL CLIENTS SECONDS");
        std::process::exit(2);
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = h2_client::H2Client::new(&url);
            let (mut done, mut failed) = (0u64, 0u64);
            while Instant::now() < until {
                match client.get(&url).await {
                    Ok(200) => done += 1,
                    Ok(status) => {
                        failed += 1;
                        eprintln!("status {status}");
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("failed: {e}");
                    }
                }
            }
            (done, failed)
        }));
    }
    let (mut done, mut failed) = (0, 0);
    for task in tasks {
        if let Ok((d, f)) = task.await {
            done += d;
            failed += f;
        }
    }
    println!("requests {} failed {failed}", done + failed);
}
