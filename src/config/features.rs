//! Reading the optional per-pool and per-route features: active health
//! checks, outlier ejection, slow start, sticky sessions and rollout
//! defaults.

use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use toml::de::DeValue;

use super::reader::Table;
use super::reader::Value;
use super::rollout_spec::ANALYSIS_KEYS;
use super::{
    Balance, ClientAuth, Concurrency, HealthConfig, OutlierConfig, Problems, StickyConfig, TlsFiles,
};

fn positive(
    t: &mut Table<'_>,
    key: &'static str,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    match t.duration(key, problems) {
        Some(d) if d.get_ref().is_zero() => {
            problems.push(d.span(), &t.child(key), "must be longer than zero");
            default
        }
        Some(d) => d.into_inner(),
        None => default,
    }
}

fn count(
    t: &mut Table<'_>,
    key: &'static str,
    min: u64,
    max: u64,
    default: u32,
    problems: &mut Problems,
) -> u32 {
    // The bounds passed in all fit in u32.
    t.bounded(key, min, max, problems)
        .map_or(default, |n| n as u32)
}

/// The method a gRPC health check calls (grpc.health.v1).
pub const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// `health = { path, interval, timeout, rise, fall }`, or `{ grpc = true, … }`.
pub fn read_health(pool: &mut Table<'_>, problems: &mut Problems) -> Option<HealthConfig> {
    let mut t = pool.table("health", problems)?;
    let grpc = t.bool("grpc", problems).unwrap_or(false);
    // A gRPC check calls grpc.health.v1.Health/Check: no path to give.
    let path = if grpc {
        GRPC_HEALTH_PATH.to_string()
    } else {
        match t.required_str("path", problems) {
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().to_string(),
            Some(p) => {
                problems.push(p.span(), &t.child("path"), "must start with '/'");
                "/".to_string()
            }
            None => "/".to_string(),
        }
    };
    let interval = positive(&mut t, "interval", Duration::from_secs(2), problems);
    let timeout = positive(&mut t, "timeout", Duration::from_secs(1), problems);
    let rise = count(&mut t, "rise", 1, 100, 2, problems);
    let fall = count(&mut t, "fall", 1, 100, 3, problems);
    if timeout > interval {
        problems.push(
            t.span(),
            &t.child("timeout"),
            format!("timeout ({timeout:?}) must not be longer than interval ({interval:?})"),
        );
    }
    t.finish(problems);
    Some(HealthConfig {
        path,
        interval,
        timeout,
        rise,
        fall,
        grpc,
    })
}

/// `outlier = { consecutive_failures, base_ejection, max_ejection, max_ejected_percent }`.
pub fn read_outlier(pool: &mut Table<'_>, problems: &mut Problems) -> OutlierConfig {
    let default = OutlierConfig::default();
    let Some(mut t) = pool.table("outlier", problems) else {
        return default;
    };
    let outlier = OutlierConfig {
        consecutive_failures: count(
            &mut t,
            "consecutive_failures",
            0,
            1000,
            default.consecutive_failures,
            problems,
        ),
        base_ejection: positive(&mut t, "base_ejection", default.base_ejection, problems),
        max_ejection: positive(&mut t, "max_ejection", default.max_ejection, problems),
        max_ejected_percent: count(
            &mut t,
            "max_ejected_percent",
            0,
            100,
            default.max_ejected_percent,
            problems,
        ),
    };
    if outlier.max_ejection < outlier.base_ejection {
        problems.push(
            t.span(),
            &t.child("max_ejection"),
            "must not be shorter than base_ejection",
        );
    }
    t.finish(problems);
    outlier
}

/// `slow_start = "30s"`.
pub fn read_slow_start(pool: &mut Table<'_>, problems: &mut Problems) -> Option<Duration> {
    let d = pool.duration("slow_start", problems)?;
    if d.get_ref().is_zero() {
        return None;
    }
    Some(d.into_inner())
}

