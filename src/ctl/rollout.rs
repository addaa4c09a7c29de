//! `cutover ctl rollout` and the verbs that move a rollout: its flags as
//! the API's body, its one-line summary, and `--wait`, which follows it to
//! its end and says how it ended in the exit code.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::Said;
use super::client::{Api, CtlError, EXIT_ABORTED, EXIT_ROLLED_BACK, encode};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to", "pool"])))]
pub struct RolloutArgs {
    /// The route to roll out (with --to); without it, --pool rolls out
    /// every route that splits between the same two pools at once.
    #[arg(requires = "to")]
    route: Option<String>,
    /// The pool the route's traffic moves to.
    #[arg(long, requires = "route")]
    to: Option<String>,
    /// One rollout over every route that splits between this pool and one
    /// other (one step, one verdict, one rollback).
    #[arg(long, conflicts_with_all = ["route", "to"])]
    pool: Option<String>,
    /// With --pool: the pool traffic moves from, when routes split with
    /// several.
    #[arg(long, requires = "pool", conflicts_with = "routes")]
    from: Option<String>,
    /// With --pool: exactly these routes, e.g. web,api,ws.
    #[arg(long, requires = "pool", value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// The target's percent at each step, ending at 100 (default 5,25,50,100).
    #[arg(long, value_delimiter = ',', conflicts_with = "preset")]
    steps: Option<Vec<u32>>,
    /// all-at-once, canary-10-5m or linear-10-1m.
    #[arg(long)]
    preset: Option<String>,
    /// Time at each step, e.g. 30s (default 30s, or the preset's).
    #[arg(long)]
    interval: Option<String>,
    /// How long the last step (100 %) watches the target, judged against
    /// its own figures from before it, e.g. 10m (default: the interval,
    /// against the baseline).
    #[arg(long)]
    watch: Option<String>,
    /// Roll back when the target's error rate passes this (0 to 1).
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Roll back when the target's error rate is this much above the
    /// baseline's (0 to 1; `off` turns the comparison off).
    #[arg(long)]
    max_error_rate_increase: Option<String>,
    /// Roll back when the target's p99 passes this, e.g. 500ms.
    #[arg(long)]
    max_p99: Option<String>,
    /// Roll back when the target's median passes this, e.g. 50ms.
    #[arg(long)]
    max_p50: Option<String>,
    /// Roll back when the target's p95 passes this, e.g. 200ms.
    #[arg(long)]
    max_p95: Option<String>,
    /// Roll back when the target's share of 4xx answers passes this (0 to
    /// 1; off unless given).
    #[arg(long, value_name = "R")]
    max_4xx_rate: Option<f64>,
    /// Roll back when the target's p99 is this many times the baseline's
    /// (judged with --confidence; default 1.5); `off` turns the latency
    /// test off.
    #[arg(long)]
    max_p99_ratio: Option<String>,
    /// A p99 at most this many ms above the baseline's is never a
    /// regression (default 5).
    #[arg(long)]
    min_p99_increase_ms: Option<u64>,
    /// The quantile the latency test compares: p50 to p99.9 (default p99).
    #[arg(long)]
    latency_quantile: Option<String>,
    /// Requests the target must serve before a step is judged.
    #[arg(long)]
    min_requests: Option<u64>,
    /// How often the step is judged, e.g. 5s.
    #[arg(long)]
    check_every: Option<String>,
    /// Failing checks in a row that roll back (1 to 100; default 2).
    #[arg(long)]
    failure_limit: Option<u32>,
    /// Roll back when the target's error rate is more than this many times
    /// the baseline's (and more than --max-error-rate-increase above it);
    /// `off` turns the ratio off.
    #[arg(long)]
    max_error_ratio: Option<String>,
    /// The error and latency tests' confidence, above 0.5 and at most
    /// 0.9999 (default 0.99).
    #[arg(long)]
    confidence: Option<f64>,
    /// The longest a step waits for enough requests, e.g. 5m (default three
    /// intervals).
    #[arg(long)]
    max_step_wait: Option<String>,
    /// What a step that waited --max-step-wait without data does: pause,
    /// rollback or promote (default pause).
    #[arg(long)]
    on_inconclusive: Option<String>,
    /// Move on as soon as the error and latency tests say the target is
    /// within their tolerances, not at the end of the interval.
    #[arg(long)]
    promote_on_pass: bool,
    /// When the route mirrors to the target: roll back once more than this
    /// share (0 to 1) of the compared shadow copies differ.
    #[arg(long)]
    max_shadow_diff_rate: Option<f64>,
    /// More of the `analysis` object as JSON (`@FILE` reads a file), e.g.
    /// '{"prometheus": [{"url": "http://…:9090", "query": "…", "max": 0.1}]}';
    /// the flags above win.
    #[arg(long, value_name = "JSON")]
    analysis: Option<String>,
    /// Judge this limit without acting on it (repeatable), e.g.
    /// --dry-run max_error_rate: its breaches are reported, never rolled
    /// back on.
    #[arg(long, value_name = "LIMIT")]
    dry_run: Vec<String>,
    /// Hold before the step to 100 % until `cutover ctl promote ROUTE`.
    #[arg(long)]
    approve_before_100: bool,
    /// Start even if the target has no healthy upstream.
    #[arg(long)]
    force: bool,
    /// Follow the rollout to its end; the exit code says how it ended.
    #[arg(long)]
    pub(super) wait: bool,
}

