//! One function per `cutover ctl` verb (the rollout ones are in
//! `rollout`): the call it makes and what it says.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::Said;
use super::client::{Api, CtlError, EXIT_NOT_HEALTHY, encode};
use super::text::{fleet_table, mirror_text, split_text, status_table, upstream_line};

fn upstream_path(pool: &str, addr: &str) -> String {
    format!("/api/v1/pools/{}/upstreams/{}", encode(pool), encode(addr))
}

/// `status` (and `--fleet`: every instance of the fleet too).
pub(super) async fn status(api: &Api, fleet: bool) -> Result<Said, CtlError> {
    let (v, status) = api.status().await?;
    if !fleet {
        return Ok(Said::new(v, status_table(&status)));
    }
    let instances = api.call(Method::GET, "/api/v1/fleet", None).await?;
    let text = format!("{}\n{}", status_table(&status), fleet_table(&instances));
    Ok(Said::new(json!({"status": v, "fleet": instances}), text))
}

/// `split ROUTE POOL=WEIGHT…`.
pub(super) async fn split(
    api: &Api,
    route: &str,
    weights: &[String],
    force: bool,
) -> Result<Said, CtlError> {
    let mut split = serde_json::Map::new();
    for w in weights {
        let (pool, weight) = w
            .split_once('=')
            .and_then(|(p, n)| Some((p, n.parse::<u32>().ok()?)))
            .ok_or_else(|| CtlError::Usage(format!("{w:?}: write POOL=WEIGHT, e.g. green=10")))?;
        split.insert(pool.to_string(), json!(weight));
    }
    let query = if force { "?force=true" } else { "" };
    let path = format!("/api/v1/routes/{}/split{query}", encode(route));
    let v = api
        .call(Method::PUT, &path, Some(Value::Object(split)))
        .await?;
    let text = format!("{route}: {}", split_text(v.get("split")));
    Ok(Said::new(v, text))
}

