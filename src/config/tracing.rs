//! `[tracing]`: where spans go (an OTLP/gRPC collector) and how many
//! requests are traced. Without it, tracing is off (src/traces.rs).

use std::time::Duration;

use super::Problems;
use super::reader::{Table, number};

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC endpoint, `http://HOST:4317`.
    pub otlp_endpoint: String,
    /// The share of new traces sampled, 0 to 1; a request whose
    /// `traceparent` says sampled (or not) follows its parent.
    pub sample_ratio: f64,
    /// `service.name` of every span.
    pub service_name: String,
    /// How often queued spans are sent.
    pub export_interval: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
}

pub fn read_tracing(top: &mut Table<'_>, problems: &mut Problems) -> Option<TracingConfig> {
    let mut t = top.table("tracing", problems)?;
    let otlp_endpoint = t.required_str("otlp_endpoint", problems).and_then(|url| {
        let value = *url.get_ref();
        let ok = ["http://", "https://"]
            .iter()
            .any(|scheme| value.len() > scheme.len() && value.starts_with(scheme));
        if ok {
            Some(value.to_string())
        } else {
            problems.push(
                url.span(),
                &t.child("otlp_endpoint"),
                format!(
                    "expected an OTLP/gRPC URL like \"http://127.0.0.1:4317\", found {value:?}"
                ),
            );
            None
        }
    });
    let mut sample_ratio = 1.0;
    if let Some(value) = t.get("sample_ratio") {
        match number(value.get_ref()) {
            Some(r) if (0.0..=1.0).contains(&r) => sample_ratio = r,
            _ => problems.push(
                value.span(),
                &t.child("sample_ratio"),
                "must be a number from 0 to 1 (the share of new traces sampled, e.g. 0.01)",
            ),
        }
    }
    let service_name = match t.str("service_name", problems) {
        Some(name) if !name.get_ref().trim().is_empty() => name.get_ref().to_string(),
        Some(name) => {
            problems.push(name.span(), &t.child("service_name"), "must not be empty");
            String::new()
        }
        None => "cutover".to_string(),
    };
    let mut duration =
        |key, default: Duration, problems: &mut Problems| match t.duration(key, problems) {
            Some(d) if d.get_ref().is_zero() => {
                problems.push(d.span(), &t.child(key), "must be longer than 0s");
                default
            }
            Some(d) => d.into_inner(),
            None => default,
        };
    let export_interval = duration("export_interval", Duration::from_secs(5), problems);
    let export_timeout = duration("export_timeout", Duration::from_secs(10), problems);
    t.finish(problems);
    Some(TracingConfig {
        otlp_endpoint: otlp_endpoint?,
        sample_ratio,
        service_name,
        export_interval,
        export_timeout,
    })
}
