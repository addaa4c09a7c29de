//! How the config file and runtime overrides combine.
//!
//! Runtime changes survive restarts and reloads. When the file's own value
//! for the same thing changes (the file is then the newer intent), the file
//! wins and the override is dropped, with a reason for the audit log.

use crate::config::{Config, MirrorConfig, MirrorTarget, Split, StickyShift};
use crate::rollout::RolloutState;
use crate::state::{MirrorOverride, Overrides, SplitOverride};

/// The file's split of `route`, if the route exists.
fn file_split<'a>(file: &'a Config, route: &str) -> Option<&'a Split> {
    file.routes
        .iter()
        .find(|r| r.name == route)
        .map(|r| &r.split)
}

/// Drops the overrides that `file` has made stale; returns what was kept and
/// a sentence for each dropped one.
pub fn reconcile(file: &Config, mut o: Overrides) -> (Overrides, Vec<String>) {
    let mut dropped = Vec::new();
    reconcile_routes(file, &mut o, &mut dropped);
    reconcile_upstreams(file, &mut o, &mut dropped);
    drop_flags_of_gone_upstreams(file, &mut o);
    (o, dropped)
}

/// Splits, mirrors and rollouts of routes the file changed or removed.
fn reconcile_routes(file: &Config, o: &mut Overrides, dropped: &mut Vec<String>) {
    o.splits.retain(|route, s| match file_split(file, route) {
        None => {
            dropped.push(format!("split of route {route}: the route is no longer in the file"));
            false
        }
        Some(now) if *now != s.file_split => {
            dropped.push(format!(
                "split of route {route}: the file changed it, file value {now} replaces runtime value {}",
                s.split
            ));
            false
        }
        Some(_) => true,
    });

    o.mirrors.retain(|route, m| {
        let Some(r) = file.routes.iter().find(|r| r.name == *route) else {
            dropped.push(format!(
                "mirror of route {route}: the route is no longer in the file"
            ));
            return false;
        };
        let now = file_mirror(r.mirror.as_ref());
        if now != m.file_mirror {
            dropped.push(format!(
                "mirror of route {route}: the file changed it, so the file's mirror is back"
            ));
            return false;
        }
        if let Some(t) = &m.mirror
            && file.pool(&t.pool).is_none()
        {
            dropped.push(format!(
                "mirror of route {route}: pool {} is no longer in the file",
                t.pool
            ));
            return false;
        }
        true
    });

    o.rollout_history
        .retain(|route, _| file_split(file, route).is_some());
    let mut aborted = Vec::new();
    for (route, record) in o.rollouts.iter_mut() {
        let gone = file.pool(&record.spec.to).is_none();
        let changed = file_split(file, route).is_none_or(|now| *now != record.file_split);
        if record.state.is_active() && (gone || changed) {
            let reason = format!(
                "the config file changed route {route}'s split or pools during the rollout to {}",
                record.spec.to
            );
            dropped.push(format!("rollout of route {route}: aborted, {reason}"));
            record.state = RolloutState::Aborted;
            record.reason = Some(reason);
            record.paused_elapsed_ms = None;
            aborted.push((route.clone(), record.clone()));
        }
    }
    abort_the_rest_of(o, &aborted, dropped);
    o.rollouts
        .retain(|route, _| file_split(file, route).is_some());
    o.undo.retain(|route, _| file_split(file, route).is_some());
}

/// A group rollout is one rollout: a member the file aborted aborts the
/// others, each back at the split it started from.
fn abort_the_rest_of(
    o: &mut Overrides,
    aborted: &[(String, crate::rollout::RolloutRecord)],
    dropped: &mut Vec<String>,
) {
    for (route, record) in aborted {
        for member in record.group.iter().flat_map(|g| g.routes.iter()) {
            let Some(other) = o.rollouts.get_mut(member) else {
                continue;
            };
            if !other.same_rollout(record) || !other.state.is_active() {
                continue;
            }
            let reason =
                format!("the config file aborted route {route}'s part of the same rollout");
            dropped.push(format!("rollout of route {member}: aborted, {reason}"));
            other.state = RolloutState::Aborted;
            other.reason = Some(reason);
            other.paused_elapsed_ms = None;
            let (split, file_split) = (other.split(), other.file_split.clone());
            put_split(o, member, &split, &file_split);
        }
    }
}

