//! Property tests of the pure core over sequences of changes and reloads.

// Test code only (its `mod` line is `#[cfg(test)]` too): its unwrap()s
// and expect()s never reach the proxy.
#![cfg(test)]

use std::net::SocketAddr;

use proptest::prelude::*;

use super::*;
use crate::control::reconcile;

/// One of a few files: the split of `app` and the upstreams of `green`
/// vary, as an operator's edits would.
fn file(variant: u8) -> Config {
    let (split, green) = match variant % 4 {
        0 => ("blue = 100, green = 0", r#"{ addr = "127.0.0.1:9002" }"#),
        1 => ("blue = 50, green = 50", r#"{ addr = "127.0.0.1:9002" }"#),
        2 => (
            "blue = 100, green = 0",
            r#"{ addr = "127.0.0.1:9002" }, { addr = "127.0.0.1:9004", weight = 3 }"#,
        ),
        _ => ("blue = 1", r#"{ addr = "127.0.0.1:9002", weight = 2 }"#),
    };
    // Variants 1 and 2 copy a share of requests to green.
    let mirror = match variant % 4 {
        1 => "mirror = { pool = \"green\", percent = 10 }\n",
        2 => "mirror = { pool = \"green\", percent = 50, compare = [\"body\"] }\n",
        _ => "",
    };
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:1\"\n[[route]]\nname = \"app\"\nsplit = {{ {split} }}\n{mirror}\
         [pool.blue]\nupstreams = [{{ addr = \"127.0.0.1:9001\" }}, {{ addr = \"127.0.0.1:9003\" }}]\n\
         [pool.green]\nupstreams = [{green}]\n"
    );
    Config::parse("t.toml", &text).expect("test file is valid")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn a_pool() -> impl Strategy<Value = String> {
    prop_oneof!["blue", "green", "red"].prop_map(String::from)
}

fn an_upstream() -> impl Strategy<Value = (String, SocketAddr)> {
    (a_pool(), 9001u16..9006).prop_map(|(p, port)| (p, addr(port)))
}

fn a_change() -> impl Strategy<Value = Change> {
    let upstream = an_upstream;
    prop_oneof![
        (prop_oneof!["app", "nope"], 0i64..4, 0i64..4, any::<bool>()).prop_filter_map(
            "a valid split",
            |(route, b, g, force)| {
                Some(Change::SetSplit {
                    route: route.to_string(),
                    split: Split::new([("blue", b), ("green", g)]).ok()?,
                    force,
                })
            }
        ),
        (upstream(), 0u32..3).prop_map(|((pool, addr), weight)| Change::AddUpstream {
            pool,
            addr,
            weight
        }),
        (upstream(), 1u64..3).prop_map(|((pool, addr), d)| Change::RemoveUpstream {
            pool,
            addr,
            drain_until: d
        }),
        upstream().prop_map(|(pool, addr)| Change::RemoveDrained { pool, addr }),
        upstream().prop_map(|(pool, addr)| Change::DisableUpstream { pool, addr }),
        upstream().prop_map(|(pool, addr)| Change::EnableUpstream { pool, addr }),
        (upstream(), 1u64..3).prop_map(|((pool, addr), d)| Change::DrainUpstream {
            pool,
            addr,
            drain_until: d
        }),
        (
            prop_oneof!["app", "nope"],
            proptest::option::of(a_pool()),
            prop_oneof![Just(0u32), Just(10), Just(50), Just(101)]
        )
            .prop_map(|(route, pool, percent)| Change::SetMirror {
                route: route.to_string(),
                pool,
                percent
            }),
        (a_pool(), 1u64..3).prop_map(|(pool, d)| Change::DrainPool {
            pool,
            drain_until: d
        }),
        prop_oneof!["app", "nope"].prop_map(|route| Change::Undo {
            target: UndoTarget::Route(route.to_string())
        }),
        a_pool().prop_map(|pool| Change::Undo {
            target: UndoTarget::Pool(pool)
        }),
    ]
}

/// A step of an operator's day: a change, or a reload of some file.
#[derive(Debug, Clone)]
enum Step {
    Change(Change),
    Reload(u8),
}

fn a_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => a_change().prop_map(Step::Change),
        1 => (0u8..4).prop_map(Step::Reload),
    ]
}

/// Green has nothing in rotation unless the test says so.
fn green_down(pool: &str) -> bool {
    pool != "green"
}

/// What must hold of overrides over `file` after any sequence of steps.
fn check_invariants(o: &Overrides, file: &Config) -> Result<(), TestCaseError> {
    // Precedence: every kept split override was made against this file's
    // split; a file change of it would have dropped it.
    for (route, s) in &o.splits {
        let r = file.routes.iter().find(|r| r.name == *route);
        prop_assert!(r.is_some_and(|r| r.split == s.file_split), "{route}: {o:?}");
    }
    // What undo would restore belongs to a route the file has, and was a
    // real change.
    for (route, e) in &o.undo {
        prop_assert!(
            file.routes.iter().any(|r| r.name == *route),
            "{route}: {o:?}"
        );
        prop_assert!(e.before != e.after, "{route}: {o:?}");
    }
    // The same rule for mirrors, and a mirror copies to a pool that exists.
    for (route, m) in &o.mirrors {
        let r = file.routes.iter().find(|r| r.name == *route);
        prop_assert!(
            r.is_some_and(|r| reconcile::file_mirror(r.mirror.as_ref()) == m.file_mirror),
            "{route}: {o:?}"
        );
        prop_assert!(m.mirror != m.file_mirror, "a no-op override is kept: {o:?}");
    }
    // Flags and removals name only upstreams the effective pools have.
    let eff = effective(file, o);
    let has = |pool: &str, a: &SocketAddr| {
        eff.pool(pool)
            .is_some_and(|p| p.upstreams.iter().any(|u| u.addr == *a))
    };
    for (pool, set) in o.disabled.iter().chain(o.removing.iter()) {
        prop_assert!(!set.is_empty());
        for a in set {
            prop_assert!(has(pool, a), "{pool}/{a} flagged but absent: {o:?}");
        }
    }
    for (pool, drains) in &o.drained {
        prop_assert!(!drains.is_empty());
        for a in drains.keys() {
            prop_assert!(has(pool, a), "{pool}/{a} drained but absent: {o:?}");
        }
    }
    // Every route still sends traffic somewhere.
    for r in &eff.routes {
        prop_assert!(r.split.iter().any(|(_, w)| w > 0));
        if let Some(m) = &r.mirror {
            prop_assert!(eff.pool(&m.pool).is_some() && m.percent <= 100, "{m:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Over any sequence of changes and reloads: the invariants hold after
    /// every step, a refused change changes nothing, and a reload reports
    /// exactly the split overrides it drops.
    #[test]
    fn sequences_keep_the_rules(steps in proptest::collection::vec(a_step(), 1..24)) {
        let mut variant = 0u8;
        let mut o = Overrides::default();
        for step in steps {
            match step {
                Step::Change(c) => {
                    if let Ok(next) = apply(&c, &o, &file(variant), &green_down) {
                        o = next;
                    }
                }
                Step::Reload(v) => {
                    variant = v;
                    let f = file(variant);
                    let (next, dropped) = reconcile(&f, o.clone());
                    let splits_dropped = o.splits.keys().filter(|r| !next.splits.contains_key(*r)).count();
                    let split_lines = dropped.iter().filter(|d| d.starts_with("split of route")).count();
                    prop_assert_eq!(splits_dropped, split_lines, "{:?}", dropped);
                    let mirrors_dropped = o.mirrors.keys().filter(|r| !next.mirrors.contains_key(*r)).count();
                    let mirror_lines = dropped.iter().filter(|d| d.starts_with("mirror of route")).count();
                    prop_assert_eq!(mirrors_dropped, mirror_lines, "{:?}", dropped);
                    o = next;
                }
            }
            check_invariants(&o, &file(variant))?;
        }
    }

    /// A change applied twice lands where it landed once, or is refused the
    /// second time (adding what exists, removing what is gone). Not undo:
    /// undoing twice redoes, on purpose.
    #[test]
    fn a_change_is_idempotent(steps in proptest::collection::vec(a_change(), 0..12), c in a_change().prop_filter("not an undo", |c| !matches!(c, Change::Undo { .. })), variant in 0u8..4) {
        let f = file(variant);
        let mut o = Overrides::default();
        for s in steps {
            if let Ok(next) = apply(&s, &o, &f, &green_down) {
                o = next;
            }
        }
        if let Ok(once) = apply(&c, &o, &f, &green_down) {
            match apply(&c, &once, &f, &green_down) {
                Ok(twice) => prop_assert_eq!(once, twice),
                Err(e) => prop_assert!(
                    matches!(c, Change::AddUpstream { .. } | Change::RemoveDrained { .. }),
                    "{:?} refused the second time: {}", c, e
                ),
            }
        }
    }

    /// Reloading the same file twice changes nothing the second time.
    #[test]
    fn reload_is_idempotent(steps in proptest::collection::vec(a_change(), 0..12), before in 0u8..4, after in 0u8..4) {
        let mut o = Overrides::default();
        for s in steps {
            if let Ok(next) = apply(&s, &o, &file(before), &green_down) {
                o = next;
            }
        }
        let (once, _) = reconcile(&file(after), o);
        let (twice, dropped) = reconcile(&file(after), once.clone());
        prop_assert!(dropped.is_empty(), "{:?}", dropped);
        prop_assert_eq!(once, twice);
    }
}

#[test]
fn traffic_to_a_pool_out_of_rotation_needs_force() {
    let f = file(0);
    let to_green = |force| Change::SetSplit {
        route: "app".into(),
        split: Split::new([("green", 100)]).unwrap(),
        force,
    };
    let o = Overrides::default();
    assert!(matches!(
        apply(&to_green(false), &o, &f, &green_down),
        Err(ControlError::NoUpstreamInRotation(p)) if p == "green"
    ));
    let forced = apply(&to_green(true), &o, &f, &green_down).unwrap();
    assert_eq!(
        effective(&f, &forced).routes[0].split.to_string(),
        "blue=0 green=100"
    );
    // Back to the file's split: the override goes.
    let back = Change::SetSplit {
        route: "app".into(),
        split: Split::new([("blue", 100)]).unwrap(),
        force: false,
    };
    assert!(
        apply(&back, &forced, &f, &green_down)
            .unwrap()
            .splits
            .is_empty()
    );
}

#[test]
fn unknown_things_are_named() {
    let f = file(0);
    let o = Overrides::default();
    let err = |c: Change| apply(&c, &o, &f, &|_| true).unwrap_err().to_string();
    assert_eq!(
        err(Change::SetSplit {
            route: "nope".into(),
            split: Split::new([("blue", 1)]).unwrap(),
            force: false
        }),
        "no route named \"nope\""
    );
    assert_eq!(
        err(Change::DisableUpstream {
            pool: "blue".into(),
            addr: addr(9999)
        }),
        "pool \"blue\" has no upstream 127.0.0.1:9999"
    );
    assert_eq!(
        err(Change::DrainPool {
            pool: "red".into(),
            drain_until: 1
        }),
        "no pool named \"red\""
    );
}

#[test]
fn remove_then_reap_then_add_back_restores_the_file() {
    let f = file(0);
    let mut o = Overrides::default();
    for c in [
        Change::RemoveUpstream {
            pool: "blue".into(),
            addr: addr(9003),
            drain_until: 5,
        },
        Change::RemoveDrained {
            pool: "blue".into(),
            addr: addr(9003),
        },
    ] {
        o = apply(&c, &o, &f, &|_| true).unwrap();
    }
    assert_eq!(effective(&f, &o).pool("blue").unwrap().upstreams.len(), 1);
    assert!(o.drained.is_empty() && o.removing.is_empty());
    let add = Change::AddUpstream {
        pool: "blue".into(),
        addr: addr(9003),
        weight: 1,
    };
    let o = apply(&add, &o, &f, &|_| true).unwrap();
    assert_eq!(o, Overrides::default());
}

#[test]
fn a_rollout_sets_the_sticky_shift() {
    let f = file(0);
    let spec = crate::rollout::parse_spec(
        &serde_json::json!({"to": "green", "steps": [25, 100]}),
        None,
    )
    .unwrap();
    let start = Change::StartRollout {
        route: "app".into(),
        spec: Box::new(spec),
        now_ms: 1,
        force: true,
    };
    let o = apply(&start, &Overrides::default(), &f, &|_| true).unwrap();
    let eff = effective(&f, &o);
    assert_eq!(eff.routes[0].split.to_string(), "blue=75 green=25");
    let shift = eff.routes[0].sticky_shift.clone().expect("a shift");
    assert_eq!((shift.pool.as_str(), shift.percent), ("green", 25));
}

#[test]
fn a_runtime_mirror_keeps_the_file_s_settings_and_percent_0_stops_it() {
    let f = file(2);
    let o = Overrides::default();
    let to_blue = Change::SetMirror {
        route: "app".into(),
        pool: Some("blue".into()),
        percent: 5,
    };
    let o = apply(&to_blue, &o, &f, &|_| true).unwrap();
    let m = effective(&f, &o).routes[0].mirror.clone().unwrap();
    assert_eq!((m.pool.as_str(), m.percent), ("blue", 5));
    assert!(m.compare.body, "the file's compare stays: {m:?}");
    // Without a pool: the current one, another percent.
    let more = Change::SetMirror {
        route: "app".into(),
        pool: None,
        percent: 20,
    };
    let o = apply(&more, &o, &f, &|_| true).unwrap();
    assert_eq!(
        effective(&f, &o).routes[0].mirror.as_ref().unwrap().pool,
        "blue"
    );
    let stop = Change::SetMirror {
        route: "app".into(),
        pool: None,
        percent: 0,
    };
    let o = apply(&stop, &o, &f, &|_| true).unwrap();
    assert!(effective(&f, &o).routes[0].mirror.is_none());
    let bad = |pool: &str, percent| {
        apply(
            &Change::SetMirror {
                route: "app".into(),
                pool: Some(pool.into()),
                percent,
            },
            &Overrides::default(),
            &f,
            &|_| true,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(bad("red", 10), "no pool named \"red\"");
    assert_eq!(bad("blue", 101), "percent: must be from 0 to 100, got 101");
}

#[test]
fn undo_restores_the_split_before_the_last_change_and_undoing_it_redoes() {
    let f = file(0);
    let split = |b, g| Split::new([("blue", b), ("green", g)]).unwrap();
    let up = |_: &str| true;
    let route_split = |o: &Overrides| crate::control::undo::split_of(o, &f, "app").unwrap();
    let undo_app = Change::Undo {
        target: UndoTarget::Route("app".into()),
    };
    let nothing = apply(&undo_app, &Overrides::default(), &f, &up).unwrap_err();
    assert!(
        matches!(nothing, ControlError::NothingToUndo(_)),
        "{nothing}"
    );
    let set = |b, g| Change::SetSplit {
        route: "app".into(),
        split: split(b, g),
        force: false,
    };
    let o = apply(&set(50, 50), &Overrides::default(), &f, &up).unwrap();
    let o = apply(&set(0, 100), &o, &f, &up).unwrap();
    let o = apply(&undo_app, &o, &f, &up).unwrap();
    assert_eq!(route_split(&o), split(50, 50));
    let o = apply(&undo_app, &o, &f, &up).unwrap();
    assert_eq!(route_split(&o), split(0, 100));
    // By pool: green's share moved in app's last change.
    let by_green = Change::Undo {
        target: UndoTarget::Pool("green".into()),
    };
    let o = apply(&by_green, &o, &f, &up).unwrap();
    assert_eq!(route_split(&o), split(50, 50));
    // Setting the split it already has is no change to undo.
    let same = apply(&set(1, 1), &Overrides::default(), &f, &up).unwrap();
    let same = apply(&set(50, 50), &same, &f, &up).unwrap();
    assert_eq!(same.undo["app"].after, split(1, 1));
}
