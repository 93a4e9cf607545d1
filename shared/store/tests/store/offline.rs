use meerkat_auth::Credentials;
use meerkat_store::StoreError;

use crate::helpers::fresh_store;

#[tokio::test]
async fn store_limit_order_and_delete() {
    let store = fresh_store().await;
    for u in ["alice", "bob"] {
        store
            .create_account(u, &Credentials::derive("p", 16).unwrap())
            .await
            .unwrap();
    }
    for i in 0..3 {
        store
            .store_offline("alice", &format!("<message id='{i}'/>"), 3)
            .await
            .unwrap();
    }
    assert!(matches!(
        store.store_offline("alice", "<message id='3'/>", 3).await,
        Err(StoreError::Full)
    ));
    store
        .store_offline("bob", "<message id='b'/>", 3)
        .await
        .unwrap();

    let msgs = store.offline_messages("alice").await.unwrap();
    let stanzas: Vec<_> = msgs.iter().map(|m| m.stanza.as_str()).collect();
    assert_eq!(
        stanzas,
        [
            "<message id='0'/>",
            "<message id='1'/>",
            "<message id='2'/>"
        ]
    );
    assert!(msgs
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].stored_at <= w[1].stored_at));

    // Bob's id is ignored when deleting Alice's messages.
    let bob_id = store.offline_messages("bob").await.unwrap()[0].id;
    store
        .delete_offline("alice", &[msgs[0].id, msgs[2].id, bob_id])
        .await
        .unwrap();
    let left: Vec<_> = store
        .offline_messages("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.stanza)
        .collect();
    assert_eq!(left, ["<message id='1'/>"]);
    assert_eq!(store.offline_messages("bob").await.unwrap().len(), 1);
    store.delete_offline("alice", &[]).await.unwrap();

    // Room again after delivery.
    store
        .store_offline("alice", "<message id='4'/>", 2)
        .await
        .unwrap();
    assert!(matches!(
        store.store_offline("alice", "<message id='5'/>", 2).await,
        Err(StoreError::Full)
    ));
    assert!(matches!(
        store.store_offline("ghost", "<message/>", 2).await,
        Err(StoreError::NoSuchAccount)
    ));
}

#[tokio::test]
async fn concurrent_stores_respect_the_bound() {
    let store = fresh_store().await;
    store
        .create_account("alice", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.store_offline("alice", &format!("<message id='{i}'/>"), 5)
                    .await
            })
        })
        .collect();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => {}
            Err(StoreError::Full) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(full, 3);
    assert_eq!(store.offline_messages("alice").await.unwrap().len(), 5);
}

/// A message stored under a key (the routed envelope) is stored once: again while it waits,
/// and again after it was delivered and deleted, nothing is added; another key is another
/// message.
#[tokio::test]
async fn a_keyed_message_is_stored_once_even_after_its_delivery() {
    let store = fresh_store().await;
    store
        .create_account("alice", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        store
            .store_offline_keyed("alice", "<message id='k'/>", 10, Some("env-1"))
            .await
            .unwrap();
    }
    let stored = store.offline_messages("alice").await.unwrap();
    assert_eq!(stored.len(), 1);
    store
        .delete_offline("alice", &[stored[0].id])
        .await
        .unwrap();
    store
        .store_offline_keyed("alice", "<message id='k'/>", 10, Some("env-1"))
        .await
        .unwrap();
    assert!(store.offline_messages("alice").await.unwrap().is_empty());
    store
        .store_offline_keyed("alice", "<message id='k'/>", 10, Some("env-2"))
        .await
        .unwrap();
    store
        .store_offline_keyed("alice", "<message id='k'/>", 10, None)
        .await
        .unwrap();
    assert_eq!(store.offline_messages("alice").await.unwrap().len(), 2);
}
