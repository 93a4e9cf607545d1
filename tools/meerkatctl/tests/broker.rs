//! `broker setup`, the way docker compose runs it (once per DC, peers from `MEERKAT_PEERS`),
//! against the test harness's RabbitMQ with one vhost per DC: the definitions load and the
//! federation links of the mesh run.

#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use meerkat_localstack::federation::{self, FederatedDc, RETURNED_EXCHANGE};
use meerkat_localstack::rabbit_api::percent_encode;
use meerkat_testkit::Vhost;

async fn setup(dc: &str, vhost: &Vhost, peers: &str) -> Output {
    let args = vec![
        "broker".to_string(),
        "setup".into(),
        "--management-url".into(),
        vhost.mgmt_url.clone(),
        "--vhost".into(),
        vhost.name.clone(),
        "--wait-secs".into(),
        "10".into(),
    ];
    let (dc, peers) = (dc.to_owned(), peers.to_owned());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meerkatctl"))
            .args(&args)
            // As compose passes them.
            .env("MEERKAT_DC", dc)
            .env("MEERKAT_PEERS", peers)
            .env("MEERKAT_MANAGEMENT_USER", "guest")
            .env("MEERKAT_MANAGEMENT_PASSWORD", "guest")
            // The broker is shared with every other test: its link user keeps the password
            // they all use.
            .env(
                "MEERKAT_LINK_PASSWORD",
                federation::LinkUser::local().password,
            )
            .env_remove("MEERKAT_MANAGEMENT_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn get(vhost: &Vhost, path: &str) -> serde_json::Value {
    let url = format!("{}api/{path}", vhost.mgmt_url);
    let resp = reqwest::Client::new()
        .get(&url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test]
async fn setup_per_dc_federates_the_mesh() {
    let infra = meerkat_testkit::infra().await.unwrap();
    let v1 = infra.fresh_vhost().await.unwrap();
    let v2 = infra.fresh_vhost().await.unwrap();
    // Each DC knows the other by its AMQP URI, credentials included, as in compose.
    let o1 = setup("dc1", &v1, &format!("dc2={}", v2.amqp_url)).await;
    let o2 = setup("dc2", &v2, &format!("dc1={}", v1.amqp_url)).await;
    for o in [&o1, &o2] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = String::from_utf8_lossy(&o1.stdout);
    assert!(out.contains("dc1: federating from dc2"), "{out}");
    assert!(!out.contains("guest:guest"), "credentials printed: {out}");

    let feds = [
        FederatedDc::new("dc1", &v1.mgmt_url, &v1.name, &v1.amqp_url),
        FederatedDc::new("dc2", &v2.mgmt_url, &v2.name, &v2.amqp_url),
    ];
    federation::wait_links_running(&feds, Duration::from_secs(30))
        .await
        .unwrap();

    // The rest of the definitions, on each DC.
    for v in [&v1, &v2] {
        let vh = percent_encode(&v.name);
        let policies = get(v, &format!("policies/{vh}")).await;
        let mut names: Vec<&str> = policies
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "meerkat-backlog-health",
                "meerkat-backlog-replication",
                "meerkat-backlog-stanzas",
                "meerkat-federate-meerkat.inter.control",
                "meerkat-federate-meerkat.inter.data",
                "meerkat-federate-meerkat.inter.health",
                "meerkat-federate-meerkat.inter.sessions",
                "meerkat-federate-meerkat.inter.stanzas",
            ]
        );
        let queues = get(v, &format!("queues/{vh}")).await;
        assert!(
            queues
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"].as_str().unwrap().starts_with(RETURNED_EXCHANGE)),
            "{queues}"
        );
    }

    // Running it again (compose does on every `up`) changes nothing and keeps the links.
    let again = setup("dc1", &v1, &format!("dc2={}", v2.amqp_url)).await;
    assert!(again.status.success());
    federation::wait_links_running(&feds, Duration::from_secs(30))
        .await
        .unwrap();
    let links = federation::link_status(&feds[0]).await.unwrap();
    assert_eq!(
        links.len(),
        federation::FEDERATED_EXCHANGES.len(),
        "{links:?}"
    );
}

#[tokio::test]
async fn bad_peers_fail_in_one_line() {
    let infra = meerkat_testkit::infra().await.unwrap();
    let v = infra.fresh_vhost().await.unwrap();
    let o = setup("dc1", &v, "dc2").await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("peers"), "{err}");
    let o = setup("dc1", &v, &format!("dc1={}", v.amqp_url)).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("this DC itself"));
}