/// `max_in_flight` (1 to 1,000,000), with `max_queue` (0 to 1,000,000,
/// default 1000) and `queue_timeout` (default 5 s, at most 10 min); the
/// pool has them when it or one of its upstreams (`upstream_limits`) sets
/// `max_in_flight`. The queue's keys without any `max_in_flight` are an
/// error (nothing would fill the queue).
pub fn read_concurrency(
    pool: &mut Table<'_>,
    upstream_limits: bool,
    problems: &mut Problems,
) -> Option<Concurrency> {
    let max_in_flight = pool.bounded("max_in_flight", 1, 1_000_000, problems);
    let max_queue = pool.bounded("max_queue", 0, 1_000_000, problems);
    let queue_timeout = match pool.duration("queue_timeout", problems) {
        Some(d) if d.get_ref().is_zero() || *d.get_ref() > Duration::from_secs(600) => {
            let path = pool.child("queue_timeout");
            problems.push(d.span(), &path, "must be longer than zero and at most 10m");
            None
        }
        d => d.map(toml::Spanned::into_inner),
    };
    if max_in_flight.is_none() && !upstream_limits {
        if max_queue.is_some() || queue_timeout.is_some() {
            let path = pool.child("max_in_flight");
            problems.push(
                pool.span(),
                &path,
                "max_queue and queue_timeout need max_in_flight (the per-upstream limit beyond which requests queue)",
            );
        }
        return None;
    }
    Some(Concurrency {
        // The bounds above fit in u32.
        max_in_flight: max_in_flight.map(|n| n as u32),
        max_queue: max_queue.map_or(1000, |n| n as u32),
        queue_timeout: queue_timeout.unwrap_or(Duration::from_secs(5)),
    })
}

/// `balance = "p2c" | "random"` (default p2c).
pub fn read_balance(pool: &mut Table<'_>, problems: &mut Problems) -> Balance {
    let Some(b) = pool.str("balance", problems) else {
        return Balance::default();
    };
    match *b.get_ref() {
        "p2c" => Balance::LeastRequest,
        "random" => Balance::Random,
        other => {
            problems.push(
                b.span(),
                &pool.child("balance"),
                format!("unknown balance {other:?}: expected \"p2c\" (least request) or \"random\" (weighted)"),
            );
            Balance::default()
        }
    }
}

/// `dns_refresh`: how often a pool's DNS-named upstreams are resolved.
pub fn read_dns_refresh(pool: &mut Table<'_>, problems: &mut Problems) -> Duration {
    positive(pool, "dns_refresh", Duration::from_secs(30), problems)
}

/// `sticky = { cookie, max_age }`.
pub fn read_sticky(route: &mut Table<'_>, problems: &mut Problems) -> Option<StickyConfig> {
    let mut t = route.table("sticky", problems)?;
    let cookie = match t.required_str("cookie", problems) {
        Some(c) if valid_cookie_name(c.get_ref()) => c.get_ref().to_string(),
        Some(c) => {
            problems.push(
                c.span(),
                &t.child("cookie"),
                "invalid cookie name: use letters, digits and !#$%&'*+-.^_`|~ only (RFC 6265)",
            );
            String::new()
        }
        None => String::new(),
    };
    let max_age = positive(&mut t, "max_age", Duration::from_secs(3600), problems);
    t.finish(problems);
    Some(StickyConfig { cookie, max_age })
}

fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// `tls = { cert, key }`, or an array of them for several certificates
/// chosen by SNI. On a client listener (`client_auth_allowed`) the first
/// may also say `client_ca` and `client_auth`.
pub fn read_tls(
    listener: &mut Table<'_>,
    client_auth_allowed: bool,
    problems: &mut Problems,
) -> (Vec<TlsFiles>, Option<ClientAuth>) {
    let path = listener.child("tls");
    let Some(value) = listener.get("tls") else {
        return (Vec::new(), None);
    };
    let mut auth = None;
    let mut one = |v: Value<'_>, path: String, first: bool, problems: &mut Problems| {
        let mut t = Table::from_value(v, path, problems)?;
        let cert = t
            .required_str("cert", problems)
            .map(|c| std::path::PathBuf::from(*c.get_ref()));
        let key = t
            .required_str("key", problems)
            .map(|k| std::path::PathBuf::from(*k.get_ref()));
        if client_auth_allowed && first {
            auth = read_client_auth(&mut t, problems);
        }
        t.finish(problems);
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    };
    let files = match value.get_ref() {
        toml::de::DeValue::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| one(v, format!("{path}[{i}]"), i == 0, problems))
            .collect(),
        _ => one(value, path, true, problems).into_iter().collect(),
    };
    (files, auth)
}

