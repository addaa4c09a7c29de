//! A fleet: several cutover processes sharing their runtime state through
//! a real etcd (docs/fleet.md).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use cutover::cluster::etcd::pb::authpb;
use cutover::cluster::etcd::pb::etcdserverpb::{self as rpc, auth_client::AuthClient};

use crate::process::{Process, admin_addr_of};
use crate::support::etcd::Etcd;
use crate::support::*;

/// One instance of the fleet: the process and its admin base URL.
struct Member {
    process: Process,
    admin: String,
}

impl Member {
    fn start(config: &str) -> Member {
        Self::start_in(config, tempfile::tempdir().unwrap())
    }

    fn start_in(config: &str, dir: tempfile::TempDir) -> Member {
        let process = Process::start_in(config, dir);
        let admin = format!("http://{}", admin_addr_of(&process));
        Member { process, admin }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.process.addr)
    }

    async fn status(&self) -> Value {
        admin_call("GET", &format!("{}/api/v1/status", self.admin), None, None)
            .await
            .1
    }

    async fn split(&self, split: Value) -> (u16, Value) {
        admin_call(
            "PUT",
            &format!("{}/api/v1/routes/app/split", self.admin),
            Some(split),
            None,
        )
        .await
    }

    async fn connected(&self) -> bool {
        self.status().await["cluster"]["connected"] == true
    }
}

fn fleet_config(etcd: &Etcd, instance: &str, blue: &TestUpstream, green: &TestUpstream) -> String {
    split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        &format!(
            "[cluster]\netcd = {}\nprefix = \"/cutover/test\"\ninstance = \"{instance}\"\n",
            etcd.config_list()
        ),
    )
}

/// A one-member etcd, instances `a` and `b` following it, and the blue
/// and green upstreams behind them; `None` (SKIPPED) without etcd.
struct Pair {
    blue: TestUpstream,
    green: TestUpstream,
    etcd: Etcd,
    a: Member,
    b: Member,
}

async fn pair() -> Option<Pair> {
    if !tool_present("etcd", "etcd-server") {
        return None;
    }
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let etcd = Etcd::start(1).await;
    let a = Member::start(&fleet_config(&etcd, "a", &blue, &green));
    let b = Member::start(&fleet_config(&etcd, "b", &blue, &green));
    all_connected(&[&a, &b]).await;
    Some(Pair {
        blue,
        green,
        etcd,
        a,
        b,
    })
}

async fn all_connected(members: &[&Member]) {
    for m in members {
        wait_until("the instance follows the fleet's state", || m.connected()).await;
    }
}

/// The pool a fresh request through `member` lands on.
async fn served_by(member: &Member) -> String {
    let (status, body) = get(&fresh_connection_client(), &member.url()).await;
    assert_eq!(status, 200, "{body}");
    body.trim().to_string()
}

/// A 3-member etcd and three instances under load: 20 splits, each sent
/// to instance A, are served by B and C within 1 s of A's answer (the
/// figure is printed); no request fails. One etcd member killed midway
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_through_one_instance_is_served_by_every_instance() {
    if !tool_present("etcd", "etcd-server") {
        return;
    }
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let mut etcd = Etcd::start(3).await;
    let a = Member::start(&fleet_config(&etcd, "a", &blue, &green));
    let b = Member::start(&fleet_config(&etcd, "b", &blue, &green));
    let c = Member::start(&fleet_config(&etcd, "c", &blue, &green));
    all_connected(&[&a, &b, &c]).await;
    let loads: Vec<Load> = [&a, &b, &c].iter().map(|m| load(m.url(), 3)).collect();

    let mut lags = Vec::new();
    for round in 0..20 {
        if round == 10 {
            // Quorum stays: nothing is noticed.
            etcd.kill(2);
        }
        let to = if round % 2 == 0 { "green" } else { "blue" };
        let split = if to == "green" {
            json!({"blue": 0, "green": 100})
        } else {
            json!({"blue": 100, "green": 0})
        };
        let (status, body) = a.split(split).await;
        assert_eq!(status, 200, "round {round}: {body}");
        let acknowledged = Instant::now();
        for member in [&b, &c] {
            wait_until("the other instances serve the new split", || async {
                served_by(member).await == to
            })
            .await;
            lags.push(acknowledged.elapsed());
        }
    }
    for run in loads {
        let (sent, failed) = run.finish().await;
        assert_eq!(failed, 0, "{failed} of {sent} requests failed");
        assert!(sent > 0);
    }
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100 - 1];
    let max = lags[lags.len() - 1];
    println!(
        "fleet propagation over {} samples: p50 {:?}, p99 {p99:?}, max {max:?}",
        lags.len(),
        lags[lags.len() / 2]
    );
    assert!(max < Duration::from_secs(1), "slowest propagation {max:?}");
    // Every instance holds the same state at the same revision.
    let revisions: Vec<Value> = [&a, &b, &c]
        .iter()
        .map(|m| async { m.status().await["cluster"]["revision"].clone() })
        .collect::<futures_util::future::JoinAll<_>>()
        .await;
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");
}