/// A flag's number, or `off` (null: that check turned off).
fn number_or_off(flag: &str, value: &str, example: &str) -> Result<Value, CtlError> {
    match value {
        "off" => Ok(Value::Null),
        n => n
            .parse::<f64>()
            .map(|n| json!(n))
            .map_err(|_| CtlError::Usage(format!("{flag} {n:?}: a number like {example}, or off"))),
    }
}

impl RolloutArgs {
    /// The route, or `pool POOL` for a rollout over several routes.
    fn name(&self) -> String {
        match (&self.route, &self.pool) {
            (Some(route), _) => route.clone(),
            (None, pool) => format!("pool {}", pool.as_deref().unwrap_or("?")),
        }
    }

    fn body(&self) -> Result<Value, CtlError> {
        let to = self.to.as_ref().or(self.pool.as_ref());
        let mut body = json!({"to": to});
        if let Some(from) = &self.from {
            body["from"] = json!(from);
        }
        if let Some(routes) = &self.routes {
            body["routes"] = json!(routes);
        }
        if let Some(steps) = &self.steps {
            body["steps"] = json!(steps);
        }
        if let Some(preset) = &self.preset {
            body["preset"] = json!(preset);
        }
        if let Some(interval) = &self.interval {
            body["interval"] = json!(interval);
        }
        if let Some(watch) = &self.watch {
            body["watch"] = json!(watch);
        }
        let mut analysis = serde_json::Map::new();
        if let Some(r) = self.max_error_rate {
            analysis.insert("max_error_rate".into(), json!(r));
        }
        if let Some(r) = &self.max_error_rate_increase {
            let increase = number_or_off("--max-error-rate-increase", r, "0.001")?;
            analysis.insert("max_error_rate_increase".into(), increase);
        }
        if let Some(n) = self.failure_limit {
            analysis.insert("failure_limit".into(), json!(n));
        }
        if let Some(r) = &self.max_error_ratio {
            let ratio = number_or_off("--max-error-ratio", r, "1.5")?;
            analysis.insert("max_error_ratio".into(), ratio);
        }
        if let Some(c) = self.confidence {
            analysis.insert("confidence".into(), json!(c));
        }
        if let Some(w) = &self.max_step_wait {
            analysis.insert("max_step_wait".into(), json!(w));
        }
        if let Some(o) = &self.on_inconclusive {
            analysis.insert("on_inconclusive".into(), json!(o));
        }
        if self.promote_on_pass {
            analysis.insert("promote_on_pass".into(), json!(true));
        }
        if let Some(r) = self.max_shadow_diff_rate {
            analysis.insert("max_shadow_diff_rate".into(), json!(r));
        }
        for (flag, key, value) in [
            ("--max-p99", "max_p99_ms", &self.max_p99),
            ("--max-p50", "max_p50_ms", &self.max_p50),
            ("--max-p95", "max_p95_ms", &self.max_p95),
        ] {
            if let Some(text) = value {
                let d = humantime::parse_duration(text).map_err(|e| {
                    CtlError::Usage(format!("{flag} {text:?}: {e} (write e.g. 500ms)"))
                })?;
                analysis.insert(key.into(), json!(d.as_millis() as u64));
            }
        }
        if let Some(r) = self.max_4xx_rate {
            analysis.insert("max_4xx_rate".into(), json!(r));
        }
        if let Some(r) = &self.max_p99_ratio {
            let ratio = number_or_off("--max-p99-ratio", r, "1.5")?;
            analysis.insert("max_p99_ratio".into(), ratio);
        }
        if let Some(ms) = self.min_p99_increase_ms {
            analysis.insert("min_p99_increase_ms".into(), json!(ms));
        }
        if let Some(q) = &self.latency_quantile {
            analysis.insert("latency_quantile".into(), json!(q));
        }
        if let Some(n) = self.min_requests {
            analysis.insert("min_requests".into(), json!(n));
        }
        if let Some(c) = &self.check_every {
            analysis.insert("check_every".into(), json!(c));
        }
        if let Some(extra) = &self.analysis {
            let text = match extra.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| CtlError::Usage(format!("--analysis @{path}: {e}")))?,
                None => extra.clone(),
            };
            let Ok(Value::Object(more)) = serde_json::from_str::<Value>(&text) else {
                return Err(CtlError::Usage(format!(
                    "--analysis: expected a JSON object like {{\"http\": [...]}}, got {text:?}"
                )));
            };
            for (k, v) in more {
                analysis.entry(k).or_insert(v);
            }
        }
        for name in &self.dry_run {
            let Some(value) = analysis.get(name).cloned() else {
                return Err(CtlError::Usage(format!(
                    "--dry-run {name}: give the limit too (e.g. --{} …)",
                    name.replace('_', "-")
                )));
            };
            if !value.is_object() {
                analysis.insert(name.clone(), json!({"value": value, "dry_run": true}));
            }
        }
        if !analysis.is_empty() {
            body["analysis"] = Value::Object(analysis);
        }
        if self.approve_before_100 {
            body["approval"] = json!("before-100");
        }
        Ok(body)
    }
}

