//! Block lists (XEP-0191): the cap, and replication between real databases — per item, the
//! later write wins, an unblock is a tombstone, a partition heals to one list, a full copy
//! carries the lists, and an account's deletion takes its list everywhere.

use meerkat_auth::Credentials;
use meerkat_store::{Store, StoreError};

use crate::replication::{dc, ship};

fn jids(list: &[&str]) -> Vec<String> {
    list.iter().map(|j| (*j).to_owned()).collect()
}

async fn with_charlie(stores: &[&Store]) {
    let creds = Credentials::derive("p", 16).unwrap();
    stores[0].create_account("charlie", &creds).await.unwrap();
    for s in &stores[1..] {
        ship(stores[0], s).await;
    }
}

#[tokio::test]
async fn a_block_past_the_cap_writes_nothing() {
    let a = dc("dc1").await;
    with_charlie(&[&a]).await;
    a.block("charlie", &jids(&["a@x", "b@x"]), 3).await.unwrap();
    // Re-blocking a listed JID adds nothing.
    a.block("charlie", &jids(&["a@x", "c@x"]), 3).await.unwrap();
    assert!(matches!(
        a.block("charlie", &jids(&["d@x", "e@x"]), 3).await,
        Err(StoreError::Full)
    ));
    assert_eq!(
        a.block_list("charlie").await.unwrap(),
        ["a@x", "b@x", "c@x"]
    );
    assert!(matches!(
        a.block("nobody", &jids(&["a@x"]), 3).await,
        Err(StoreError::NoSuchAccount)
    ));
}

#[tokio::test]
async fn a_partition_heals_to_one_list_at_both_dcs() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_charlie(&[&a, &b]).await;
    // Cut apart: dc1 blocks eve and mallory; dc2, later, unblocks eve (never listed there) and
    // blocks trent.
    a.block("charlie", &jids(&["eve@x", "mallory@x"]), 100)
        .await
        .unwrap();
    b.unblock("charlie", Some(&jids(&["eve@x"]))).await.unwrap();
    b.block("charlie", &jids(&["trent@x"]), 100).await.unwrap();
    // Healed.
    ship(&a, &b).await;
    ship(&b, &a).await;
    for s in [&a, &b] {
        assert_eq!(
            s.block_list("charlie").await.unwrap(),
            ["mallory@x", "trent@x"]
        );
    }
    // Unblock-all at dc1 while dc2 blocks someone new: what dc1 did not know survives.
    a.unblock("charlie", None).await.unwrap();
    b.block("charlie", &jids(&["victor@x"]), 100).await.unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    for s in [&a, &b] {
        assert_eq!(s.block_list("charlie").await.unwrap(), ["victor@x"]);
    }
    // Shipping again changes nothing.
    assert_eq!(ship(&a, &b).await, 0);
}

#[tokio::test]
async fn lists_travel_in_a_full_copy_and_go_with_their_account() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_charlie(&[&a, &b]).await;
    a.block("charlie", &jids(&["eve@x", "evil.example"]), 100)
        .await
        .unwrap();
    a.unblock("charlie", Some(&jids(&["eve@x"]))).await.unwrap();
    let c = dc("dc3").await;
    c.apply_copy(&a.copy_records().await.unwrap())
        .await
        .unwrap();
    assert_eq!(c.block_list("charlie").await.unwrap(), ["evil.example"]);
    // dc2, following dc1's stream, ends with the same list.
    ship(&a, &b).await;
    assert_eq!(b.block_list("charlie").await.unwrap(), ["evil.example"]);

    // Deleted at dc2: gone at dc1 too.
    assert!(b.delete_account("charlie").await.unwrap());
    ship(&b, &a).await;
    assert!(a.block_list("charlie").await.unwrap().is_empty());
    // Registered again: the old list does not come back.
    a.create_account("charlie", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    ship(&a, &b).await;
    assert!(b.block_list("charlie").await.unwrap().is_empty());
}