/// Changes sent at once to two instances: each is either made (on the
/// state the other left) or refused with 409, never lost silently, and
/// every instance ends with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_two_instances_agree() {
    let Some(Pair {
        blue: _blue,
        green: _green,
        etcd: _etcd,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    for round in 0..10u32 {
        let (ra, rb) = tokio::join!(
            a.split(json!({"blue": 90 - round, "green": 10 + round})),
            b.split(json!({"blue": 10 + round, "green": 90 - round})),
        );
        for (status, body) in [&ra, &rb] {
            assert!(*status == 200 || *status == 409, "{status}: {body}");
        }
        assert!(ra.0 == 200 || rb.0 == 200, "both refused: {ra:?} {rb:?}");
    }
    wait_until("both instances hold the same state", || async {
        let (sa, sb) = (a.status().await, b.status().await);
        sa["cluster"]["revision"] == sb["cluster"]["revision"]
            && sa["routes"][0]["split"] == sb["routes"][0]["split"]
    })
    .await;

    // The fleet view lists both, from either; so does ctl status --fleet.
    let (status, fleet) = admin_call("GET", &format!("{}/api/v1/fleet", b.admin), None, None).await;
    assert_eq!(status, 200, "{fleet}");
    let mut names: Vec<&str> = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"], "{fleet}");
    assert_eq!(fleet["this"]["instance"], "b");
    // SPEC.md's fields: revision and connected, and each instance's heartbeat.
    assert_eq!(fleet["connected"], true, "{fleet}");
    assert_eq!(fleet["revision"], fleet["this"]["revision"], "{fleet}");
    for instance in fleet["instances"].as_array().unwrap() {
        assert!(instance["heartbeat"].is_string(), "{fleet}");
        assert_eq!(instance["connected"], true, "{fleet}");
    }
    let (code, text, err) = ctl(&a.admin, &["status", "--fleet"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.contains("this instance a: connected") && text.contains("INSTANCE"),
        "{text}"
    );
}

/// Without `[cluster]`, the fleet view says there is no fleet.
#[tokio::test]
async fn without_a_cluster_there_is_no_fleet_view() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let (status, body) = admin_call("GET", &proxy.admin_url("/api/v1/fleet"), None, None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["detail"]["code"], "no_fleet");
    proxy.stop().await;
}

/// etcd down: every instance keeps serving its last state, changes are
/// refused with 503 (never made on one instance only), the metric and
/// readiness say so, and an instance restarted meanwhile serves the last
/// state from its state directory. etcd back: changes work again, and an
/// instance that missed one while it was stopped catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_instances_serve_the_last_state_and_refuse_changes() {
    if !tool_present("etcd", "etcd-server") {
        return;
    }
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let mut etcd = Etcd::start(1).await;
    let config_a = fleet_config(&etcd, "a", &blue, &green);
    let config_b = fleet_config(&etcd, "b", &blue, &green);
    let a = Member::start(&config_a);
    let b = Member::start(&config_b);
    all_connected(&[&a, &b]).await;
    let (status, body) = a.split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 200, "{body}");
    wait_until("b serves green", || async {
        served_by(&b).await == "green"
    })
    .await;

    etcd.kill(0);
    wait_until("a notices etcd is gone", || async { !a.connected().await }).await;
    assert_eq!(gauge(&a.admin, "cutover_cluster_connected").await, 0.0);
    let (_, ready) = get(&http1_client(), &format!("{}/readyz", a.admin)).await;
    assert!(ready.contains("etcd unreachable"), "{ready}");
    let (status, body) = a.split(json!({"blue": 100, "green": 0})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("etcd"),
        "{body}"
    );
    // The cause in an operator's words, not tonic's nested debug output.
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Connection refused") && !error.contains("tonic::"),
        "{body}"
    );
    assert_eq!(served_by(&a).await, "green");
    // The fleet view still answers, saying this instance is not connected.
    let (code, out, err) = ctl(&a.admin, &["status", "--fleet"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("NOT CONNECTED") && out.contains("etcd unreachable"),
        "{out}"
    );

    // b restarts while etcd is down: it serves the last state it applied.
    let dir = b.process.into_dir();
    let b = Member::start_in(&config_b, dir);
    assert_eq!(served_by(&b).await, "green");
    assert!(!b.connected().await);

    // c has never seen the fleet; stop b to let it miss a change.
    etcd.restart(0).await;
    all_connected(&[&a, &b]).await;
    let dir = b.process.into_dir();
    let (status, body) = a.split(json!({"blue": 100, "green": 0})).await;
    assert_eq!(status, 200, "{body}");
    let b = Member::start_in(&config_b, dir);
    wait_until("b catches up after its restart", || async {
        served_by(&b).await == "blue"
    })
    .await;
    let revision = gauge(&a.admin, "cutover_cluster_revision").await;
    wait_until("b reaches a's revision", || async {
        gauge(&b.admin, "cutover_cluster_revision").await == revision
    })
    .await;
}

