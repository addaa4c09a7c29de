//! The `/api/v1/` endpoints as one table: (method, path pattern, what the
//! call does). A runtime change's row says how its path and body become a
//! [`Change`], its audit name and its success status; a 405 and its
//! `Allow` come from the same rows.

use bytes::Bytes;
use http::{Method, StatusCode};

use super::body::{parse_addr, parse_drain, parse_json, parse_mirror, parse_new_upstream};
use crate::config::Config;
use crate::control::{Change, ControlError, RolloutStep, UndoTarget, action, drain_deadline};

/// One endpoint.
pub(super) struct Row {
    pub method: Method,
    /// Segments after `/api/v1/`: a literal, or `{route}`, `{pool}`,
    /// `{addr}`, which match any one segment and name it.
    pub path: &'static str,
    pub does: Does,
}

/// What a call does once its row matched.
#[derive(Clone, Copy)]
pub(super) enum Does {
    Status,
    Audit,
    Fleet,
    Reload,
    Upgrade,
    /// A runtime change: `action` is its audit name (a call refused before
    /// it became a change is audited under it), `ok` its success status.
    Change {
        action: &'static str,
        ok: StatusCode,
        make: MakeChange,
    },
}

/// How a matched call becomes a change, or why it cannot.
type MakeChange = fn(&Call<'_>) -> Result<Change, ControlError>;

/// What a change's parser sees of the call.
pub(super) struct Call<'a> {
    pub params: Params<'a>,
    pub body: &'a Bytes,
    /// `?force=true`: move traffic even to a pool with nothing in rotation.
    pub force: bool,
    /// The config file in force (a rollout's defaults live there).
    pub file: &'a Config,
}

/// The segments a pattern named.
#[derive(Default)]
pub(super) struct Params<'a> {
    pub route: Option<&'a str>,
    pub pool: Option<&'a str>,
    pub addr: Option<&'a str>,
}

impl Params<'_> {
    /// The audit log's `target`: the route, the pool, or `pool/addr`.
    pub fn target(&self) -> String {
        match (self.route, self.pool, self.addr) {
            (_, Some(pool), Some(addr)) => format!("{pool}/{addr}"),
            (Some(route), _, _) => route.to_string(),
            (_, Some(pool), _) => pool.to_string(),
            _ => String::new(),
        }
    }

    fn route(&self) -> String {
        self.route.unwrap_or_default().to_string()
    }

    fn pool(&self) -> String {
        self.pool.unwrap_or_default().to_string()
    }

    fn addr(&self) -> Result<std::net::SocketAddr, ControlError> {
        parse_addr(self.addr.unwrap_or_default())
    }
}

const fn change(action: &'static str, ok: StatusCode, make: MakeChange) -> Does {
    Does::Change { action, ok, make }
}

/// Every `/api/v1/` endpoint (SPEC.md's table, in its order).
pub(super) fn rows() -> [Row; 21] {
    use Method as M;
    use StatusCode as S;
    let row = |method, path, does| Row { method, path, does };
    [
        row(M::GET, "status", Does::Status),
        row(M::GET, "audit", Does::Audit),
        row(M::GET, "fleet", Does::Fleet),
        row(
            M::PUT,
            "routes/{route}/split",
            change(action::SET_SPLIT, S::OK, set_split),
        ),
        row(
            M::PUT,
            "routes/{route}/mirror",
            change(action::SET_MIRROR, S::OK, set_mirror),
        ),
        row(
            M::POST,
            "routes/{route}/rollout",
            change(action::START_ROLLOUT, S::CREATED, start_rollout),
        ),
        row(
            M::POST,
            "rollouts",
            change(action::START_ROLLOUT, S::CREATED, start_rollouts),
        ),
        row(
            M::POST,
            "routes/{route}/rollout/promote",
            change(action::PROMOTE_ROLLOUT, S::OK, |c| {
                rollout(c, RolloutStep::Advance { approve: true })
            }),
        ),
        row(
            M::POST,
            "routes/{route}/rollout/pause",
            change(action::PAUSE_ROLLOUT, S::OK, |c| {
                rollout(c, RolloutStep::Pause)
            }),
        ),
        row(
            M::POST,
            "routes/{route}/rollout/resume",
            change(action::RESUME_ROLLOUT, S::OK, |c| {
                rollout(c, RolloutStep::Resume)
            }),
        ),
        row(
            M::POST,
            "routes/{route}/undo",
            change(action::UNDO, S::OK, |c| {
                Ok(Change::Undo {
                    target: UndoTarget::Route(c.params.route()),
                })
            }),
        ),
        row(
            M::POST,
            "pools/{pool}/undo",
            change(action::UNDO, S::OK, |c| {
                Ok(Change::Undo {
                    target: UndoTarget::Pool(c.params.pool()),
                })
            }),
        ),
        row(
            M::POST,
            "routes/{route}/rollout/abort",
            change(action::ABORT_ROLLOUT, S::OK, |c| {
                rollout(c, RolloutStep::Abort)
            }),
        ),
        row(
            M::POST,
            "pools/{pool}/upstreams",
            change(action::ADD_UPSTREAM, S::CREATED, add_upstream),
        ),
        // The upstream drains first; `removing: true` says it goes once
        // drained.
        row(
            M::DELETE,
            "pools/{pool}/upstreams/{addr}",
            change(action::REMOVE_UPSTREAM, S::ACCEPTED, remove_upstream),
        ),
        row(
            M::POST,
            "pools/{pool}/upstreams/{addr}/drain",
            change(action::DRAIN_UPSTREAM, S::OK, drain_upstream),
        ),
        row(
            M::POST,
            "pools/{pool}/upstreams/{addr}/disable",
            change(action::DISABLE_UPSTREAM, S::OK, |c| {
                Ok(Change::DisableUpstream {
                    pool: c.params.pool(),
                    addr: c.params.addr()?,
                })
            }),
        ),
        row(
            M::POST,
            "pools/{pool}/upstreams/{addr}/enable",
            change(action::ENABLE_UPSTREAM, S::OK, |c| {
                Ok(Change::EnableUpstream {
                    pool: c.params.pool(),
                    addr: c.params.addr()?,
                })
            }),
        ),
        row(
            M::POST,
            "pools/{pool}/drain",
            change(action::DRAIN_POOL, S::OK, drain_pool),
        ),
        row(M::POST, "reload", Does::Reload),
        row(M::POST, "upgrade", Does::Upgrade),
    ]
}

