//! Request matchers on a route beyond host and path: `headers`, `cookies`
//! and `query`, each a map of name → exact string, `{ present = true }` or
//! `{ regex = "…" }`, and `client_subject` (one such value, matched
//! against the verified client certificate's subject on an mTLS
//! listener). Read from the file (every problem at its key) and
//! evaluated per request; a route without matchers costs one length check.

use http::{HeaderMap, HeaderName};
use regex::{Regex, RegexBuilder};
use toml::de::DeValue;

use super::Problems;
use super::reader::{Table, Value};

/// Compiled regexes stay small: a route table is rebuilt on every change.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a request must carry, besides host and path, for the route to
/// match it. Every listed matcher must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matchers {
    /// Lower-case names.
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub cookies: Vec<(String, ValueMatch)>,
    /// Names and values compared after form-decoding (`%20`, `+`).
    pub query: Vec<(String, ValueMatch)>,
    /// The verified client certificate's subject (`CN=billing,O=Acme`).
    pub client_subject: Option<ValueMatch>,
}

/// How one value is matched.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Present,
    /// Found anywhere in the value unless anchored with `^…$`.
    Regex(Regex),
}

impl PartialEq for ValueMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ValueMatch::Exact(a), ValueMatch::Exact(b)) => a == b,
            (ValueMatch::Present, ValueMatch::Present) => true,
            (ValueMatch::Regex(a), ValueMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(s) => s == value,
            ValueMatch::Present => true,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }

    /// The file's spelling, for status and errors.
    pub fn describe(&self) -> String {
        match self {
            ValueMatch::Exact(s) => format!("{s:?}"),
            ValueMatch::Present => "present".to_string(),
            ValueMatch::Regex(r) => format!("regex {:?}", r.as_str()),
        }
    }
}

impl Matchers {
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// How many matchers: among routes with the same path prefix and
    /// hosts, more matchers is more specific.
    pub fn count(&self) -> usize {
        self.headers.len()
            + self.cookies.len()
            + self.query.len()
            + usize::from(self.client_subject.is_some())
    }

    /// What ranks routes of the same path and hosts (Gateway API's order):
    /// header matchers (a cookie is a header), then query matchers; more
    /// is more specific.
    pub fn precedence(&self) -> (usize, usize) {
        (
            self.headers.len() + self.cookies.len() + usize::from(self.client_subject.is_some()),
            self.query.len(),
        )
    }

    /// Does the request carry everything listed? `query` is the URI's query
    /// string without `?`; `client_subject` the verified certificate's
    /// (none: a route that asks for one does not match).
    pub fn matches(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client_subject: Option<&str>,
    ) -> bool {
        let subject_ok = match &self.client_subject {
            None => true,
            Some(want) => client_subject.is_some_and(|s| want.matches(s)),
        };
        subject_ok
            && self.headers.iter().all(|(name, want)| {
                headers.get_all(name).iter().any(|v| match want {
                    ValueMatch::Exact(s) => v.as_bytes() == s.as_bytes(),
                    other => v.to_str().is_ok_and(|v| other.matches(v)),
                })
            })
            && self
                .cookies
                .iter()
                .all(|(name, want)| cookies(headers).any(|(k, v)| k == name && want.matches(v)))
            && self.query.iter().all(|(name, want)| {
                query.is_some_and(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .any(|(k, v)| k == name.as_str() && want.matches(&v))
                })
            })
    }

    /// Can no request match both? True when one name is matched exactly by
    /// both, with different values.
    pub fn excludes(&self, other: &Matchers) -> bool {
        fn differ<K: PartialEq>(a: &[(K, ValueMatch)], b: &[(K, ValueMatch)]) -> bool {
            a.iter().any(|(k, va)| {
                b.iter().any(|(l, vb)| {
                    k == l
                        && matches!((va, vb), (ValueMatch::Exact(x), ValueMatch::Exact(y)) if x != y)
                })
            })
        }
        let subjects_differ = matches!(
            (&self.client_subject, &other.client_subject),
            (Some(ValueMatch::Exact(a)), Some(ValueMatch::Exact(b))) if a != b
        );
        differ(&self.headers, &other.headers)
            || differ(&self.cookies, &other.cookies)
            || differ(&self.query, &other.query)
            || subjects_differ
    }

    /// `headers`, `cookies` and `query` as the file writes them, for status.
    pub fn to_json(&self) -> serde_json::Value {
        fn map<K: AsRef<str>>(items: &[(K, ValueMatch)]) -> serde_json::Value {
            items
                .iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.describe().into()))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        let mut out = serde_json::Map::new();
        for (key, value) in [
            ("headers", map(&self.headers)),
            ("cookies", map(&self.cookies)),
            ("query", map(&self.query)),
        ] {
            if value.as_object().is_some_and(|m| !m.is_empty()) {
                out.insert(key.to_string(), value);
            }
        }
        if let Some(subject) = &self.client_subject {
            out.insert("client_subject".to_string(), subject.describe().into());
        }
        out.into()
    }
}