/// `POST /api/v1/routes/{route}/rollout` (or `/api/v1/rollouts` for
/// `--pool`) with the flags as its body; returns the answer and the route
/// to follow (a group's first).
async fn post_start(api: &Api, r: &RolloutArgs) -> Result<(Value, String), CtlError> {
    let query = if r.force { "?force=true" } else { "" };
    let path = match &r.route {
        Some(route) => format!("/api/v1/routes/{}/rollout{query}", encode(route)),
        None => format!("/api/v1/rollouts{query}"),
    };
    let v = api.call(Method::POST, &path, Some(r.body()?)).await?;
    let follow = match &r.route {
        Some(route) => route.clone(),
        None => v["rollout"]["group"]["routes"][0]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    Ok((v, follow))
}

/// The routes a rollout moves, as its lines name it: the route, or the
/// group's routes.
fn moved(r: &RolloutArgs, v: &Value) -> String {
    let group: Vec<&str> = v["rollout"]["group"]["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if group.is_empty() {
        r.name()
    } else {
        group.join(",")
    }
}

/// `cutover ctl rollout` (without `--wait`): started, in one line.
pub(super) async fn start(api: &Api, r: &RolloutArgs) -> Result<Said, CtlError> {
    let (v, _) = post_start(api, r).await?;
    let text = format!("{}: {}", moved(r, &v), rollout_line(&v["rollout"]));
    Ok(Said::new(v, text))
}

/// `cutover ctl rollout --wait`: started, then followed to its end. Its
/// exit codes 2 and 3 say how the rollout ended: every error is 1 here.
pub(super) async fn start_and_wait(api: &Api, r: &RolloutArgs) -> Result<u8, CtlError> {
    let waiting = |e| CtlError::WhileWaiting(Box::new(e));
    let (v, follow) = post_start(api, r).await.map_err(waiting)?;
    let name = moved(r, &v);
    println!("{name}: {}", rollout_line(&v["rollout"]));
    wait_rollout(api, &follow, &name, &v["rollout"])
        .await
        .map_err(waiting)
}

/// `cutover ctl undo ROUTE | --pool POOL`: the splits from before the
/// last change, one line per route moved.
pub(super) async fn undo(
    api: &Api,
    route: Option<&str>,
    pool: Option<&str>,
) -> Result<Said, CtlError> {
    let path = match (route, pool) {
        (Some(route), _) => format!("/api/v1/routes/{}/undo", encode(route)),
        (None, Some(pool)) => format!("/api/v1/pools/{}/undo", encode(pool)),
        (None, None) => return Err(CtlError::Usage("name a ROUTE or --pool POOL".into())),
    };
    let v = api.call(Method::POST, &path, None).await?;
    let lines: Vec<String> = v["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let split: Vec<String> = r["split"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(pool, w)| format!("{pool}={w}"))
                .collect();
            format!(
                "{}: split {} (undone)",
                r["name"].as_str().unwrap_or("?"),
                split.join(" ")
            )
        })
        .collect();
    Ok(Said::new(v, lines.join("\n")))
}