/// Where a call lands in the table.
pub(super) enum Routed<'a> {
    Found(Does, Params<'a>),
    /// The path exists for other methods: these, for `Allow`.
    WrongMethod(String),
    NotFound,
}

/// The row for `method` and the path's segments (after `/api/v1/`).
pub(super) fn route<'a>(method: &Method, segments: &'a [String]) -> Routed<'a> {
    let mut allow: Vec<String> = Vec::new();
    for row in rows() {
        let Some(params) = matches(row.path, segments) else {
            continue;
        };
        if row.method == method {
            return Routed::Found(row.does, params);
        }
        allow.push(row.method.to_string());
    }
    if allow.is_empty() {
        Routed::NotFound
    } else {
        Routed::WrongMethod(allow.join(", "))
    }
}

/// The segments `pattern` names, if `segments` fit it.
fn matches<'a>(pattern: &str, segments: &'a [String]) -> Option<Params<'a>> {
    let wanted: Vec<&str> = pattern.split('/').collect();
    if wanted.len() != segments.len() {
        return None;
    }
    let mut params = Params::default();
    for (want, got) in wanted.iter().zip(segments) {
        match *want {
            "{route}" => params.route = Some(got),
            "{pool}" => params.pool = Some(got),
            "{addr}" => params.addr = Some(got),
            literal if literal == got => {}
            _ => return None,
        }
    }
    Some(params)
}

fn set_split(c: &Call<'_>) -> Result<Change, ControlError> {
    Ok(Change::SetSplit {
        route: c.params.route(),
        split: super::body::parse_split(c.body)?,
        force: c.force,
    })
}

fn set_mirror(c: &Call<'_>) -> Result<Change, ControlError> {
    let (pool, percent) = parse_mirror(c.body)?;
    Ok(Change::SetMirror {
        route: c.params.route(),
        pool,
        percent,
    })
}

/// The body over the route's `rollout` defaults from the file.
fn start_rollout(c: &Call<'_>) -> Result<Change, ControlError> {
    let route = c.params.route();
    let defaults = c
        .file
        .routes
        .iter()
        .find(|r| r.name == route)
        .and_then(|r| r.rollout.as_ref());
    let spec = crate::rollout::parse_spec(&parse_json(c.body)?, defaults)?;
    Ok(Change::StartRollout {
        route,
        spec: Box::new(spec),
        now_ms: crate::clock::unix_ms(),
        force: c.force,
    })
}