/// Upstreams added that the file now lists (or whose pool it dropped),
/// and removals of upstreams whose weight the file changed.
fn reconcile_upstreams(file: &Config, o: &mut Overrides, dropped: &mut Vec<String>) {
    for (pool, added) in o.added.iter_mut() {
        let in_file = file.pool(pool);
        added.retain(|addr, _| match in_file {
            None => {
                dropped.push(format!(
                    "upstream {addr} added to pool {pool}: the pool is no longer in the file"
                ));
                false
            }
            Some(p) if p.upstreams.iter().any(|u| u.addr == *addr) => {
                dropped.push(format!(
                    "upstream {addr} added to pool {pool}: the file now lists it"
                ));
                false
            }
            Some(_) => true,
        });
    }

    for (pool, removed) in o.removed.iter_mut() {
        let in_file = file.pool(pool);
        removed.retain(|addr, weight| {
            match in_file.and_then(|p| p.upstreams.iter().find(|u| u.addr == *addr)) {
                // Gone from the file too: nothing left to remove.
                None => false,
                Some(u) if u.weight != *weight => {
                    dropped.push(format!(
                        "removal of upstream {addr} from pool {pool}: the file changed its weight, so it is back"
                    ));
                    false
                }
                Some(_) => true,
            }
        });
    }
}

/// Disable, drain and removal flags only make sense for upstreams that
/// still exist; empty entries go too.
fn drop_flags_of_gone_upstreams(file: &Config, o: &mut Overrides) {
    let exists = |o: &Overrides, pool: &str, addr: &std::net::SocketAddr| {
        let in_file = file
            .pool(pool)
            .is_some_and(|p| p.upstreams.iter().any(|u| u.addr == *addr))
            && !o.removed.get(pool).is_some_and(|r| r.contains_key(addr));
        in_file || o.added.get(pool).is_some_and(|a| a.contains_key(addr))
    };
    let snapshot = o.clone();
    for flags in [&mut o.disabled, &mut o.removing] {
        for (pool, addrs) in flags.iter_mut() {
            addrs.retain(|a| exists(&snapshot, pool, a));
        }
    }
    for (pool, drains) in o.drained.iter_mut() {
        drains.retain(|a, _| exists(&snapshot, pool, a));
    }
    o.removing.retain(|_, s| !s.is_empty());
    o.added.retain(|_, m| !m.is_empty());
    o.removed.retain(|_, m| !m.is_empty());
    o.disabled.retain(|_, s| !s.is_empty());
    o.drained.retain(|_, s| !s.is_empty());
}

/// Makes `split` the route's split: an override, or none when it is the
/// file's.
pub fn put_split(o: &mut Overrides, route: &str, split: &Split, file_split: &Split) {
    if split.over(file_split) == *file_split {
        o.splits.remove(route);
    } else {
        o.splits.insert(
            route.to_string(),
            SplitOverride {
                split: split.clone(),
                file_split: file_split.clone(),
            },
        );
    }
}

/// A mirror's pool and percent, `None` when it copies nothing.
pub fn file_mirror(m: Option<&MirrorConfig>) -> Option<MirrorTarget> {
    m.map(MirrorConfig::target).filter(|t| t.percent > 0)
}

/// Makes `mirror` (`None`: off) the route's shadow traffic: an override, or
/// none when it is the file's.
pub fn put_mirror(
    o: &mut Overrides,
    route: &str,
    mirror: Option<MirrorTarget>,
    file: Option<&MirrorConfig>,
) {
    let file_mirror = file_mirror(file);
    let mirror = mirror.filter(|t| t.percent > 0);
    if mirror == file_mirror {
        o.mirrors.remove(route);
    } else {
        o.mirrors.insert(
            route.to_string(),
            MirrorOverride {
                mirror,
                file_mirror,
            },
        );
    }
}

