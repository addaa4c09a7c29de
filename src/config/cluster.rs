//! `[cluster]`: the etcd cluster a fleet of cutover instances shares its
//! runtime state through (docs/fleet.md). Without it, nothing changes.

use std::path::PathBuf;

use super::Problems;
use super::reader::{Table, str_value};

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// etcd client URLs, `http://` or `https://`.
    pub etcd: Vec<String>,
    /// Every key of this fleet lives under it; one fleet per prefix.
    pub prefix: String,
    /// This instance's name, unique in the fleet (default: the host name).
    pub instance: String,
    /// TLS to etcd: the CA to verify it, and a client certificate.
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// etcd authentication: user, and the file holding the password.
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// File paths are relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for path in [
            &mut self.etcd_ca,
            &mut self.etcd_cert,
            &mut self.etcd_key,
            &mut self.etcd_password_file,
        ]
        .into_iter()
        .flatten()
        {
            *path = base.join(&*path);
        }
    }
}

pub fn read_cluster(top: &mut Table<'_>, problems: &mut Problems) -> Option<ClusterConfig> {
    let mut t = top.table("cluster", problems)?;
    let mut etcd = Vec::new();
    let etcd_path = t.child("etcd");
    match t.array("etcd", problems) {
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{etcd_path}[{i}]");
                let Some(url) = str_value(item, &path, problems) else {
                    continue;
                };
                let ok = ["http://", "https://"]
                    .iter()
                    .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme));
                if ok {
                    etcd.push(url.to_string());
                } else {
                    problems.push(
                        item.span(),
                        &path,
                        format!(
                            "expected an etcd URL like \"http://10.0.0.5:2379\", found {url:?}"
                        ),
                    );
                }
            }
            if items.is_empty() {
                problems.push(t.span(), &etcd_path, "name at least one etcd endpoint");
            }
        }
        None if !t.has("etcd") => {
            problems.push(t.span(), &etcd_path, "missing required key");
        }
        None => {}
    }
    let prefix = t.required_str("prefix", problems).and_then(|p| {
        let value = *p.get_ref();
        if value.starts_with('/') && value.len() > 1 && !value.ends_with('/') {
            Some(value.to_string())
        } else {
            problems.push(
                p.span(),
                &t.child("prefix"),
                "expected a key prefix like \"/cutover/prod\" (starts with /, does not end with /)",
            );
            None
        }
    });
    let instance = match t.str("instance", problems) {
        Some(name) if valid_instance(name.get_ref()) => Some(name.get_ref().to_string()),
        Some(name) => {
            problems.push(
                name.span(),
                &t.child("instance"),
                "instance names are 1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.'",
            );
            None
        }
        None => Some(host_name()),
    };
    let path = |t: &mut Table<'_>, key, problems: &mut Problems| {
        t.str(key, problems).map(|s| PathBuf::from(*s.get_ref()))
    };
    let etcd_ca = path(&mut t, "etcd_ca", problems);
    let etcd_cert = path(&mut t, "etcd_cert", problems);
    let etcd_key = path(&mut t, "etcd_key", problems);
    let etcd_user = t
        .str("etcd_user", problems)
        .map(|s| s.get_ref().to_string());
    let etcd_password_file = path(&mut t, "etcd_password_file", problems);
    if etcd_cert.is_some() != etcd_key.is_some() {
        problems.push(
            t.span(),
            &t.child("etcd_cert"),
            "etcd_cert and etcd_key go together",
        );
    }
    if etcd_user.is_some() != etcd_password_file.is_some() {
        problems.push(
            t.span(),
            &t.child("etcd_user"),
            "etcd_user and etcd_password_file go together",
        );
    }
    t.finish(problems);
    Some(ClusterConfig {
        etcd,
        prefix: prefix?,
        instance: instance?,
        etcd_ca,
        etcd_cert,
        etcd_key,
        etcd_user,
        etcd_password_file,
    })
}

fn valid_instance(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The host's name, as the default instance name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| valid_instance(h))
        .unwrap_or_else(|| "cutover".to_string())
}