/// `POST /api/v1/rollouts`: `from` and `routes` say which routes; the
/// rest is a rollout's body (the file's per-route defaults do not apply:
/// the routes may differ in them).
fn start_rollouts(c: &Call<'_>) -> Result<Change, ControlError> {
    let mut body = parse_json(c.body)?;
    let Some(map) = body.as_object_mut() else {
        return Err(ControlError::invalid(
            "body",
            "must be a JSON object, e.g. {\"from\": \"blue\", \"to\": \"green\"}",
        ));
    };
    let from = match map.remove("from") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(v) => {
            return Err(ControlError::invalid(
                "from",
                format!("expected a pool name, got {v}"),
            ));
        }
    };
    let routes = match map.remove("routes") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                serde_json::Value::String(s) if !s.is_empty() => Ok(s.clone()),
                v => Err(ControlError::invalid(
                    format!("routes[{i}]"),
                    format!("expected a route name, got {v}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ControlError::invalid(
                "routes",
                format!("expected a non-empty list of route names, got {v}"),
            ));
        }
    };
    if from.is_some() && !routes.is_empty() {
        return Err(ControlError::invalid(
            "routes",
            "give from or routes, not both",
        ));
    }
    let spec = crate::rollout::parse_spec(&body, None)?;
    Ok(Change::StartRollouts {
        from,
        routes,
        spec: Box::new(spec),
        now_ms: crate::clock::unix_ms(),
        force: c.force,
    })
}

fn rollout(c: &Call<'_>, step: RolloutStep) -> Result<Change, ControlError> {
    Ok(Change::Rollout {
        route: c.params.route(),
        step,
        now_ms: crate::clock::unix_ms(),
    })
}

fn add_upstream(c: &Call<'_>) -> Result<Change, ControlError> {
    let (addr, weight) = parse_new_upstream(c.body)?;
    Ok(Change::AddUpstream {
        pool: c.params.pool(),
        addr,
        weight,
    })
}

fn remove_upstream(c: &Call<'_>) -> Result<Change, ControlError> {
    Ok(Change::RemoveUpstream {
        pool: c.params.pool(),
        addr: c.params.addr()?,
        drain_until: drain_deadline(None),
    })
}

fn drain_upstream(c: &Call<'_>) -> Result<Change, ControlError> {
    Ok(Change::DrainUpstream {
        pool: c.params.pool(),
        addr: c.params.addr()?,
        drain_until: drain_deadline(parse_drain(c.body)?),
    })
}

fn drain_pool(c: &Call<'_>) -> Result<Change, ControlError> {
    Ok(Change::DrainPool {
        pool: c.params.pool(),
        drain_until: drain_deadline(parse_drain(c.body)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').map(str::to_string).collect()
    }

    /// A call every change row accepts: its audit name is the one the
    /// change it makes carries.
    #[test]
    fn each_change_row_makes_a_change_under_its_own_audit_name() {
        let file = Config::parse(
            "t.toml",
            "[[listener]]\nbind = \"127.0.0.1:1\"\n[[route]]\nname = \"web\"\nsplit = { blue = 1 }\n\
             [pool.blue]\nupstreams = [{ addr = \"127.0.0.1:9001\" }]\n",
        )
        .expect("test file is valid");
        let mut changes = 0;
        for row in rows() {
            let Does::Change { action, make, .. } = row.does else {
                continue;
            };
            let path = row
                .path
                .replace("{route}", "web")
                .replace("{pool}", "blue")
                .replace("{addr}", "127.0.0.1:9002");
            let body = match action {
                action::SET_SPLIT => r#"{"blue": 1}"#,
                action::SET_MIRROR => r#"{"pool": "blue", "percent": 5}"#,
                action::START_ROLLOUT => r#"{"to": "blue"}"#,
                action::ADD_UPSTREAM => r#"{"addr": "127.0.0.1:9002"}"#,
                _ => "",
            };
            let segs = segments(&path);
            let Routed::Found(_, params) = route(&row.method, &segs) else {
                panic!("{} {path} finds no row", row.method);
            };
            let call = Call {
                params,
                body: &Bytes::from(body),
                force: false,
                file: &file,
            };
            let made = make(&call).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(made.action(), action, "{} {path}", row.method);
            changes += 1;
        }
        assert_eq!(changes, 16);
    }

    #[test]
    fn a_known_path_with_another_method_is_405_with_every_allowed_one() {
        let segs = segments("pools/blue/upstreams/127.0.0.1:9002");
        match route(&Method::GET, &segs) {
            Routed::WrongMethod(allow) => assert_eq!(allow, "DELETE"),
            _ => panic!("GET on an upstream is not 405"),
        }
        let segs = segments("routes/web/rollout/promote");
        assert!(matches!(
            route(&Method::DELETE, &segs),
            Routed::WrongMethod(_)
        ));
        assert!(matches!(
            route(&Method::POST, &segments("routes/web/rollout/dance")),
            Routed::NotFound
        ));
        assert!(matches!(
            route(&Method::GET, &segments("status/more")),
            Routed::NotFound
        ));
    }

    #[test]
    fn params_name_the_audit_target_as_a_change_does() {
        let segs = segments("pools/blue/upstreams/127.0.0.1:9002/drain");
        let Routed::Found(_, params) = route(&Method::POST, &segs) else {
            panic!("drain finds no row");
        };
        assert_eq!(params.target(), "blue/127.0.0.1:9002");
    }
}