/// The config the table is built from: the file with overrides applied.
pub fn effective(file: &Config, o: &Overrides) -> Config {
    let mut config = file.clone();
    for route in &mut config.routes {
        let file_split = route.split.clone();
        if let Some(s) = o.splits.get(&route.name) {
            route.split = s.split.over(&route.split);
        }
        if let Some(m) = o.mirrors.get(&route.name) {
            route.mirror = m.mirror.as_ref().map(|t| match &route.mirror {
                // The file's other settings (max_body, compare, …) stay.
                Some(file) => MirrorConfig {
                    pool: t.pool.clone(),
                    percent: t.percent,
                    ..file.clone()
                },
                None => MirrorConfig::with_defaults(t.pool.clone(), t.percent),
            });
        }
        // Sticky clients follow a rollout while the split is the one it set.
        if let Some(r) = o.rollouts.get(&route.name)
            && r.split().over(&file_split) == route.split
        {
            route.sticky_shift = Some(StickyShift {
                pool: r.spec.to.clone(),
                percent: r.weight(),
                step: u32::try_from(r.step + 1).unwrap_or(u32::MAX),
            });
        }
    }
    for pool in &mut config.pools {
        if let Some(removed) = o.removed.get(&pool.name) {
            pool.upstreams.retain(|u| !removed.contains_key(&u.addr));
        }
        if let Some(added) = o.added.get(&pool.name) {
            for (addr, weight) in added {
                pool.upstreams.push(crate::config::UpstreamConfig {
                    addr: *addr,
                    weight: *weight,
                    max_in_flight: None,
                    host: None,
                });
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SplitOverride;

    fn file(blue: u32, green: u32) -> Config {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:1\"\n[[route]]\nname = \"app\"\nsplit = {{ blue = {blue}, green = {green} }}\n\
             [pool.blue]\nupstreams = [{{ addr = \"127.0.0.1:9001\" }}]\n[pool.green]\nupstreams = [{{ addr = \"127.0.0.1:9002\" }}]\n"
        );
        Config::parse("t", &text).unwrap()
    }

    fn split_override(file: &Config, blue: u32, green: u32) -> Overrides {
        let mut o = Overrides::default();
        o.splits.insert(
            "app".into(),
            SplitOverride {
                split: Split::new([("blue", i64::from(blue)), ("green", i64::from(green))])
                    .unwrap(),
                file_split: file_split(file, "app").unwrap().clone(),
            },
        );
        o
    }

    #[test]
    fn runtime_split_survives_an_unchanged_file() {
        let f = file(100, 0);
        let (kept, dropped) = reconcile(&f, split_override(&f, 0, 100));
        assert!(dropped.is_empty());
        assert_eq!(
            effective(&f, &kept).routes[0]
                .split
                .iter()
                .collect::<Vec<_>>(),
            vec![("blue", 0), ("green", 100)]
        );
    }

    #[test]
    fn file_change_of_the_same_split_wins() {
        let before = file(100, 0);
        let o = split_override(&before, 0, 100);
        let after = file(50, 50);
        let (kept, dropped) = reconcile(&after, o);
        assert!(kept.splits.is_empty());
        assert_eq!(dropped.len(), 1);
        assert!(dropped[0].contains("the file changed it"), "{dropped:?}");
        assert_eq!(
            effective(&after, &kept).routes[0]
                .split
                .iter()
                .collect::<Vec<_>>(),
            vec![("blue", 50), ("green", 50)]
        );
    }

    #[test]
    fn added_upstream_yields_to_the_file_and_flags_need_an_upstream() {
        let f = file(1, 1);
        let mut o = Overrides::default();
        o.added
            .entry("green".into())
            .or_default()
            .insert("127.0.0.1:9002".parse().unwrap(), 5);
        o.added
            .entry("green".into())
            .or_default()
            .insert("127.0.0.1:9003".parse().unwrap(), 1);
        o.disabled
            .entry("blue".into())
            .or_default()
            .insert("127.0.0.1:9999".parse().unwrap());
        o.disabled
            .entry("green".into())
            .or_default()
            .insert("127.0.0.1:9003".parse().unwrap());
        let (kept, dropped) = reconcile(&f, o);
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert_eq!(kept.added["green"].len(), 1);
        assert!(!kept.disabled.contains_key("blue"));
        assert!(kept.is_disabled("green", "127.0.0.1:9003".parse().unwrap()));
        let eff = effective(&f, &kept);
        assert_eq!(eff.pool("green").unwrap().upstreams.len(), 2);
    }
}
