//! `GET /` on the admin listener: one self-contained HTML page (no external
//! assets, no JavaScript) with routes and their split as bars, each pool's
//! last 15 minutes as inline SVG charts, every pool and upstream with
//! state, in-flight, request and error rates, and drains in progress. It
//! refreshes itself every 2 s; rates are the history's (measured every
//! 5 s by the admin API, whoever looks), since start before its first.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::history::{KEPT, PerUpstream, Point, SAMPLE_EVERY};
use crate::control::status::Status;

/// What the page shows beside the status: each pool's history, each
/// upstream's last measured rates, and uptime.
pub struct Charts {
    pub series: BTreeMap<String, Vec<Point>>,
    pub upstream_rates: PerUpstream<f64>,
    pub uptime: std::time::Duration,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLOURS: [&str; 6] = [
    "#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2",
];

pub fn render(status: &Status, charts: &Charts) -> String {
    let mut h = String::with_capacity(8 * 1024);
    page_head(&mut h, status, charts);
    let mut colour: HashMap<&str, &str> = HashMap::new();
    for (i, p) in status.pools.iter().enumerate() {
        colour.insert(&p.name, COLOURS[i % COLOURS.len()]);
    }
    routes_table(&mut h, status, &colour);
    h.push_str("</table>\n");
    for r in &status.routes {
        if let Some(rollout) = &r.rollout {
            rollout_panel(&mut h, &r.name, rollout);
        }
        if let Some(mirror) = r.mirror.as_ref().filter(|m| !m.is_null()) {
            mirror_panel(&mut h, &r.name, mirror);
        }
    }
    pool_charts(&mut h, status, &charts.series, &colour);
    pools_table(&mut h, status, charts, &colour);
    h
}

/// The style, the title and the line under it, and the routes table's head.
fn page_head(h: &mut String, status: &Status, charts: &Charts) {
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>cutover status</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#111;background:#fafafa}}
h1{{font-size:1.3rem;margin:0 0 .2rem}} h2{{font-size:1.05rem;margin:1.4rem 0 .4rem}}
.meta{{color:#555}} table{{border-collapse:collapse;background:#fff;min-width:40rem}}
td,th{{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}} th{{background:#f0f0f0}}
.bar{{display:flex;height:1.4rem;width:28rem;border:1px solid #bbb;background:#eee}}
.bar div{{color:#fff;font-size:12px;line-height:1.4rem;padding-left:.3rem;overflow:hidden;white-space:nowrap}}
.st{{padding:.1rem .4rem;border-radius:.3rem;font-weight:600}}
.healthy{{background:#dcfce7;color:#166534}} .unhealthy{{background:#fee2e2;color:#991b1b}}
.draining{{background:#fef3c7;color:#92400e}} .drained{{background:#e5e7eb;color:#374151}}
.disabled{{background:#e5e7eb;color:#374151}} .num{{text-align:right;font-variant-numeric:tabular-nums}}
.rollout,.mirror{{background:#fff;border:1px solid #ddd;padding:.6rem .8rem;margin:.8rem 0;max-width:52rem}}
.same{{background:#dcfce7;color:#166534}} .differs{{background:#fee2e2;color:#991b1b}}
.chart{{background:#fff;border:1px solid #ddd}} .chart polyline{{fill:none;stroke-width:1.5}}
.steps{{display:flex;gap:.3rem;margin:.4rem 0}} .steps span{{padding:.1rem .5rem;border-radius:.3rem;background:#e5e7eb}}
.steps .done{{background:#bbf7d0}} .steps .now{{background:#2563eb;color:#fff}}
.running,.promoted{{background:#dcfce7;color:#166534}} .waiting,.paused{{background:#fef3c7;color:#92400e}}
.rolled_back,.aborted,.failing{{background:#fee2e2;color:#991b1b}} .breach{{color:#991b1b;font-weight:600}}
</style></head><body>
<h1>cutover {version}</h1><div class="meta">pid {pid} · up {uptime} · {total} requests served, {errors} failed · refreshes every 2 s · <a href="/api/v1/status">JSON</a> · <a href="/metrics">metrics</a></div>
<h2>Routes</h2><table><tr><th>route</th><th>match</th><th>split</th><th>effective now</th><th>from</th></tr>"#,
        version = esc(&status.version),
        pid = status.pid,
        uptime = esc(&humantime::format_duration(std::time::Duration::from_secs(
            charts.uptime.as_secs()
        ))
        .to_string()),
        total = status
            .pools
            .iter()
            .flat_map(|p| &p.upstreams)
            .map(|u| u.requests_total)
            .sum::<u64>(),
        errors = status
            .pools
            .iter()
            .flat_map(|p| &p.upstreams)
            .map(|u| u.errors_total)
            .sum::<u64>(),
    );
}

/// Each route's match, split as a bar, effective split and where it comes
/// from.
fn routes_table(h: &mut String, status: &Status, colour: &HashMap<&str, &str>) {
    for r in &status.routes {
        let total: u64 = r.split.values().map(|w| u64::from(*w)).sum();
        let _ = write!(
            h,
            "<tr><td><b>{}</b></td><td>{}</td><td><div class=\"bar\" title=\"split\">",
            esc(&r.name),
            esc(&r.match_text()),
        );
        for (pool, w) in &r.split {
            if *w == 0 || total == 0 {
                continue;
            }
            let pct = u64::from(*w) as f64 * 100.0 / total as f64;
            let _ = write!(
                h,
                "<div style=\"width:{pct:.1}%;background:{}\">{} {pct:.0}%</div>",
                colour.get(pool.as_str()).copied().unwrap_or("#666"),
                esc(pool)
            );
        }
        let weights: Vec<String> = r
            .split
            .iter()
            .map(|(p, w)| format!("{}={w}", esc(p)))
            .collect();
        let _ = write!(
            h,
            "</div>{}</td><td>{}</td><td>{}</td></tr>",
            weights.join(" "),
            esc(&r.effective_text()),
            esc(&r.split_source)
        );
    }
}

/// Every upstream: weight, state, health, in flight, rates and drain.
fn pools_table(h: &mut String, status: &Status, charts: &Charts, colour: &HashMap<&str, &str>) {
    h.push_str("<h2>Pools</h2><table><tr><th>pool</th><th>upstream</th><th>weight</th><th>state</th><th>health</th><th class=\"num\">in flight</th><th class=\"num\">req/s</th><th class=\"num\">errors/s</th><th>drain</th></tr>");
    let now_ms = crate::clock::unix_ms();
    let mut drains = 0;
    for p in &status.pools {
        for u in &p.upstreams {
            // Before the history's second sample: the rate since start.
            let since_start = || {
                let secs = charts.uptime.as_secs_f64().max(1.0);
                (u.requests_total as f64 / secs, u.errors_total as f64 / secs)
            };
            let (rps, eps) = charts
                .upstream_rates
                .get(&(p.name.clone(), u.addr))
                .copied()
                .unwrap_or_else(since_start);
            let drain = match u.drain_deadline_ms {
                Some(d) if u.state == "draining" => {
                    drains += 1;
                    let left = d.saturating_sub(now_ms) / 1000;
                    format!(
                        "sticky clients for {left} s more{}",
                        if u.removing { ", then removed" } else { "" }
                    )
                }
                Some(_) if u.removing => "removing".to_string(),
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<tr><td><span class=\"st\" style=\"background:{}22\">{}</span></td><td>{}</td><td class=\"num\">{}</td><td><span class=\"st {}\">{}</span></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{rps:.1}</td><td class=\"num\">{eps:.1}</td><td>{}</td></tr>",
                colour.get(p.name.as_str()).copied().unwrap_or("#666"),
                esc(&p.name),
                u.addr,
                u.weight,
                esc(&u.state),
                esc(&u.state),
                esc(&u.health),
                u.in_flight,
                esc(&drain)
            );
        }
    }
    let _ = write!(
        h,
        "</table>\n<p class=\"meta\">{drains} drain(s) in progress.</p>"
    );
    for p in &status.pools {
        if let Some(q) = &p.queue {
            let _ = write!(
                h,
                "<p class=\"meta\" id=\"queue-{pool}\">{pool}: {} waiting in the queue (at most {} per upstream at once, {} may wait, {} ms each)</p>",
                q.waiting,
                q.max_in_flight
                    .map_or_else(|| "each upstream's own".to_string(), |n| n.to_string()),
                q.max_queue,
                q.queue_timeout_ms,
                pool = esc(&p.name),
            );
        }
    }
    h.push_str("</body></html>\n");
}

/// A route's rollout: state, steps, the last check's figures for target
/// and baseline next to their limits, and why it holds or ended.
fn rollout_panel(h: &mut String, route: &str, r: &serde_json::Value) {
    let active = rollout_head(h, route, r);
    let a = &r["analysis"];
    let limits = &r["limits"];
    last_check_table(h, a, limits);
    if a["errors"].is_object() {
        error_test(h, route, &a["errors"], limits);
    }
    if a["latency"].is_object() {
        latency_test(h, route, &a["latency"], limits);
    }
    for b in a["breaches"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<p class=\"breach\">{}</p>",
            esc(b.as_str().unwrap_or(""))
        );
    }
    outside_checks(h, a);
    let failures = r["failures"].as_u64().unwrap_or(0);
    let limit = limits["failure_limit"].as_u64().unwrap_or(0);
    // A finished rollout has no checks in a row left to count.
    let in_a_row = if active {
        format!(
            "failing checks in a row: {} of {limit} · ",
            failures.min(limit)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\">{in_a_row}checks every {}</p></div>",
        esc(limits["check_every"].as_str().unwrap_or("?"))
    );
}

/// The rollout's title line, its steps and its reason; whether it is
/// still moving.
fn rollout_head(h: &mut String, route: &str, r: &serde_json::Value) -> bool {
    let state = r["state"].as_str().unwrap_or("?");
    let step = r["step"].as_u64().unwrap_or(0);
    let active = matches!(state, "running" | "waiting" | "paused");
    let failures = r["failures"].as_u64().unwrap_or(0);
    let limit = r["limits"]["failure_limit"].as_u64().unwrap_or(0);
    // A failing check is not "waiting for data": say so, in red.
    let (badge, badge_text) = if active && failures > 0 {
        (
            "failing".to_string(),
            format!("check failing ({failures} of {limit})"),
        )
    } else {
        (state.to_string(), state.replace('_', " "))
    };
    let interval = r["interval"].as_str().unwrap_or("?");
    let left = match (
        active,
        humantime::parse_duration(interval),
        r["step_started_ms"].as_u64(),
    ) {
        (true, Ok(interval), Some(started)) => {
            let spent = crate::clock::unix_ms().saturating_sub(started);
            let left = (interval.as_millis() as u64).saturating_sub(spent) / 1000;
            format!(" · {left} s left at this step")
        }
        _ => String::new(),
    };
    let _ = write!(
        h,
        "<div class=\"rollout\" id=\"rollout-{route}\"><b>Rollout of {route} to {to}</b> <span class=\"st {badge}\">{badge_text}</span> · step {step} of {n} · {weight}% on {to} · every {interval}{left}",
        route = esc(route),
        to = esc(r["to"].as_str().unwrap_or("?")),
        badge = esc(&badge),
        badge_text = esc(&badge_text),
        n = r["steps"].as_array().map_or(0, Vec::len),
        weight = r["weight"],
        interval = esc(interval),
    );
    h.push_str("<div class=\"steps\">");
    for (i, s) in r["steps"].as_array().into_iter().flatten().enumerate() {
        let class = match (i as u64 + 1).cmp(&step) {
            std::cmp::Ordering::Less => "done",
            std::cmp::Ordering::Equal => "now",
            std::cmp::Ordering::Greater => "",
        };
        let _ = write!(h, "<span class=\"{class}\">{s}%</span>");
    }
    h.push_str("</div>");
    if let Some(reason) = r["reason"].as_str() {
        let _ = write!(h, "<p class=\"reason\">{}</p>", esc(reason));
    }
    active
}

/// A number with `digits` decimals, or a dash.
fn num(v: &serde_json::Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_string(), |n| format!("{n:.digits$}"))
}

/// The outside checks with their values and states, and what the
/// dry-run limits would have done.
fn outside_checks(h: &mut String, a: &serde_json::Value) {
    let checks = a["checks"].as_array().map_or(&[][..], Vec::as_slice);
    if !checks.is_empty() {
        h.push_str("<table class=\"analysis\"><tr><th>check</th><th class=\"num\">value</th><th class=\"num\">limits</th><th>state</th></tr>");
        for c in checks {
            let mut limits = Vec::new();
            if let Some(max) = c["max"].as_f64() {
                limits.push(format!("≤ {max}"));
            }
            if let Some(min) = c["min"].as_f64() {
                limits.push(format!("≥ {min}"));
            }
            let dry = if c["dry_run"] == true {
                " (dry run)"
            } else {
                ""
            };
            let state = match c["error"].as_str() {
                Some(e) => format!("{}: {e}", c["state"].as_str().unwrap_or("?")),
                None => c["state"].as_str().unwrap_or("?").to_string(),
            };
            let _ = write!(
                h,
                "<tr><td>{}{dry}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(c["name"].as_str().unwrap_or("?")),
                num(&c["value"], 3),
                esc(&limits.join(" ")),
                esc(&state)
            );
        }
        h.push_str("</table>");
    }
    for d in a["dry_run"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<p class=\"dry-run\">dry run, not acted on: {}</p>",
            esc(d.as_str().unwrap_or(""))
        );
    }
}

/// The last check's figures beside their limits.
fn last_check_table(h: &mut String, a: &serde_json::Value, limits: &serde_json::Value) {
    let _ = write!(
        h,
        "<table class=\"analysis\"><tr><th>last check</th><th class=\"num\">target</th><th class=\"num\">baseline</th><th class=\"num\">limit</th></tr>\
         <tr><td>requests</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">min {}</td></tr>\
         <tr><td>error rate</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">max {} (+{} over baseline)</td></tr>\
         <tr><td>p99 ms</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">max {} ({}x baseline)</td></tr></table>",
        num(&a["target"]["requests"], 0),
        num(&a["baseline"]["requests"], 0),
        limits["min_requests"],
        num(&a["target"]["error_rate"], 4),
        num(&a["baseline"]["error_rate"], 4),
        num(&limits["max_error_rate"], 4),
        num(&limits["max_error_rate_increase"], 4),
        num(&a["target"]["p99_ms"], 1),
        num(&a["baseline"]["p99_ms"], 1),
        num(&limits["max_p99_ms"], 0),
        num(&limits["max_p99_ratio"], 1),
    );
}

/// The error test over the whole rollout: each rate with its interval,
/// beside the tolerance and what it decided.
fn error_test(h: &mut String, route: &str, e: &serde_json::Value, limits: &serde_json::Value) {
    let pct = |i: &serde_json::Value| {
        format!(
            "{:.2} % [{:.2}, {:.2}]",
            i["estimate"].as_f64().unwrap_or(0.0) * 100.0,
            i["low"].as_f64().unwrap_or(0.0) * 100.0,
            i["high"].as_f64().unwrap_or(1.0) * 100.0
        )
    };
    let _ = write!(
        h,
        "<p class=\"meta\" id=\"error-test-{route}\">error test since the start: target {} vs baseline {} · tolerance +{} pp and {}x · {} % confidence: <b>{}</b></p>",
        pct(&e["target"]),
        pct(&e["baseline"]),
        num(
            &limits["max_error_rate_increase"]
                .as_f64()
                .map(|d| d * 100.0)
                .into(),
            2
        ),
        num(&limits["max_error_ratio"], 1),
        num(&e["confidence"].as_f64().map(|c| c * 100.0).into(), 2),
        esc(e["decision"].as_str().unwrap_or("?")),
        route = esc(route),
    );
    let bound = |k: &str| e["baseline"][k].as_f64().unwrap_or(0.0);
    let increase = limits["max_error_rate_increase"].as_f64();
    let ratio = limits["max_error_ratio"].as_f64();
    let worse_from = match (increase, ratio) {
        (Some(d), Some(r)) => Some((bound("high") + d).max(bound("high") * r)),
        (Some(d), None) => Some(bound("high") + d),
        (None, Some(r)) => Some(bound("high") * r),
        (None, None) => None,
    };
    interval_chart(h, &format!("interval-{route}"), e, worse_from, |top| {
        format!(
            "baseline (blue) and target (orange) error rates, 0 to {:.2} %; worse past the dashed line",
            top * 100.0
        )
    });
}

/// The latency test the same way, in ms.
fn latency_test(h: &mut String, route: &str, l: &serde_json::Value, limits: &serde_json::Value) {
    let quantile = limits["latency_quantile"].as_str().unwrap_or("p99");
    let ms = |i: &serde_json::Value| {
        let high = i["high"]
            .as_f64()
            .map_or_else(|| "?".to_string(), |v| format!("{v:.1}"));
        format!(
            "{:.1} ms [{:.1}, {high}]",
            i["estimate"].as_f64().unwrap_or(0.0),
            i["low"].as_f64().unwrap_or(0.0)
        )
    };
    let _ = write!(
        h,
        "<p class=\"meta\" id=\"latency-test-{route}\">latency test since the start: {quantile} target {} vs baseline {} · tolerance {}x and +{} ms · {} % confidence: <b>{}</b></p>",
        ms(&l["target"]),
        ms(&l["baseline"]),
        num(&limits["max_p99_ratio"], 1),
        limits["min_p99_increase_ms"],
        num(&l["confidence"].as_f64().map(|c| c * 100.0).into(), 2),
        esc(l["decision"].as_str().unwrap_or("?")),
        route = esc(route),
        quantile = esc(quantile),
    );
    // Worse once the target is past both the ratio and the floor over
    // the baseline's upper bound.
    let worse_from = match (
        l["baseline"]["high"].as_f64(),
        limits["max_p99_ratio"].as_f64(),
    ) {
        (Some(high), Some(r)) => Some(
            (high.max(1.0) * r).max(high + limits["min_p99_increase_ms"].as_f64().unwrap_or(0.0)),
        ),
        _ => None,
    };
    interval_chart(
        h,
        &format!("latency-interval-{route}"),
        l,
        worse_from,
        |top| {
            format!(
                "baseline (blue) and target (orange) {quantile}, 0 to {top:.1} ms; worse past the dashed line"
            )
        },
    );
}

/// A test's two intervals drawn on one axis (0 to a little past the
/// largest bound): baseline above, target below, each a bar from low to
/// high (an unknown high runs to the edge) with its estimate as a dot, and
/// a dashed line from where the target would be worse.
fn interval_chart(
    h: &mut String,
    id: &str,
    test: &serde_json::Value,
    worse_from: Option<f64>,
    caption: impl Fn(f64) -> String,
) {
    let (t, b) = (&test["target"], &test["baseline"]);
    let top = [
        &t["high"],
        &b["high"],
        &t["estimate"],
        &b["estimate"],
        &t["low"],
        &b["low"],
    ]
    .into_iter()
    .filter_map(|v| v.as_f64())
    .chain(worse_from)
    .fold(0.0001_f64, f64::max)
        * 1.1;
    let x = |v: f64| 10.0 + v.min(top) / top * 280.0;
    let bound = |i: &serde_json::Value, k: &str, unknown: f64| i[k].as_f64().unwrap_or(unknown);
    let _ = write!(
        h,
        "<svg class=\"chart\" id=\"{}\" viewBox=\"0 0 300 40\" width=\"300\" height=\"40\">",
        esc(id)
    );
    for (y, i, colour) in [(12.0, b, "#2563eb"), (28.0, t, "#d97706")] {
        let _ = write!(
            h,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"4\"/><circle cx=\"{:.1}\" cy=\"{y}\" r=\"3\" fill=\"#111\"/>",
            x(bound(i, "low", 0.0)),
            x(bound(i, "high", top)),
            x(bound(i, "estimate", 0.0)),
        );
    }
    if let Some(w) = worse_from {
        let _ = write!(
            h,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"2\" y2=\"38\" stroke=\"#991b1b\" stroke-dasharray=\"3 2\"/>",
            x(w)
        );
    }
    let _ = write!(h, "</svg><div class=\"meta\">{}</div>", esc(&caption(top)));
}

/// A route's shadow traffic: where copies go, how they compared, and the
/// last differences.
fn mirror_panel(h: &mut String, route: &str, m: &serde_json::Value) {
    let _ = write!(
        h,
        "<div class=\"mirror\" id=\"mirror-{route}\"><b>Shadow traffic of {route}</b> · {percent}% copied to {pool} · comparing {compare} · {in_flight} in flight",
        route = esc(route),
        percent = m["percent"],
        pool = esc(m["pool"].as_str().unwrap_or("?")),
        compare = esc(&m["compare"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
        in_flight = m["in_flight"],
    );
    h.push_str("<p>");
    for outcome in ["same", "differs", "failed", "skipped"] {
        let _ = write!(
            h,
            "<span class=\"st {outcome}\">{outcome} {}</span> ",
            m["counts"][outcome]
        );
    }
    h.push_str("</p>");
    let differences = m["differences"].as_array().filter(|d| !d.is_empty());
    if let Some(differences) = differences {
        h.push_str("<table class=\"analysis\"><tr><th>last differences</th><th class=\"num\">client</th><th class=\"num\">shadow</th></tr>");
        for d in differences.iter().rev() {
            let answer = |a: &serde_json::Value| {
                let body = a["body_sha256"]
                    .as_str()
                    .map(|sha| {
                        format!(
                            " · {} B sha256:{}",
                            a["body_bytes"],
                            sha.get(..8).unwrap_or(sha)
                        )
                    })
                    .unwrap_or_default();
                format!("{}{body}", a["status"])
            };
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(d["method"].as_str().unwrap_or("?")),
                esc(d["path"].as_str().unwrap_or("?")),
                esc(&answer(&d["primary"])),
                esc(&answer(&d["shadow"])),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</div>\n");
}

/// A chart's name, the value it draws of a point, and how it writes one.
type ChartKind = (&'static str, fn(&Point) -> f32, fn(f32) -> String);

/// Per pool, requests/s, error rate and p99 over the last 15 minutes, as
/// three inline SVG line charts (newest point on the right).
fn pool_charts(
    h: &mut String,
    status: &Status,
    series: &BTreeMap<String, Vec<Point>>,
    colour: &HashMap<&str, &str>,
) {
    let minutes = SAMPLE_EVERY.as_secs() * KEPT as u64 / 60;
    let _ = write!(
        h,
        "<h2>Last {minutes} minutes</h2><table><tr><th>pool</th><th>requests/s</th><th>error rate</th><th>p99 ms</th></tr>"
    );
    // Every pool has its row from the start; its first point comes after
    // one sample interval.
    let none = Vec::new();
    for pool in status.pools.iter().map(|p| &p.name) {
        let points = series.get(pool).unwrap_or(&none);
        let stroke = colour.get(pool.as_str()).copied().unwrap_or("#666");
        let _ = write!(h, "<tr><td>{}</td>", esc(pool));
        let charts: [ChartKind; 3] = [
            ("rps", |p| p.requests_per_second, |v| format!("{v:.1}")),
            ("errors", |p| p.error_rate, |v| format!("{:.2}%", v * 100.0)),
            ("p99", |p| p.p99_ms, |v| format!("{v:.1}")),
        ];
        for (name, value, text) in charts {
            let values: Vec<f32> = points.iter().map(value).collect();
            chart(h, &format!("chart-{pool}-{name}"), &values, stroke, text);
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
    if series.values().all(Vec::is_empty) {
        let _ = write!(
            h,
            "<p class=\"meta\">The first point comes {} s after start.</p>",
            SAMPLE_EVERY.as_secs()
        );
    }
}

/// One line chart of `values` (NaN: a gap) scaled to its maximum, with
/// the latest and the largest value beside it.
fn chart(h: &mut String, id: &str, values: &[f32], stroke: &str, text: fn(f32) -> String) {
    const W: f32 = KEPT as f32;
    const H: f32 = 40.0;
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    let scale = if max > 0.0 { (H - 4.0) / max } else { 0.0 };
    let start = W - values.len() as f32;
    let mut lines: Vec<String> = vec![String::new()];
    for (i, v) in values.iter().enumerate() {
        if !v.is_finite() {
            lines.push(String::new());
            continue;
        }
        let (x, y) = (start + i as f32, H - 2.0 - v * scale);
        if let Some(line) = lines.last_mut() {
            let _ = write!(line, "{x:.0},{y:.1} ");
        }
    }
    let _ = write!(
        h,
        "<td><svg class=\"chart\" id=\"{}\" viewBox=\"0 0 {W} {H}\" width=\"270\" height=\"48\" preserveAspectRatio=\"none\">",
        esc(id)
    );
    for line in lines.iter().filter(|l| !l.is_empty()) {
        let _ = write!(
            h,
            "<polyline stroke=\"{stroke}\" points=\"{}\"/>",
            line.trim_end()
        );
    }
    let last = values.iter().rev().find(|v| v.is_finite()).copied();
    let _ = write!(
        h,
        "</svg><div class=\"meta\">now {} · max {}</div></td>",
        last.map_or_else(|| "–".to_string(), text),
        text(max)
    );
}
