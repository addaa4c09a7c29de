//! Weights and the validated [`Split`]: the one place their rules live.
//!
//! A split is built once — from the file or from an admin call's body — and
//! carried as is to the routing table, the persisted overrides and the audit
//! log. Nothing downstream re-checks it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest weight accepted for a pool in a split or an upstream in a pool, so
/// that sums over many of them cannot overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A weight out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an integer from 0 to {MAX_WEIGHT}, got {got}")]
pub struct WeightError {
    /// What was given, as written.
    pub got: String,
}

/// The weight bound: every weight in the crate passes here.
pub fn weight(value: i64) -> Result<u32, WeightError> {
    u32::try_from(value)
        .ok()
        .filter(|w| *w <= MAX_WEIGHT)
        .ok_or_else(|| WeightError {
            got: value.to_string(),
        })
}

/// Why a split was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("a split needs at least one pool")]
    Empty,
    #[error("every pool has weight 0: at least one must be above 0")]
    AllZero,
    #[error("{pool}: weight {error}")]
    Weight { pool: String, error: WeightError },
    #[error("{0}: pool named twice")]
    Duplicate(String),
}

/// Pool name → relative weight, in the order given; at least one pool,
/// every weight within [`MAX_WEIGHT`], at least one above 0.
#[derive(Debug, Clone, Eq)]
pub struct Split(Vec<(String, u32)>);

impl Split {
    pub fn new<I, S>(pairs: I) -> Result<Split, SplitError>
    where
        I: IntoIterator<Item = (S, i64)>,
        S: Into<String>,
    {
        let mut shares: Vec<(String, u32)> = Vec::new();
        for (pool, value) in pairs {
            let pool = pool.into();
            let w = weight(value).map_err(|error| SplitError::Weight {
                pool: pool.clone(),
                error,
            })?;
            if shares.iter().any(|(p, _)| *p == pool) {
                return Err(SplitError::Duplicate(pool));
            }
            shares.push((pool, w));
        }
        if shares.is_empty() {
            return Err(SplitError::Empty);
        }
        if shares.iter().all(|(_, w)| *w == 0) {
            return Err(SplitError::AllZero);
        }
        Ok(Split(shares))
    }

    /// (pool, weight) in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(p, w)| (p.as_str(), *w))
    }

    pub fn pools(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(p, _)| p.as_str())
    }

    /// The pool's weight; 0 for a pool the split does not name.
    pub fn weight_of(&self, pool: &str) -> u32 {
        self.0
            .iter()
            .find(|(p, _)| p == pool)
            .map_or(0, |(_, w)| *w)
    }

    /// This split laid over `base`: `base`'s pool order, then pools only this
    /// one names; pools only `base` names weigh 0. Still valid: this split
    /// has a weight above 0.
    pub fn over(&self, base: &Split) -> Split {
        let mut shares: Vec<(String, u32)> = base
            .pools()
            .map(|p| (p.to_string(), self.weight_of(p)))
            .collect();
        for (pool, w) in self.iter() {
            if !shares.iter().any(|(p, _)| p == pool) {
                shares.push((pool.to_string(), w));
            }
        }
        debug_assert!(shares.iter().any(|(_, w)| *w > 0));
        Split(shares)
    }
}

/// Two splits are equal when they give every pool the same weight,
/// whatever their order.
impl PartialEq for Split {
    fn eq(&self, other: &Split) -> bool {
        self.0.len() == other.0.len() && self.iter().all(|(p, w)| other.weight_of(p) == w)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (pool, w)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{pool}={w}")?;
        }
        Ok(())
    }
}

/// A JSON object `{"blue": 90, "green": 10}` (state file, audit log).
impl Serialize for Split {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Split {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Split, D::Error> {
        let map = std::collections::BTreeMap::<String, i64>::deserialize(d)?;
        Split::new(map).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_live_in_the_constructor() {
        assert_eq!(
            Split::new(Vec::<(String, i64)>::new()),
            Err(SplitError::Empty)
        );
        assert_eq!(Split::new([("a", 0), ("b", 0)]), Err(SplitError::AllZero));
        assert!(matches!(
            Split::new([("a", -1)]),
            Err(SplitError::Weight { .. })
        ));
        assert!(matches!(
            Split::new([("a", i64::from(MAX_WEIGHT) + 1)]),
            Err(SplitError::Weight { .. })
        ));
        assert_eq!(
            Split::new([("a", 1), ("a", 2)]),
            Err(SplitError::Duplicate("a".into()))
        );
        let s = Split::new([("a", 0), ("b", i64::from(MAX_WEIGHT))]).unwrap();
        assert_eq!(s.weight_of("b"), MAX_WEIGHT);
        assert_eq!(s.weight_of("zz"), 0);
    }

    #[test]
    fn equality_ignores_order_and_over_keeps_base_order() {
        let base = Split::new([("blue", 100), ("green", 0)]).unwrap();
        let runtime = Split::new([("green", 100)]).unwrap();
        let eff = runtime.over(&base);
        assert_eq!(
            eff.iter().collect::<Vec<_>>(),
            vec![("blue", 0), ("green", 100)]
        );
        assert_eq!(eff, Split::new([("green", 100), ("blue", 0)]).unwrap());
        assert_ne!(eff, runtime);
        let json = serde_json::to_string(&eff).unwrap();
        assert_eq!(json, r#"{"blue":0,"green":100}"#);
        assert_eq!(serde_json::from_str::<Split>(&json).unwrap(), eff);
        assert!(serde_json::from_str::<Split>(r#"{"a":0}"#).is_err());
    }
}