async fn start_rollout(member: &Member, body: Value) -> (u16, Value) {
    admin_call(
        "POST",
        &format!("{}/api/v1/routes/app/rollout", member.admin),
        Some(body),
        None,
    )
    .await
}

/// The instance that drives the fleet's rollouts, once one does.
async fn driver<'a>(members: &[&'a Member]) -> &'a Member {
    let started = Instant::now();
    loop {
        for m in members {
            if m.status().await["cluster"]["drives_rollouts"] == true {
                return m;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no instance drives the rollout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rollout_state(member: &Member) -> Value {
    member.status().await["routes"][0]["rollout"]["state"].clone()
}

/// A canary whose errors are all seen by another instance than the one
/// driving the rollout: the driver's own traffic is nil, so only the
/// counters the fleet publishes can show them — and the rollout is
/// rolled back on every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_on_the_fleet_s_traffic() {
    let Some(Pair {
        blue: _blue,
        green,
        etcd: _etcd,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    green.fail_every(5);
    let (status, body) = start_rollout(
        &a,
        json!({"to": "green", "steps": [30, 100], "interval": "60s",
               "analysis": {"check_every": "500ms", "min_requests": 30, "failure_limit": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let driving = driver(&[&a, &b]).await;
    let other = if std::ptr::eq(driving, &a) { &b } else { &a };
    // Traffic only through the instance that does not drive.
    let run = load(other.url(), 4);
    wait_until("the fleet rolls the canary back", || async {
        rollout_state(driving).await == "rolled_back"
    })
    .await;
    let rollout = driving.status().await["routes"][0]["rollout"].clone();
    assert!(
        rollout["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("error rate"),
        "{rollout:#}"
    );
    wait_until("the other instance has the rollback too", || async {
        rollout_state(other).await == "rolled_back"
    })
    .await;
    run.finish().await;
}

/// The driver killed mid-rollout: another instance takes the lease-guarded
/// driver key once the dead one's lease ends and finishes the rollout from
/// the step it had reached, under load, without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_resumes_a_rollout_whose_driver_died() {
    let Some(Pair {
        blue: _blue,
        green: _green,
        etcd: _etcd,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (status, body) = start_rollout(
        &a,
        json!({"to": "green", "steps": [20, 50, 100], "interval": "1500ms",
               "analysis": {"check_every": "300ms", "min_requests": 1}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let driving = driver(&[&a, &b]).await;
    let (dead, survivor) = if std::ptr::eq(driving, &a) {
        (a, b)
    } else {
        (b, a)
    };
    let run = load(survivor.url(), 4);
    wait_until("the rollout reaches its second step", || async {
        survivor.status().await["routes"][0]["rollout"]["step"]
            .as_u64()
            .is_some_and(|s| s >= 2)
    })
    .await;
    let step_at_death = survivor.status().await["routes"][0]["rollout"]["step"].clone();
    drop(dead);
    wait_until(
        "the survivor drives and the rollout is promoted",
        || async { rollout_state(&survivor).await == "promoted" },
    )
    .await;
    assert_eq!(survivor.status().await["cluster"]["drives_rollouts"], true);
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert!(
        step_at_death.as_u64().is_some_and(|s| s < 3),
        "{step_at_death}"
    );
    assert_eq!(served_by(&survivor).await, "green");
}

/// `GET /api/v1/audit` on any instance shows the changes made through
/// every instance, each with the instance it went through; a drain ordered
/// on one instance stays `draining` while another instance still has a
/// request in flight on the upstream, then ends `drained`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_drains_span_the_fleet() {
    let Some(Pair {
        blue,
        green: _green,
        etcd: _etcd,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (status, body) = a.split(json!({"blue": 90, "green": 10})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = b.split(json!({"blue": 100, "green": 0})).await;
    assert_eq!(status, 200, "{body}");
    wait_until("b's audit shows both instances' changes", || async {
        let (_, audit) = admin_call("GET", &format!("{}/api/v1/audit", b.admin), None, None).await;
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        let by = |instance: &str| {
            entries
                .iter()
                .any(|e| e["instance"] == instance && e["action"] == "set_split")
        };
        audit["source"] == "fleet" && by("a") && by("b")
    })
    .await;

    // A request in flight on blue through b, then a drain through a.
    let slow_url = format!("http://{}/slow?ms=3000", b.process.addr);
    let slow = tokio::spawn(async move { get(&fresh_connection_client(), &slow_url).await });
    wait_until("b has the request in flight", || async {
        b.status().await["pools"][0]["upstreams"][0]["in_flight"] == 1
    })
    .await;
    let drain_url = format!(
        "{}/api/v1/pools/blue/upstreams/{}/drain",
        a.admin, blue.addr
    );
    let (status, body) =
        admin_call("POST", &drain_url, Some(json!({"timeout": "30s"})), None).await;
    assert!(status == 200 || status == 202, "{status}: {body}");
    wait_until("a sees b's request in the fleet's in-flight", || async {
        let u = a.status().await["pools"][0]["upstreams"][0].clone();
        u["fleet_in_flight"] == 1 && u["state"] == "draining" && u["in_flight"] == 0
    })
    .await;
    assert_eq!(slow.await.unwrap().0, 200);
    wait_until("drained once no instance has one in flight", || async {
        a.status().await["pools"][0]["upstreams"][0]["state"] == "drained"
    })
    .await;
}

/// A binary upgrade of one instance in a fleet: the new process follows
/// the fleet from the state directory it inherits, changes go on working
/// through it, and the fleet view shows its pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_keeps_the_instance_in_the_fleet() {
    let Some(Pair {
        blue: _blue,
        green: _green,
        etcd: _etcd,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    // HTTP/2 load through the GOAWAY-aware client, as in the upgrade
    // tests: hyper's client fails a request it issues as a graceful
    // GOAWAY arrives (support/h2_client.rs).
    let run = load_mixed(a.url(), 4);
    let (status, body) =
        admin_call("POST", &format!("{}/api/v1/upgrade", a.admin), None, None).await;
    assert_eq!(status, 200, "{body}");
    let new_pid = body["new_pid"].clone();
    // The new process is not the test's child: killed when the test ends.
    let _new = crate::upgrade::Pids(vec![
        u32::try_from(new_pid.as_u64().expect("new pid")).expect("pid"),
    ]);
    wait_until("the new process follows the fleet", || async {
        let s = a.status().await;
        s["pid"] == new_pid && s["cluster"]["connected"] == true
    })
    .await;
    let (status, body) = a.split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 200, "{body}");
    wait_until(
        "b serves the change made through the new process",
        || async { served_by(&b).await == "green" },
    )
    .await;
    wait_until("the fleet view shows the new pid", || async {
        let (_, fleet) = admin_call("GET", &format!("{}/api/v1/fleet", b.admin), None, None).await;
        fleet["instances"]
            .as_array()
            .is_some_and(|l| l.iter().any(|i| i["name"] == "a" && i["pid"] == new_pid))
    })
    .await;
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed across the upgrade");
}

/// etcd over TLS with client certificates: instances with `etcd_ca`,
/// `etcd_cert` and `etcd_key` share changes; one without a client
/// certificate is never connected and refuses changes (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    if !tool_present("etcd", "etcd-server") {
        return;
    }
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let ca = crate::tls::Ca::new();
    let certs = tempfile::tempdir().unwrap();
    ca.issue(certs.path(), "localhost");
    ca.issue(certs.path(), "cutover-client");
    ca.write_ca(&certs.path().join("ca.pem"));
    let etcd = Etcd::start_tls(certs.path()).await;
    let d = certs.path().display();
    let tls = format!(
        "etcd_ca = \"{d}/ca.pem\"\netcd_cert = \"{d}/cutover-client.pem\"\netcd_key = \"{d}/cutover-client.key\"\n"
    );
    let with_tls = |name: &str| {
        fleet_config(&etcd, name, &blue, &green).replace(
            "prefix = \"/cutover/test\"\n",
            &format!("prefix = \"/cutover/test\"\n{tls}"),
        )
    };
    let a = Member::start(&with_tls("a"));
    let b = Member::start(&with_tls("b"));
    all_connected(&[&a, &b]).await;
    let (status, body) = a.split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 200, "{body}");
    wait_until("b serves green", || async {
        served_by(&b).await == "green"
    })
    .await;

    // Only the CA, no client certificate: etcd refuses it.
    let no_cert = fleet_config(&etcd, "c", &blue, &green).replace(
        "prefix = \"/cutover/test\"\n",
        &format!("prefix = \"/cutover/test\"\netcd_ca = \"{d}/ca.pem\"\n"),
    );
    let c = Member::start(&no_cert);
    let (status, body) = c.split(json!({"blue": 100, "green": 0})).await;
    assert_eq!(status, 503, "{body}");
    assert!(!c.connected().await);
    assert_eq!(served_by(&c).await, "blue", "c never saw the fleet's state");
}

/// etcd with authentication: instances log in with `etcd_user` and
/// `etcd_password_file` (only on first use: one started while etcd is
/// down starts and serves, then joins); a wrong password is never
/// connected and its changes are refused (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_authentication() {
    if !tool_present("etcd", "etcd-server") {
        return;
    }
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let mut etcd = Etcd::start(1).await;
    enable_auth(&etcd).await;

    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("good"), "s3cret\n").unwrap();
    std::fs::write(secrets.path().join("bad"), "guess\n").unwrap();
    let with_password = |name: &str, file: &str| {
        fleet_config(&etcd, name, &blue, &green).replace(
            "prefix = \"/cutover/test\"\n",
            &format!(
                "prefix = \"/cutover/test\"\netcd_user = \"cutover\"\netcd_password_file = \"{}/{file}\"\n",
                secrets.path().display()
            ),
        )
    };
    let a = Member::start(&with_password("a", "good"));
    all_connected(&[&a]).await;
    let (status, body) = a.split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 200, "{body}");

    let wrong = Member::start(&with_password("w", "bad"));
    let (status, body) = wrong.split(json!({"blue": 100, "green": 0})).await;
    assert_eq!(status, 503, "{body}");
    assert!(!wrong.connected().await);

    // Started while etcd is down: it serves (its own file's state), then
    // logs in and catches up once etcd is back.
    let late_config = with_password("late", "good");
    etcd.kill(0);
    let late = Member::start(&late_config);
    assert_eq!(served_by(&late).await, "blue");
    etcd.restart(0).await;
    wait_until("the late instance catches up", || async {
        served_by(&late).await == "green"
    })
    .await;
    // `a` logged in before etcd restarted: its token died with etcd's
    // memory, and it logs in again rather than stay refused.
    all_connected(&[&a]).await;
    // (The same split each try: a retry changes nothing twice.)
    wait_until("a change through a after the restart", || async {
        a.split(json!({"blue": 100, "green": 0})).await.0 == 200
    })
    .await;
    wait_until("the late instance follows it", || async {
        served_by(&late).await == "blue"
    })
    .await;
}

/// The fleet's state deleted from etcd by hand: instances keep serving
/// what they had, and the next change writes the state again for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_deleted_from_etcd_is_written_again_by_the_next_change() {
    let Some(Pair {
        blue: _blue,
        green: _green,
        etcd,
        a,
        b,
    }) = pair().await
    else {
        return;
    };
    let (status, body) = a.split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 200, "{body}");
    wait_until("b serves green", || async {
        served_by(&b).await == "green"
    })
    .await;
    let client = etcd_client(&etcd);
    client
        .delete_range(rpc::DeleteRangeRequest {
            key: b"/cutover/test/runtime".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(served_by(&b).await, "green");
    let (status, body) = b.split(json!({"blue": 50, "green": 50})).await;
    assert_eq!(status, 200, "{body}");
    wait_until("a serves the change written after the deletion", || async {
        a.status().await["routes"][0]["split"] == json!({"blue": 50, "green": 50})
    })
    .await;
    let stored = client
        .range(rpc::RangeRequest {
            key: b"/cutover/test/runtime".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.kvs.len(), 1);
}

/// `cutover check` reads the files `[cluster]` names: a missing CA or
/// password file is an error naming it (no etcd needed).
#[test]
fn check_names_a_missing_cluster_file() {
    let config = "[cluster]\netcd = [\"https://localhost:2379\"]\nprefix = \"/cutover/test\"\netcd_ca = \"/nonexistent/etcd-ca.pem\"\netcd_user = \"cutover\"\netcd_password_file = \"/nonexistent/etcd.password\"\n";
    let out = check_config(&split_config(&[("p", 1, &[free_port()])], config), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster: /nonexistent/etcd-ca.pem: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("cluster.etcd_password_file: /nonexistent/etcd.password: "),
        "{stderr}"
    );
}

/// cutover's own etcd client, to etcd's first member.
fn etcd_client(etcd: &Etcd) -> cutover::cluster::etcd::Client {
    let how = cutover::cluster::etcd::Connect {
        timeout: Duration::from_secs(5),
        keep_alive: Duration::from_secs(1),
        tls: None,
    };
    cutover::cluster::etcd::Client::connect(&etcd.endpoints()[0], &how).unwrap()
}

/// Turns etcd's authentication on: a root user, and a user `cutover`
/// (password `s3cret`) that may read and write `/cutover/test`.
async fn enable_auth(etcd: &Etcd) {
    let channel = tonic::transport::Endpoint::from_shared(etcd.endpoints()[0].clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthClient::new(channel);
    for (user, password, role) in [("root", "root-pw", "root"), ("cutover", "s3cret", "fleet")] {
        auth.user_add(rpc::AuthUserAddRequest {
            name: user.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        if role == "fleet" {
            auth.role_add(rpc::AuthRoleAddRequest { name: role.into() })
                .await
                .unwrap();
            let prefix = b"/cutover/test".to_vec();
            auth.role_grant_permission(rpc::AuthRoleGrantPermissionRequest {
                name: role.into(),
                perm: Some(authpb::Permission {
                    perm_type: authpb::permission::Type::Readwrite.into(),
                    range_end: cutover::cluster::etcd::prefix_end(&prefix),
                    key: prefix,
                }),
            })
            .await
            .unwrap();
        }
        auth.user_grant_role(rpc::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .unwrap();
    }
    auth.auth_enable(rpc::AuthEnableRequest {}).await.unwrap();
}
