use meerkat_auth::Credentials;
use meerkat_store::{RosterItem, StoreError, Subscription};

use crate::helpers::fresh_store;

fn item(jid: &str, sub: Subscription) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: None,
        subscription: sub,
        ask_out: false,
        approved: false,
        groups: vec![],
    }
}

#[tokio::test]
async fn upsert_remove_and_versions() {
    let store = fresh_store().await;
    store
        .create_account("alice", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    assert_eq!(store.roster("alice").await.unwrap(), (0, vec![]));

    let mut bob = item("bob@example.com", Subscription::None);
    bob.ask_out = true;
    bob.name = Some("Bob".into());
    bob.groups = vec!["Friends".into(), "Work".into()];
    assert_eq!(store.put_roster_item("alice", &bob).await.unwrap(), 1);
    let carol = item("carol@example.com", Subscription::From);
    assert_eq!(store.put_roster_item("alice", &carol).await.unwrap(), 2);

    bob.subscription = Subscription::To;
    bob.ask_out = false;
    bob.name = None;
    assert_eq!(store.put_roster_item("alice", &bob).await.unwrap(), 3);
    assert_eq!(
        store.roster_item("alice", "bob@example.com").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store.roster("alice").await.unwrap(),
        (3, vec![bob.clone(), carol.clone()])
    );

    assert_eq!(
        store
            .remove_roster_item("alice", "carol@example.com")
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        store
            .remove_roster_item("alice", "carol@example.com")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.roster("alice").await.unwrap(), (4, vec![bob]));
    assert!(store
        .roster_item("alice", "carol@example.com")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn roster_write_needs_account() {
    let store = fresh_store().await;
    let err = store
        .put_roster_item("ghost", &item("bob@example.com", Subscription::None))
        .await;
    assert!(matches!(err, Err(StoreError::NoSuchAccount)));
    assert_eq!(
        store
            .remove_roster_item("ghost", "bob@example.com")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn subscription_requests_are_idempotent() {
    let store = fresh_store().await;
    store
        .create_account("alice", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    let first = store
        .add_subscription_request("alice", "bob@example.com", "<presence type='subscribe'/>")
        .await
        .unwrap();
    // A repeat while pending is the same request with the newer stanza.
    let repeat = store
        .add_subscription_request(
            "alice",
            "bob@example.com",
            "<presence type='subscribe'><status>hi</status></presence>",
        )
        .await
        .unwrap();
    assert_eq!(first, repeat);
    store
        .add_subscription_request("alice", "carol@example.com", "<presence type='subscribe'/>")
        .await
        .unwrap();
    let reqs = store.subscription_requests("alice").await.unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (
            reqs[0].contact.as_str(),
            reqs[0].stanza.as_str(),
            reqs[0].since
        ),
        (
            "bob@example.com",
            "<presence type='subscribe'><status>hi</status></presence>",
            first
        )
    );
    assert!(store
        .remove_subscription_request("alice", "bob@example.com")
        .await
        .unwrap());
    assert!(!store
        .remove_subscription_request("alice", "bob@example.com")
        .await
        .unwrap());
    let left: Vec<_> = store
        .subscription_requests("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.contact, r.stanza))
        .collect();
    assert_eq!(
        left,
        [(
            "carol@example.com".to_owned(),
            "<presence type='subscribe'/>".to_owned()
        )]
    );
    // Asked again after an answer: a new request, named differently.
    let again = store
        .add_subscription_request("alice", "bob@example.com", "<presence type='subscribe'/>")
        .await
        .unwrap();
    assert!(again > first, "{again} after {first}");
    assert!(matches!(
        store
            .add_subscription_request("ghost", "bob@example.com", "<presence/>")
            .await,
        Err(StoreError::NoSuchAccount)
    ));
}
