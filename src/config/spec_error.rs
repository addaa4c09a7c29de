//! The error of a rollout's body: the field that is wrong, and why (one
//! type for the spec's parser and the outside checks' parser).

/// A field of the body that is wrong, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

impl SpecError {
    pub fn new(field: &str, reason: impl Into<String>) -> SpecError {
        SpecError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