/// `promote`, `pause`, `resume`, `abort`: `POST …/rollout/{action}`.
pub(super) async fn step(api: &Api, route: &str, action: &str) -> Result<Said, CtlError> {
    let path = format!("/api/v1/routes/{}/rollout/{action}", encode(route));
    let v = api.call(Method::POST, &path, None).await?;
    let text = format!("{route}: {}", rollout_line(&v["rollout"]));
    Ok(Said::new(v, text))
}

/// A rollout in one line: state, step and weight, reason.
fn rollout_line(r: &Value) -> String {
    let steps = r["steps"].as_array().map_or(0, Vec::len);
    let state = r["state"].as_str().unwrap_or("?");
    let mut line = format!(
        "rollout to {} {} at step {}/{steps}",
        r["to"].as_str().unwrap_or("?"),
        state.replace('_', " "),
        r["step"],
    );
    // A finished rollout's weight is where it left the target, not a step's.
    if matches!(state, "running" | "waiting" | "paused") {
        line.push_str(&format!(" ({}%)", r["weight"]));
    }
    if let Some(reason) = r["reason"].as_str() {
        line.push_str(": ");
        line.push_str(reason);
    }
    line
}

/// The tests' last comparisons, as `--wait` prints them: each pool's
/// error rate, then latency quantile, with its interval and what the test
/// says; and the decisions, to print again only when one changes.
fn test_lines(r: &Value) -> Option<(String, Vec<String>)> {
    let words = |decision: &str| match decision {
        "worse" => "worse than",
        "within" => "within",
        _ => "not yet known against",
    };
    let target = r["to"].as_str().unwrap_or("target");
    let limits = &r["limits"];
    let e = &r["analysis"]["errors"];
    let decision = e["decision"].as_str()?;
    let pct = |i: &Value| {
        format!(
            "{:.2} % [{:.2}, {:.2}]",
            i["estimate"].as_f64().unwrap_or(0.0) * 100.0,
            i["low"].as_f64().unwrap_or(0.0) * 100.0,
            i["high"].as_f64().unwrap_or(1.0) * 100.0
        )
    };
    let mut decisions = decision.to_string();
    let mut lines = vec![format!(
        "  errors: {target} {} vs baseline {}: {} +{:.2} pp and {}x with {} % confidence",
        pct(&e["target"]),
        pct(&e["baseline"]),
        words(decision),
        limits["max_error_rate_increase"].as_f64().unwrap_or(0.0) * 100.0,
        limits["max_error_ratio"],
        e["confidence"].as_f64().unwrap_or(0.0) * 100.0,
    )];
    let l = &r["analysis"]["latency"];
    if let Some(decision) = l["decision"].as_str() {
        // An upper bound not known yet is null.
        let ms = |i: &Value| {
            let high = i["high"]
                .as_f64()
                .map_or_else(|| "?".to_string(), |h| format!("{h:.1}"));
            format!(
                "{:.1} ms [{:.1}, {high}]",
                i["estimate"].as_f64().unwrap_or(0.0),
                i["low"].as_f64().unwrap_or(0.0)
            )
        };
        decisions.push('/');
        decisions.push_str(decision);
        lines.push(format!(
            "  latency: {target} {} {} vs baseline {}: {} {}x and +{} ms with {} % confidence",
            limits["latency_quantile"].as_str().unwrap_or("p99"),
            ms(&l["target"]),
            ms(&l["baseline"]),
            words(decision),
            limits["max_p99_ratio"],
            limits["min_p99_increase_ms"],
            l["confidence"].as_f64().unwrap_or(0.0) * 100.0,
        ));
    }
    Some((decisions, lines))
}