/// `client_ca = "ca.pem"` and `client_auth = "required" | "optional"`
/// (required unless said).
fn read_client_auth(t: &mut Table<'_>, problems: &mut Problems) -> Option<ClientAuth> {
    let ca = t.str("client_ca", problems);
    let mode = t.str("client_auth", problems);
    let required = match &mode {
        None => true,
        Some(m) if *m.get_ref() == "required" => true,
        Some(m) if *m.get_ref() == "optional" => false,
        Some(m) => {
            problems.push(
                m.span(),
                &t.child("client_auth"),
                format!(
                    "expected \"required\" or \"optional\", got {:?}",
                    m.get_ref()
                ),
            );
            true
        }
    };
    match (ca, mode) {
        (Some(ca), _) => Some(ClientAuth {
            ca: std::path::PathBuf::from(*ca.get_ref()),
            required,
        }),
        (None, Some(m)) => {
            problems.push(
                m.span(),
                &t.child("client_auth"),
                "needs client_ca: the CA certificates (PEM) client certificates must chain to",
            );
            None
        }
        (None, None) => None,
    }
}

/// `rollout = { steps, interval, max_error_rate, … }` on a route: defaults
/// for `ctl rollout`, checked by the same parser as the API's body.
pub fn read_rollout(route: &mut Table<'_>, problems: &mut Problems) -> Option<Json> {
    let value = route.get("rollout")?;
    let path = route.child("rollout");
    let DeValue::Table(table) = value.get_ref() else {
        problems.push(
            value.span(),
            &path,
            "expected a table like { steps = [10, 100], interval = \"5m\" }",
        );
        return None;
    };
    let (mut body, mut analysis) = (Map::new(), Map::new());
    for (key, v) in table.iter() {
        let name: &str = key.get_ref().as_ref();
        let Some(j) = to_json(v.get_ref()) else {
            problems.push(v.span(), &format!("{path}.{name}"), "unsupported value");
            continue;
        };
        if name == "to" {
            problems.push(
                key.span(),
                &format!("{path}.to"),
                "unknown key (name the pool in each rollout)",
            );
        } else if ANALYSIS_KEYS.contains(&name) {
            analysis.insert(name.to_string(), j);
        } else {
            body.insert(name.to_string(), j);
        }
    }
    if !analysis.is_empty() {
        body.insert("analysis".into(), Json::Object(analysis));
    }
    let defaults = Json::Object(body);
    match super::parse_spec(&json!({"to": "-"}), Some(&defaults)) {
        Ok(_) => Some(defaults),
        Err(e) => {
            // The file writes analysis limits flat.
            let field = e.field.strip_prefix("analysis.").unwrap_or(&e.field);
            let top = field.split(['.', '[']).next().unwrap_or(field);
            let index = field
                .split_once('[')
                .and_then(|(_, rest)| rest.trim_end_matches(']').parse::<usize>().ok());
            let span = table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == top)
                .map_or_else(
                    || value.span(),
                    |(_, v)| match (v.get_ref(), index) {
                        (DeValue::Array(items), Some(i)) if i < items.len() => items[i].span(),
                        _ => v.span(),
                    },
                );
            problems.push(span, &format!("{path}.{field}"), e.reason);
            None
        }
    }
}

/// A TOML value as JSON (datetimes have no JSON form).
fn to_json(v: &DeValue<'_>) -> Option<Json> {
    Some(match v {
        DeValue::String(s) => json!(s.as_ref()),
        DeValue::Integer(i) => json!(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
        DeValue::Float(f) => json!(f.as_str().replace('_', "").parse::<f64>().ok()?),
        DeValue::Boolean(b) => json!(b),
        DeValue::Array(items) => Json::Array(
            items
                .iter()
                .map(|i| to_json(i.get_ref()))
                .collect::<Option<Vec<_>>>()?,
        ),
        DeValue::Table(t) => Json::Object(
            t.iter()
                .map(|(k, v)| Some((k.get_ref().to_string(), to_json(v.get_ref())?)))
                .collect::<Option<Map<_, _>>>()?,
        ),
        DeValue::Datetime(_) => return None,
    })
}
