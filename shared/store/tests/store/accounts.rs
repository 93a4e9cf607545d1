use meerkat_auth::Credentials;
use meerkat_store::{RosterItem, Store, StoreError, Subscription};

use crate::helpers::{fresh_database, fresh_store};

fn creds(password: &str) -> Credentials {
    Credentials::derive(password, 64).unwrap()
}

#[tokio::test]
async fn create_conflict_and_credentials_roundtrip() {
    let store = fresh_store().await;
    let c = creds("pencil");
    store.create_account("alice", &c).await.unwrap();
    assert!(matches!(
        store.create_account("alice", &creds("other")).await,
        Err(StoreError::Conflict)
    ));

    let got = store.credentials("alice").await.unwrap().unwrap();
    assert_eq!(got.sha1, c.sha1);
    assert_eq!(got.sha256, c.sha256);
    assert!(got.verify_plain("pencil"));
    assert!(store.credentials("bob").await.unwrap().is_none());

    assert!(store.account_exists("alice").await.unwrap());
    assert!(!store.account_exists("bob").await.unwrap());
    store.create_account("bob", &c).await.unwrap();
    assert_eq!(store.list_accounts().await.unwrap(), ["alice", "bob"]);
    assert_eq!(store.count_accounts().await.unwrap(), 2);
}

#[tokio::test]
async fn password_change() {
    let store = fresh_store().await;
    store.create_account("alice", &creds("old")).await.unwrap();
    assert!(store.set_credentials("alice", &creds("new")).await.unwrap());
    let got = store.credentials("alice").await.unwrap().unwrap();
    assert!(got.verify_plain("new"));
    assert!(!got.verify_plain("old"));
    assert!(!store.set_credentials("nobody", &creds("x")).await.unwrap());
}

#[tokio::test]
async fn delete_cascades() {
    let store = fresh_store().await;
    store.create_account("alice", &creds("p")).await.unwrap();
    let item = RosterItem {
        jid: "bob@example.com".into(),
        name: None,
        subscription: Subscription::Both,
        ask_out: false,
        approved: false,
        groups: vec![],
    };
    store.put_roster_item("alice", &item).await.unwrap();
    store
        .add_subscription_request("alice", "carol@example.com", "<presence/>")
        .await
        .unwrap();
    store
        .store_offline("alice", "<message/>", 10)
        .await
        .unwrap();

    assert!(store.delete_account("alice").await.unwrap());
    assert!(!store.delete_account("alice").await.unwrap());
    assert!(store.credentials("alice").await.unwrap().is_none());
    assert_eq!(store.roster("alice").await.unwrap(), (0, vec![]));
    assert!(store
        .subscription_requests("alice")
        .await
        .unwrap()
        .is_empty());
    assert!(store.offline_messages("alice").await.unwrap().is_empty());

    // A re-created account starts empty.
    store.create_account("alice", &creds("p")).await.unwrap();
    assert_eq!(store.roster("alice").await.unwrap(), (0, vec![]));
}

#[tokio::test]
async fn concurrent_connects_migrate_once() {
    let url = fresh_database().await.unwrap();
    let results = futures_join(&url).await;
    for r in results {
        r.unwrap();
    }
    let store = Store::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(applied >= 1);
}

async fn futures_join(url: &str) -> Vec<Result<Store, StoreError>> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { Store::connect(&url).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
