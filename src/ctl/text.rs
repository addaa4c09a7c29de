//! How `cutover ctl` prints the API's answers: a line or a table per
//! answer.

use serde_json::Value;

use crate::control::status::Status;

pub(super) fn split_text(split: Option<&Value>) -> String {
    split
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A route's mirror in one line: where, how much, and how copies compared.
pub(super) fn mirror_text(m: &Value) -> String {
    if m.is_null() {
        return "no mirror".to_string();
    }
    let counts = ["same", "differs", "failed", "skipped"]
        .iter()
        .map(|k| format!("{k} {}", m["counts"][k]))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "mirror {}% to {} ({counts})",
        m["percent"],
        m["pool"].as_str().unwrap_or("?")
    )
}

pub(super) fn upstream_line(pool: &str, v: &Value) -> String {
    format!(
        "{pool} {}: {} (weight {}, {} in flight)",
        v["addr"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["weight"],
        v["in_flight"]
    )
}

/// The human table of `cutover ctl status`.
/// `status --fleet`: one line per instance of the fleet.
pub(super) fn fleet_table(fleet: &Value) -> String {
    let this = &fleet["this"];
    let mut out = format!(
        "fleet {} (etcd {}), this instance {}: {}, revision {}\n\n",
        this["prefix"].as_str().unwrap_or("?"),
        this["etcd"]
            .as_array()
            .map(|e| e
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        this["instance"].as_str().unwrap_or("?"),
        if this["connected"] == true {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        this["revision"],
    );
    if let Some(error) = fleet["error"].as_str() {
        out.push_str(&format!("{error}\n"));
        return out;
    }
    let now = crate::clock::unix_ms();
    let rows: Vec<[String; 5]> = fleet["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let in_flight: u64 = i["in_flight"]
                .as_object()
                .into_iter()
                .flat_map(|pools| pools.values())
                .filter_map(Value::as_object)
                .flat_map(|ups| ups.values())
                .filter_map(Value::as_u64)
                .sum();
            let ago = i["heartbeat_ms"].as_u64().map_or("?".to_string(), |t| {
                format!("{:.1}s ago", now.saturating_sub(t) as f64 / 1000.0)
            });
            [
                i["name"].as_str().unwrap_or("?").to_string(),
                i["revision"].to_string(),
                if i["behind"] == true {
                    "behind"
                } else {
                    "current"
                }
                .to_string(),
                ago,
                in_flight.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["INSTANCE", "REVISION", "STATE", "HEARTBEAT", "IN-FLIGHT"],
        &rows,
    ));
    out
}

pub fn status_table(s: &Status) -> String {
    let mut out = format!("cutover {} (pid {})\n\n", s.version, s.pid);
    let rows: Vec<[String; 6]> = s
        .routes
        .iter()
        .map(|r| {
            let split = r
                .split
                .iter()
                .map(|(p, w)| format!("{p}={w}"))
                .collect::<Vec<_>>()
                .join(" ");
            [
                r.name.clone(),
                r.match_text(),
                split,
                r.effective_text(),
                r.split_source.clone(),
                r.rollout.as_ref().map_or_else(
                    || "-".to_string(),
                    |ro| {
                        format!(
                            "{} {}% {}",
                            ro["to"].as_str().unwrap_or("?"),
                            ro["weight"],
                            ro["state"].as_str().unwrap_or("?").replace('_', " ")
                        )
                    },
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ROUTE", "MATCH", "SPLIT", "EFFECTIVE", "FROM", "ROLLOUT"],
        &rows,
    ));
    out.push('\n');
    for r in &s.routes {
        let Some(m) = r.mirror.as_ref().filter(|m| !m.is_null()) else {
            continue;
        };
        out.push_str(&format!("{}: {}\n", r.name, mirror_text(m)));
        for d in m["differences"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  differs: {} {}: {} {} vs shadow {} {}\n",
                d["method"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or("?"),
                d["primary"]["status"],
                short_digest(&d["primary"]),
                d["shadow"]["status"],
                short_digest(&d["shadow"]),
            ));
        }
        out.push('\n');
    }
    let rows: Vec<[String; 7]> = s
        .pools
        .iter()
        .flat_map(|p| {
            p.upstreams.iter().map(move |u| {
                [
                    p.name.clone(),
                    u.addr.to_string(),
                    u.weight.to_string(),
                    u.state.clone(),
                    u.health.clone(),
                    // Tunnels (WebSocket) are in flight too: say how many.
                    match u.tunnels {
                        0 => u.in_flight.to_string(),
                        t => format!("{} ({t} tunnels)", u.in_flight),
                    },
                    u.source.clone(),
                ]
            })
        })
        .collect();
    out.push_str(&table(
        &[
            "POOL",
            "UPSTREAM",
            "WEIGHT",
            "STATE",
            "HEALTH",
            "IN-FLIGHT",
            "FROM",
        ],
        &rows,
    ));
    out.trim_end().to_string()
}

/// An answer's body as `(12 bytes sha256:ab12cd34)`, or nothing when
/// bodies were not compared.
fn short_digest(answer: &Value) -> String {
    match answer["body_sha256"].as_str() {
        Some(sha) => format!(
            "({} bytes sha256:{})",
            answer["body_bytes"],
            sha.get(..8).unwrap_or(sha)
        ),
        None => String::new(),
    }
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
