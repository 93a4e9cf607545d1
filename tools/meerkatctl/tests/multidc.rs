//! `sessions` and `dc links` against two real federated DCs (`meerkat_testkit::multi`), through
//! the real meerkatctl binary.

#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use meerkat_localstack::federation::FEDERATED_EXCHANGES;
use meerkat_localstack::rabbit_api::percent_encode;
use meerkat_testkit::client::Client;
use meerkat_testkit::multi::MultiDc;
use meerkat_testkit::stack::StackOptions;

async fn ctl(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meerkatctl"))
            .args(&args)
            .env_remove("MEERKAT_ROUTER_ADMIN_URL")
            .env_remove("MEERKAT_MANAGEMENT_URL")
            .env_remove("MEERKAT_ENDPOINTS")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An endpoints file shaped like the one `cargo xtask up` writes, for the DCs of `m`.
fn endpoints_file(m: &MultiDc) -> tempfile_path::TempPath {
    let dcs: Vec<serde_json::Value> = m
        .brokers
        .iter()
        .zip(&m.dcs)
        .map(|(b, dc)| {
            serde_json::json!({
                "dc": b.dc,
                "c2s": dc.c2s.to_string(),
                "routers": dc.routers.iter().map(|r| serde_json::json!({
                    "instance_id": r.name,
                    "admin_url": format!("http://{}", r.admin),
                })).collect::<Vec<_>>(),
                "health": dc.health.iter().map(|h| serde_json::json!({
                    "instance_id": h.name,
                    "admin_url": format!("http://{}", h.admin),
                })).collect::<Vec<_>>(),
                "amqp_url": b.vhost.amqp_url,
                "management_url": b.vhost.mgmt_url,
                "management_user": "guest",
                "management_password": "guest",
                "database_url": dc.database_url,
            })
        })
        .collect();
    let path = std::env::temp_dir().join(format!("endpoints-{}.json", uuid_like()));
    std::fs::write(&path, serde_json::json!({ "dcs": dcs }).to_string()).unwrap();
    tempfile_path::TempPath(path)
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

mod tempfile_path {
    /// Removed when dropped.
    pub struct TempPath(pub std::path::PathBuf);

    impl TempPath {
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// A port nothing listens on (bound, then released).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/", l.local_addr().unwrap())
}

#[tokio::test]
async fn sessions_shows_every_dcs_sessions_grouped_by_dc() {
    let m = MultiDc::start(2, StackOptions::default()).await.unwrap();
    let name = |p: &str| format!("{p}{}", &uuid_like()[..6]);
    let (a, b) = (name("alice"), name("bob"));
    let mut alice = Client::register_and_login(&m.dc(1).client(), &a, "pw-secret", Some("phone"))
        .await
        .unwrap();
    alice.send_presence().await.unwrap();
    // Bob never sends presence: unavailable.
    let bob = Client::register_and_login(&m.dc(2).client(), &b, "pw-secret", Some("desk"))
        .await
        .unwrap();
    m.wait_directory_sessions(2, Duration::from_secs(20))
        .await
        .unwrap();
    let (aj, bj) = (alice.jid().to_owned(), bob.jid().to_owned());

    // Asked at DC 1, by the router's admin URL: bob's session at DC 2 shows under dc2.
    let router1 = format!("http://{}", m.dc(1).routers[0].admin);
    let out = ctl(&["sessions", "--router", &router1]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("directory of dc1 "), "{text}");
    assert!(text.contains("2 sessions"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let dc2 = lines
        .iter()
        .position(|l| *l == "dc2: 1 session")
        .expect(&text);
    let bob_line = lines[dc2 + 1];
    assert!(
        bob_line.contains(&bj) && bob_line.contains(" dc2 "),
        "{text}"
    );
    assert!(bob_line.trim_end().ends_with(" unavailable"), "{text}");
    let dc1 = lines
        .iter()
        .position(|l| *l == "dc1: 1 session")
        .expect(&text);
    let alice_line = lines[dc1 + 1];
    assert!(
        alice_line.contains(&aj) && alice_line.contains(" dc1 "),
        "{text}"
    );
    assert!(alice_line.trim_end().ends_with(" available"), "{text}");

    // Asked at DC 2 through the endpoints file: the same two sessions.
    let file = endpoints_file(&m);
    let out = ctl(&["--endpoints", file.as_str(), "sessions", "--dc", "dc2"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("directory of dc2 "), "{text}");
    assert!(text.contains(&aj) && text.contains(&bj), "{text}");

    // Unknown DC, unreachable router: one line on stderr, a failure.
    let out = ctl(&["--endpoints", file.as_str(), "sessions", "--dc", "dc7"]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no DC dc7"), "{}", stderr(&out));
    let out = ctl(&["sessions", "--router", &dead_url()]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the router"),
        "{}",
        stderr(&out)
    );
    m.stop().await.unwrap();
}

#[tokio::test]
async fn dc_links_shows_each_link_and_the_error_of_a_broken_one() {
    let m = MultiDc::start(2, StackOptions::default()).await.unwrap();
    let file = endpoints_file(&m);

    let out = ctl(&["--endpoints", file.as_str(), "dc", "links", "--dc", "dc1"]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("upstream"), "{text}");
    // DCs sharing a broker name their upstreams after their vhost too.
    let upstream = format!("meerkat-dc2@{}", m.brokers[0].vhost.name);
    for (exchange, _) in FEDERATED_EXCHANGES {
        assert!(
            lines.iter().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols == [upstream.as_str(), exchange, "running"]
            }),
            "{exchange}: {text}"
        );
    }

    // An upstream to a DC that does not answer: its links fail and say why.
    let b = &m.brokers[0];
    let url = format!(
        "{}api/parameters/federation-upstream/{}/meerkat-dc9",
        b.vhost.mgmt_url,
        percent_encode(&b.vhost.name)
    );
    let body = serde_json::json!({ "value": {
        "uri": dead_url().replace("http://", "amqp://"),
        "reconnect-delay": 1,
    }});
    // A busy broker answers a runtime-parameter PUT with 500 now and then: ask again.
    let mut attempts = 0;
    let status = loop {
        attempts += 1;
        let resp = reqwest::Client::new()
            .put(&url)
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
            .await
            .unwrap();
        if !resp.status().is_server_error() || attempts == 10 {
            break resp.status();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(status.is_success(), "{status}");
    let mgmt = b.vhost.mgmt_url.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let out = ctl(&[
            "dc",
            "links",
            "--management-url",
            &mgmt,
            "--vhost",
            &b.vhost.name,
        ])
        .await;
        let text = stdout(&out);
        let broken = text
            .lines()
            .filter(|l| l.starts_with("meerkat-dc9 ") && l.contains(" error "))
            .count();
        if broken == FEDERATED_EXCHANGES.len() {
            assert!(!out.status.success(), "a broken link must fail the command");
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text}{}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The healthy links still run, and a broken one carries its error.
    assert_eq!(
        text.matches(" running").count(),
        FEDERATED_EXCHANGES.len(),
        "{text}"
    );
    let broken = text
        .lines()
        .find(|l| l.starts_with("meerkat-dc9 "))
        .unwrap();
    assert!(
        broken.split_whitespace().count() > 3,
        "no error shown: {text}"
    );

    // No management API there: one line, a failure.
    let out = ctl(&["dc", "links", "--management-url", &dead_url()]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is the broker up?"),
        "{}",
        stderr(&out)
    );
    m.stop().await.unwrap();
}

#[tokio::test]
async fn dc_replication_shows_what_each_dc_applied_of_the_other() {
    let m = MultiDc::start(2, StackOptions::default()).await.unwrap();
    let file = endpoints_file(&m);
    let name = format!("carol{}", &uuid_like()[..6]);
    Client::register_account(&m.dc(1).client(), &name, "pw-secret")
        .await
        .unwrap();
    // DC 2 applies DC 1's registration, then both report: the dc1 row at DC 2 shows it
    // applied and nothing behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let out = ctl(&[
            "--endpoints",
            file.as_str(),
            "dc",
            "replication",
            "--dc",
            "dc2",
        ])
        .await;
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let text = stdout(&out);
        let row: Vec<String> = text
            .lines()
            .find(|l| l.starts_with("dc1 "))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        if row.len() > 3 && row[1] != "-" && row[1] != "0" && row[3] == "0" {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never caught up: {text}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(text.starts_with("dc2  epoch "), "{text}");
    // Asked at DC 1: its own outbox holds the registration.
    let out = ctl(&[
        "--endpoints",
        file.as_str(),
        "dc",
        "replication",
        "--dc",
        "dc1",
    ])
    .await;
    let first = stdout(&out);
    let head: i64 = first
        .split("outbox head ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(head >= 1, "{first}");
    // No database there: one line, a failure.
    let out = ctl(&[
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
        "dc",
        "replication",
    ])
    .await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    m.stop().await.unwrap();
}

#[tokio::test]
async fn dc_status_shows_each_dc_and_fails_when_one_is_down() {
    let mut m = MultiDc::start(2, StackOptions::default()).await.unwrap();
    let file = endpoints_file(&m);
    // DC 2 as DC 1's health service sees it, once its first heartbeat is in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let out = ctl(&["--endpoints", file.as_str(), "dc", "status", "--dc", "dc1"]).await;
        let text = stdout(&out);
        let up = text.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[..2] == ["dc2", "up"] && cols[2] != "-"
        });
        if up {
            assert!(out.status.success(), "{text}{}", stderr(&out));
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text}{}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(text.starts_with("dc1  dc1-health  epoch "), "{text}");
    assert!(text.contains("\npeer  state  epoch"), "{text}");
    // Its gateway, and its broker's links (all running).
    assert!(text.lines().any(|l| l.starts_with("dc1-gw1-")), "{text}");
    let upstream = format!("meerkat-dc2@{}", m.brokers[0].vhost.name);
    for (exchange, _) in FEDERATED_EXCHANGES {
        assert!(
            text.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols == [upstream.as_str(), exchange, "running"]
            }),
            "{exchange}: {text}"
        );
    }

    // DC 2's heartbeats stop: down, and the command fails.
    m.dc_mut(2).kill_health();
    let health1 = format!("http://{}", m.dc(1).health[0].admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = ctl(&["dc", "status", "--health", &health1]).await;
        let text = stdout(&out);
        if text
            .lines()
            .any(|l| l.starts_with("dc2 ") && l.contains(" down "))
        {
            assert!(
                !out.status.success(),
                "a DC down must fail the command: {text}"
            );
            break;
        }
        assert!(out.status.success() || text.contains(" suspect "), "{text}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text}{}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // No health service there: one line, a failure.
    let out = ctl(&["dc", "status", "--health", &dead_url()]).await;
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the health service"),
        "{}",
        stderr(&out)
    );
    m.stop().await.unwrap();
}