/// `mirror ROUTE POOL=PERCENT`.
pub(super) async fn mirror(api: &Api, route: &str, target: &str) -> Result<Said, CtlError> {
    let (pool, percent) = target
        .split_once('=')
        .and_then(|(p, n)| Some((p, n.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            CtlError::Usage(format!(
                "{target:?}: write POOL=PERCENT, e.g. green=10 (green=0 stops the mirror)"
            ))
        })?;
    let path = format!("/api/v1/routes/{}/mirror", encode(route));
    let body = json!({"pool": pool, "percent": percent});
    let v = api.call(Method::PUT, &path, Some(body)).await?;
    let text = format!("{route}: {}", mirror_text(&v["mirror"]));
    Ok(Said::new(v, text))
}

/// `drain POOL [ADDR] [--timeout T] [--wait]`.
pub(super) async fn drain(
    api: &Api,
    pool: &str,
    addr: Option<&str>,
    timeout: Option<String>,
    wait: bool,
) -> Result<Said, CtlError> {
    let body = timeout.map(|t| json!({"timeout": t}));
    let path = match addr {
        Some(addr) => format!("{}/drain", upstream_path(pool, addr)),
        None => format!("/api/v1/pools/{}/drain", encode(pool)),
    };
    let v = api.call(Method::POST, &path, body).await?;
    let what = addr.map_or_else(|| pool.to_string(), |a| format!("{pool} {a}"));
    let text = if wait {
        follow(api, pool, addr, Until::Drained).await?;
        format!("{what}: drained")
    } else {
        match addr {
            Some(_) => upstream_line(pool, &v),
            None => format!(
                "{what}: draining {} upstream(s)",
                v["upstreams"].as_array().map_or(0, Vec::len)
            ),
        }
    };
    Ok(Said::new(v, text))
}

/// `enable` and `disable`: `POST …/upstreams/{addr}/{action}`.
pub(super) async fn upstream_action(
    api: &Api,
    pool: &str,
    addr: &str,
    action: &str,
) -> Result<Said, CtlError> {
    let path = format!("{}/{action}", upstream_path(pool, addr));
    let v = api.call(Method::POST, &path, None).await?;
    let text = upstream_line(pool, &v);
    Ok(Said::new(v, text))
}

/// `add POOL ADDR [--weight N]`.
pub(super) async fn add(api: &Api, pool: &str, addr: &str, weight: u32) -> Result<Said, CtlError> {
    let path = format!("/api/v1/pools/{}/upstreams", encode(pool));
    let body = json!({"addr": addr, "weight": weight});
    let v = api.call(Method::POST, &path, Some(body)).await?;
    let text = upstream_line(pool, &v);
    Ok(Said::new(v, text))
}

/// `remove POOL ADDR [--wait]`.
pub(super) async fn remove(
    api: &Api,
    pool: &str,
    addr: &str,
    wait: bool,
) -> Result<Said, CtlError> {
    let v = api
        .call(Method::DELETE, &upstream_path(pool, addr), None)
        .await?;
    let text = if wait {
        follow(api, pool, Some(addr), Until::Gone).await?;
        format!("{pool} {addr}: removed")
    } else {
        format!("{pool} {addr}: draining, removed when done")
    };
    Ok(Said::new(v, text))
}

/// `health POOL`: exit 0 when every upstream is healthy, else 5.
pub(super) async fn health(api: &Api, pool: &str) -> Result<Said, CtlError> {
    let (v, status) = api.status().await?;
    let Some(found) = status.pools.iter().find(|p| p.name == pool) else {
        return Err(CtlError::Refused {
            status: http::StatusCode::NOT_FOUND,
            message: format!("no pool named {pool:?}"),
        });
    };
    let healthy = found
        .upstreams
        .iter()
        .filter(|u| u.state == "healthy")
        .count();
    let total = found.upstreams.len();
    let mut lines: Vec<String> = found
        .upstreams
        .iter()
        .map(|u| format!("{pool} {}  {}", u.addr, u.state))
        .collect();
    let all = total > 0 && healthy == total;
    let verdict = if all { "healthy" } else { "NOT healthy" };
    lines.push(format!(
        "{pool}: {healthy} of {total} upstreams healthy: {verdict}"
    ));
    let pool_json = v["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
        .cloned()
        .unwrap_or_default();
    Ok(Said {
        json: pool_json,
        text: lines.join("\n"),
        exit: if all { 0 } else { EXIT_NOT_HEALTHY },
    })
}

/// `audit [--limit N]`: a line per entry, newest last.
pub(super) async fn audit(api: &Api, limit: usize) -> Result<Said, CtlError> {
    let path = format!("/api/v1/audit?limit={limit}");
    let v = api.call(Method::GET, &path, None).await?;
    let lines: Vec<String> = v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            // In a fleet, which instance the change went through.
            let via = e["instance"]
                .as_str()
                .map_or(String::new(), |i| format!("{i}  "));
            format!(
                "{}  {via}{}  {} {}  {}",
                e["time"].as_str().unwrap_or("?"),
                e["caller"]["peer"].as_str().unwrap_or("?"),
                e["action"].as_str().unwrap_or("?"),
                e["target"].as_str().unwrap_or("?"),
                e["result"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    Ok(Said::new(v, lines.join("\n")))
}

/// `reload`, with the runtime changes the file dropped.
pub(super) async fn reload(api: &Api) -> Result<Said, CtlError> {
    let v = api.call(Method::POST, "/api/v1/reload", None).await?;
    let mut text = format!(
        "reloaded: {}",
        v.get("summary").and_then(Value::as_str).unwrap_or("")
    );
    let dropped = v.get("dropped_runtime_changes").and_then(Value::as_array);
    for d in dropped.into_iter().flatten() {
        text.push_str(&format!(
            "\nruntime change dropped: {}",
            d.as_str().unwrap_or("")
        ));
    }
    Ok(Said::new(v, text))
}

/// `upgrade`: answers once the new process serves, which may take up to
/// the proxy's `upgrade_timeout`.
pub(super) async fn upgrade(api: &Api) -> Result<Said, CtlError> {
    let v = api
        .call_within(
            Method::POST,
            "/api/v1/upgrade",
            None,
            Duration::from_secs(300),
        )
        .await?;
    let pid = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = format!(
        "upgraded: pid {} handed over to pid {}",
        pid("old_pid"),
        pid("new_pid")
    );
    Ok(Said::new(v, text))
}

/// What `follow` waits for.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    /// No longer `draining` (`drained`, or enabled again).
    Drained,
    /// Gone from the pool.
    Gone,
}

/// Follows the upstream at `addr` of `pool` (every upstream of the pool
/// without it), a line on stderr per change, until each is as `until` says.
async fn follow(api: &Api, pool: &str, addr: Option<&str>, until: Until) -> Result<(), CtlError> {
    let mut last: Vec<String> = Vec::new();
    loop {
        let (_, status) = api.status().await?;
        let Some(p) = status.pools.iter().find(|p| p.name == pool) else {
            return Err(CtlError::Usage(format!("pool {pool} is gone")));
        };
        let watched: Vec<_> = p
            .upstreams
            .iter()
            .filter(|u| addr.is_none_or(|a| u.addr.to_string() == a))
            .collect();
        if watched.is_empty() && until == Until::Drained {
            return Err(CtlError::Usage(format!(
                "{pool} {}: no longer in the pool",
                addr.unwrap_or("")
            )));
        }
        let lines: Vec<String> = watched
            .iter()
            .map(|u| format!("{pool} {}: {}, {} in flight", u.addr, u.state, u.in_flight))
            .collect();
        for line in lines.iter().filter(|l| !last.contains(l)) {
            eprintln!("{line}");
        }
        last = lines;
        let done = match until {
            Until::Drained => watched.iter().all(|u| u.state != "draining"),
            Until::Gone => watched.is_empty(),
        };
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
