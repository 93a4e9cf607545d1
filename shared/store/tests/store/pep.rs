//! PEP (issue 17): nodes, items and verified caps — the limits the store keeps (nodes per
//! account, items per node) without writing half, and replication between real databases:
//! two publishes of one item id at two DCs during a partition converge on the later, a
//! deletion racing a publish, a full copy, and an account's deletion taking everything.

use meerkat_auth::Credentials;
use meerkat_store::{Outcome, PepChange, Store, StoreError};

use crate::replication::{dc, ship};

async fn with_dora(stores: &[&Store]) {
    let creds = Credentials::derive("p", 16).unwrap();
    stores[0].create_account("dora", &creds).await.unwrap();
    for s in &stores[1..] {
        ship(stores[0], s).await;
    }
}

fn publish(node: &str, id: &str, text: &str, max_items: u32) -> PepChange {
    PepChange::Publish {
        node: node.to_owned(),
        config: "{}".to_owned(),
        items: vec![(
            id.to_owned(),
            format!("<item xmlns='http://jabber.org/protocol/pubsub' id='{id}'><t xmlns='t'>{text}</t></item>"),
        )],
        max_items,
        max_nodes: 2,
        replace: false,
    }
}

async fn ids(s: &Store, node: &str) -> Vec<String> {
    s.pep_items("dora", node, None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[tokio::test]
async fn items_are_capped_per_node_and_nodes_per_account() {
    let a = dc("dc1").await;
    with_dora(&[&a]).await;
    for i in 0..4 {
        a.pep("dora", publish("n", &format!("i{i}"), "x", 2))
            .await
            .unwrap();
    }
    assert_eq!(ids(&a, "n").await, vec!["i2", "i3"]);
    let newest = a.pep_items("dora", "n", None, Some(1)).await.unwrap();
    assert_eq!(newest[0].id, "i3");
    a.pep("dora", publish("m", "1", "x", 2)).await.unwrap();
    assert!(matches!(
        a.pep("dora", publish("third", "1", "x", 2)).await,
        Err(StoreError::Full)
    ));
    assert_eq!(a.pep_node("dora", "third").await.unwrap(), None);
    assert!(ids(&a, "third").await.is_empty());
    assert!(matches!(
        a.pep("nobody", publish("n", "1", "x", 2)).await,
        Err(StoreError::NoSuchAccount)
    ));
    // Replaced: the node becomes exactly the items given (XEP-0411's private-storage write).
    let item = |id: &str| {
        (
            id.to_owned(),
            format!("<item xmlns='http://jabber.org/protocol/pubsub' id='{id}'/>"),
        )
    };
    let replace = PepChange::Publish {
        node: "n".into(),
        config: "{}".into(),
        items: vec![item("i3"), item("new")],
        max_items: 10,
        max_nodes: 2,
        replace: true,
    };
    a.pep("dora", replace).await.unwrap();
    assert_eq!(ids(&a, "n").await, vec!["i3", "new"]);
    let last = a.pep_last_published(&["dora".to_owned()]).await.unwrap();
    assert_eq!(last.len(), 2);
    assert!(last.iter().any(|l| l.node == "n" && l.item.contains("new")));
}

#[tokio::test]
async fn a_partition_heals_to_the_later_publish_of_an_item_and_keeps_both_ids() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_dora(&[&a, &b]).await;
    // Cut apart: both publish item "current" (dc2 later) and one id of their own.
    a.pep("dora", publish("n", "current", "from dc1", 10))
        .await
        .unwrap();
    a.pep("dora", publish("n", "only1", "x", 10)).await.unwrap();
    b.pep("dora", publish("n", "only2", "x", 10)).await.unwrap();
    b.pep("dora", publish("n", "current", "from dc2", 10))
        .await
        .unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    for s in [&a, &b] {
        let items = s.pep_items("dora", "n", None, None).await.unwrap();
        let current = items.iter().find(|i| i.id == "current").unwrap();
        assert!(current.body.contains("from dc2"), "{current:?}");
        assert_eq!(items.len(), 3);
    }
    // Retracted at dc1: gone everywhere, and an older publish cannot bring it back.
    let out = a
        .pep(
            "dora",
            PepChange::Retract {
                node: "n".into(),
                ids: vec!["current".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(out, Outcome::Existed(true));
    ship(&a, &b).await;
    assert!(!ids(&b, "n").await.contains(&"current".to_owned()));
    assert_eq!(ship(&a, &b).await, 0);
}

#[tokio::test]
async fn a_deleted_node_a_copy_caps_and_the_account_deletion() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_dora(&[&a, &b]).await;
    a.pep("dora", publish("n", "1", "x", 10)).await.unwrap();
    ship(&a, &b).await;
    // Deleted at dc1 while dc2, not knowing, publishes later: the node lives (the later
    // write), with only what was published after the deletion.
    a.pep("dora", PepChange::Delete { node: "n".into() })
        .await
        .unwrap();
    b.pep("dora", publish("n", "2", "x", 10)).await.unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    for s in [&a, &b] {
        assert!(s.pep_node("dora", "n").await.unwrap().is_some());
        assert_eq!(ids(s, "n").await, vec!["2"]);
    }

    // Caps: content-addressed, no account.
    a.put_caps("sha-1\nabc=", "f1\nf2").await.unwrap();
    ship(&a, &b).await;
    assert_eq!(
        b.caps("sha-1\nabc=").await.unwrap().as_deref(),
        Some("f1\nf2")
    );

    // A full copy carries nodes, items and caps.
    let c = dc("dc3").await;
    c.apply_copy(&a.copy_records().await.unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&c, "n").await, vec!["2"]);
    assert!(c.caps("sha-1\nabc=").await.unwrap().is_some());

    // The account goes, its PEP data with it everywhere; the caps stay.
    assert!(b.delete_account("dora").await.unwrap());
    ship(&b, &a).await;
    assert_eq!(a.pep_node("dora", "n").await.unwrap(), None);
    assert!(ids(&a, "n").await.is_empty());
    assert!(a.caps("sha-1\nabc=").await.unwrap().is_some());
}
