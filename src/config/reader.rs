//! A walker over the spanned TOML tree that collects every problem instead of
//! stopping at the first one.
//!
//! serde stops at the first error, but `cutover check` must report every problem
//! of a file at once, each with its line, column and key path. So the file is
//! parsed into toml's spanned `DeTable` and read key by key here; keys nobody
//! asked for are reported as unknown when a table is finished.
//!
//! Depends on nothing in the crate but `config::Problems`.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problems;

/// A TOML value with its source span.
pub type Value<'a> = &'a Spanned<DeValue<'a>>;

/// One table being read. Keys read through it are marked used; `finish`
/// reports the rest.
pub struct Table<'a> {
    table: &'a DeTable<'a>,
    /// Span of the whole table, for "missing key" problems.
    span: Range<usize>,
    /// Key path of this table, e.g. `pool.blue` or `route[0]`.
    path: String,
    used: Vec<&'a str>,
}

impl<'a> Table<'a> {
    pub fn new(table: &'a DeTable<'a>, span: Range<usize>, path: String) -> Self {
        Table {
            table,
            span,
            path,
            used: Vec::new(),
        }
    }

    /// Views `value` as a table, or records that it should have been one.
    pub fn from_value(value: Value<'a>, path: String, problems: &mut Problems) -> Option<Self> {
        match value.get_ref() {
            DeValue::Table(t) => Some(Table::new(t, value.span(), path)),
            other => {
                problems.push(
                    value.span(),
                    &path,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }

    /// Key path of a child key.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    /// Whether `key` is set, without marking it used.
    pub fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// Returns the raw value under `key` and marks the key used.
    pub fn get(&mut self, key: &'a str) -> Option<Value<'a>> {
        self.used.push(key);
        self.table.get(key)
    }

    /// All entries, marking them used: for tables whose keys are names
    /// (`[pool.NAME]`, `split = { NAME = W }`).
    pub fn entries(&mut self) -> Vec<(&'a Spanned<std::borrow::Cow<'a, str>>, Value<'a>)> {
        let entries: Vec<_> = self.table.iter().collect();
        for (k, _) in &entries {
            self.used.push(k.get_ref().as_ref());
        }
        entries
    }

    pub fn str(&mut self, key: &'a str, problems: &mut Problems) -> Option<Spanned<&'a str>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.as_ref())),
            other => {
                problems.push(
                    value.span(),
                    &self.child(key),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn required_str(
        &mut self,
        key: &'a str,
        problems: &mut Problems,
    ) -> Option<Spanned<&'a str>> {
        if self.table.get(key).is_none() {
            problems.push(self.span(), &self.child(key), "missing required key");
            self.used.push(key);
            return None;
        }
        self.str(key, problems)
    }

    pub fn bool(&mut self, key: &'a str, problems: &mut Problems) -> Option<bool> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                problems.push(
                    value.span(),
                    &self.child(key),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn int(&mut self, key: &'a str, problems: &mut Problems) -> Option<Spanned<i64>> {
        let value = self.get(key)?;
        int_value(value, &self.child(key), problems)
    }

    /// A non-negative integer no larger than `max`.
    pub fn bounded(
        &mut self,
        key: &'a str,
        min: u64,
        max: u64,
        problems: &mut Problems,
    ) -> Option<u64> {
        let value = self.int(key, problems)?;
        let path = self.child(key);
        bounded_value(value, &path, min, max, problems)
    }

    pub fn duration(&mut self, key: &'a str, problems: &mut Problems) -> Option<Spanned<Duration>> {
        if let Some(value) = self.table.get(key)
            && let DeValue::Integer(n) = value.get_ref()
        {
            self.used.push(key);
            problems.push(
                value.span(),
                &self.child(key),
                format!(
                    "write durations as strings like \"30s\" or \"250ms\", not a bare number ({})",
                    n.as_str()
                ),
            );
            return None;
        }
        let s = self.str(key, problems)?;
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) => Some(Spanned::new(s.span(), d)),
            Err(e) => {
                problems.push(
                    s.span(),
                    &self.child(key),
                    format!(
                        "invalid duration {:?}: {e} (write e.g. \"250ms\", \"2s\", \"1m\")",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub fn array(
        &mut self,
        key: &'a str,
        problems: &mut Problems,
    ) -> Option<&'a [Spanned<DeValue<'a>>]> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                problems.push(
                    value.span(),
                    &self.child(key),
                    format!("expected an array, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub fn table(&mut self, key: &'a str, problems: &mut Problems) -> Option<Table<'a>> {
        let value = self.get(key)?;
        let path = self.child(key);
        Table::from_value(value, path, problems)
    }

    /// Reports every key that no reader asked for, with the known key it
    /// most likely meant.
    pub fn finish(self, problems: &mut Problems) {
        for (key, _) in self.table.iter() {
            let name: &str = key.get_ref().as_ref();
            if self.used.contains(&name) {
                continue;
            }
            let message = match closest(name, &self.used) {
                Some(known) => format!("unknown key; did you mean `{known}`?"),
                None => "unknown key".to_string(),
            };
            problems.push(key.span(), &self.child(name), message);
        }
    }
}

/// A TOML float or integer as a number; `None` for anything else.
pub fn number(value: &DeValue<'_>) -> Option<f64> {
    match value {
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        _ => None,
    }
}

pub fn int_value(value: Value<'_>, path: &str, problems: &mut Problems) -> Option<Spanned<i64>> {
    match value.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(Spanned::new(value.span(), n)),
            Err(_) => {
                problems.push(value.span(), path, "integer out of range");
                None
            }
        },
        other => {
            problems.push(
                value.span(),
                path,
                format!("expected an integer, found {}", other.type_str()),
            );
            None
        }
    }
}

pub fn bounded_value(
    value: Spanned<i64>,
    path: &str,
    min: u64,
    max: u64,
    problems: &mut Problems,
) -> Option<u64> {
    let n = *value.get_ref();
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            problems.push(
                value.span(),
                path,
                format!("must be an integer from {min} to {max}, got {n}"),
            );
            None
        }
    }
}

pub fn str_value<'a>(value: Value<'a>, path: &str, problems: &mut Problems) -> Option<&'a str> {
    match value.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            problems.push(
                value.span(),
                path,
                format!("expected a string, found {}", other.type_str()),
            );
            None
        }
    }
}

/// The known key closest to a misspelt one, if one is close enough to be
/// what was meant.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(&name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}