/// The `name=value` pairs of every `Cookie` header (HTTP/2 may send several).
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
}

/// Reads a route's `headers`, `cookies` and `query` tables.
pub fn read_matchers(route: &mut Table<'_>, problems: &mut Problems) -> Matchers {
    let headers = read_map(route, "headers", problems, |name| {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))
    });
    let cookies = read_map(route, "cookies", problems, |name| {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        token
            .then(|| name.to_string())
            .ok_or_else(|| format!("invalid cookie name {name:?}"))
    });
    let query = read_map(route, "query", problems, |name| {
        (!name.is_empty())
            .then(|| name.to_string())
            .ok_or_else(|| "a query parameter name cannot be empty".to_string())
    });
    let client_subject = route
        .get("client_subject")
        .and_then(|value| read_value(value, &route.child("client_subject"), problems));
    Matchers {
        headers,
        cookies,
        query,
        client_subject,
    }
}

fn read_map<'a, K>(
    route: &mut Table<'a>,
    key: &'static str,
    problems: &mut Problems,
    name: impl Fn(&str) -> Result<K, String>,
) -> Vec<(K, ValueMatch)> {
    let Some(mut t) = route.table(key, problems) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, value) in t.entries() {
        let path = t.child(k.get_ref());
        let key = name(k.get_ref()).map_err(|e| problems.push(k.span(), &path, e));
        let value = read_value(value, &path, problems);
        if let (Ok(key), Some(value)) = (key, value) {
            out.push((key, value));
        }
    }
    t.finish(problems);
    out
}

fn read_value(value: Value<'_>, path: &str, problems: &mut Problems) -> Option<ValueMatch> {
    let mut t = match value.get_ref() {
        DeValue::String(s) => return Some(ValueMatch::Exact(s.to_string())),
        DeValue::Table(_) => Table::from_value(value, path.to_string(), problems)?,
        other => {
            problems.push(
                value.span(),
                path,
                format!(
                    "expected a string, {{ present = true }} or {{ regex = \"…\" }}, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let present = t.get("present");
    let regex = t.str("regex", problems);
    let span = t.span();
    t.finish(problems);
    match (present, regex) {
        (Some(p), None) => match p.get_ref() {
            DeValue::Boolean(true) => Some(ValueMatch::Present),
            _ => {
                problems.push(p.span(), &format!("{path}.present"), "must be true");
                None
            }
        },
        (None, Some(r)) => match RegexBuilder::new(r.get_ref())
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(re) => Some(ValueMatch::Regex(re)),
            Err(e) => {
                // The regex crate's message spans lines; one line here.
                let why = e.to_string().lines().last().unwrap_or_default().to_string();
                problems.push(
                    r.span(),
                    &format!("{path}.regex"),
                    format!(
                        "invalid regex {:?}: {}",
                        r.get_ref(),
                        why.trim_start_matches("error: ")
                    ),
                );
                None
            }
        },
        _ => {
            problems.push(
                span,
                path,
                "write exactly one of { present = true } or { regex = \"…\" }",
            );
            None
        }
    }
}