/// The last check's outside checks (`  check prometheus[0]: 0.3 (max
/// 0.5) pass`) and dry-run breaches (`  dry run, not acted on: …`), as
/// `--wait` prints them; and what they say (each check's state, the
/// limits breached), to print again only when that changes.
fn outside_lines(r: &Value) -> (String, Vec<String>) {
    let a = &r["analysis"];
    let mut key: Vec<String> = a["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["state"].as_str().unwrap_or("?").to_string())
        .collect();
    key.extend(
        a["dry_run"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|b| b.split([':', ' ']).next().unwrap_or(b).to_string()),
    );
    let mut lines: Vec<String> = a["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let value = c["value"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |v| v.to_string());
            let mut limits = Vec::new();
            if let Some(max) = c["max"].as_f64() {
                limits.push(format!("max {max}"));
            }
            if let Some(min) = c["min"].as_f64() {
                limits.push(format!("min {min}"));
            }
            let dry = if c["dry_run"] == true {
                ", dry run"
            } else {
                ""
            };
            let error = c["error"]
                .as_str()
                .map_or_else(String::new, |e| format!(": {e}"));
            format!(
                "  check {}: {value} ({}{dry}) {}{error}",
                c["name"].as_str().unwrap_or("?"),
                limits.join(", "),
                c["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    lines.extend(
        a["dry_run"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|b| format!("  dry run, not acted on: {b}")),
    );
    (key.join(" "), lines)
}

/// Follows a rollout until it ends, a line per change; the exit code says
/// how it ended.
async fn wait_rollout(api: &Api, route: &str, name: &str, first: &Value) -> Result<u8, CtlError> {
    let mut last = rollout_line(first);
    let mut last_decision = String::new();
    let mut last_outside = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = api.call(Method::GET, "/api/v1/status", None).await?;
        let Some(r) = status["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == route)
        else {
            return Err(CtlError::Usage(format!("route {route} is gone")));
        };
        let rollout = &r["rollout"];
        let line = rollout_line(rollout);
        let ended = matches!(
            rollout["state"].as_str(),
            Some("promoted" | "rolled_back" | "aborted")
        );
        // The tests' figures when what one says changes, and at the end.
        if let Some((decisions, lines)) = test_lines(rollout)
            && (decisions != last_decision || (ended && line != last))
        {
            for l in lines {
                println!("{l}");
            }
            last_decision = decisions;
        }
        // The outside checks and dry-run breaches, when what they say
        // changes.
        let (key, outside) = outside_lines(rollout);
        if key != last_outside {
            for l in &outside {
                println!("{l}");
            }
            last_outside = key;
        }
        if line != last {
            println!("{name}: {line}");
            last = line;
        }
        match rollout["state"].as_str() {
            Some("promoted") => return Ok(0),
            Some("rolled_back") => return Ok(EXIT_ROLLED_BACK),
            Some("aborted") => return Ok(EXIT_ABORTED),
            _ => {}
        }
    }
}
