//! Replication between two or three real databases, with the shipping done by hand: what one
//! DC's outbox holds, another applies.

use meerkat_auth::Credentials;
use meerkat_store::{ApplyOutcome, RosterItem, Store, Subscription};

use crate::helpers::fresh_store;

pub async fn dc(name: &str) -> Store {
    let store = fresh_store().await;
    store.claim_dc(name).await.unwrap();
    store
}

/// Applies to `to` everything in `from`'s outbox it has not applied yet; returns how many.
pub async fn ship(from: &Store, to: &Store) -> usize {
    let me = from.identity().await.unwrap();
    let after = to
        .applied()
        .await
        .unwrap()
        .get(&me.dc)
        .filter(|a| a.epoch == me.epoch)
        .map_or(0, |a| a.seq);
    let entries = from.outbox_page(after, 10_000).await.unwrap().entries;
    for e in &entries {
        let done = to
            .apply_remote(&me.dc, &me.epoch, e.seq, &e.record)
            .await
            .unwrap();
        assert_eq!(done, ApplyOutcome::Applied, "seq {}", e.seq);
    }
    entries.len()
}

/// Whether the DC accepts `password` for `user` (as PLAIN would check it).
async fn accepts(store: &Store, user: &str, password: &str) -> bool {
    store
        .credentials(user)
        .await
        .unwrap()
        .is_some_and(|c| c.verify_plain(password))
}

fn item(jid: &str, name: &str) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        name: Some(name.into()),
        subscription: Subscription::None,
        ask_out: false,
        approved: false,
        groups: vec![],
    }
}

#[tokio::test]
async fn an_account_made_at_one_dc_logs_in_at_another_with_the_newest_password() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let old = Credentials::derive("old", 16).unwrap();
    a.create_account("charlie", &old).await.unwrap();
    assert_eq!(ship(&a, &b).await, 1);
    assert!(accepts(&b, "charlie", "old").await);
    // Changed at dc2: dc1 takes it.
    let new = Credentials::derive("new", 16).unwrap();
    assert!(b.set_credentials("charlie", &new).await.unwrap());
    ship(&b, &a).await;
    assert!(accepts(&a, "charlie", "new").await);
    assert!(!accepts(&a, "charlie", "old").await);
    // Shipping again changes nothing.
    assert_eq!(ship(&b, &a).await, 0);
    assert!(accepts(&a, "charlie", "new").await);
}

#[tokio::test]
async fn concurrent_roster_writes_converge_to_one_winner() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    a.create_account("charlie", &creds).await.unwrap();
    ship(&a, &b).await;
    // The same item written at both DCs before either hears of the other's write, plus one
    // item per DC.
    a.put_roster_item("charlie", &item("bob@example.com", "from dc1"))
        .await
        .unwrap();
    b.put_roster_item("charlie", &item("bob@example.com", "from dc2"))
        .await
        .unwrap();
    a.put_roster_item("charlie", &item("dave@example.com", "d"))
        .await
        .unwrap();
    b.put_roster_item("charlie", &item("erin@example.com", "e"))
        .await
        .unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    let (_, at_a) = a.roster("charlie").await.unwrap();
    let (_, at_b) = b.roster("charlie").await.unwrap();
    assert_eq!(at_a, at_b);
    assert_eq!(at_a.len(), 3);
    // The later write (dc2's, made after dc2 had seen nothing of dc1's) or the higher DC id on
    // a tie: either way the same at both.
    let bob = at_a.iter().find(|i| i.jid == "bob@example.com").unwrap();
    assert_eq!(bob.name.as_deref(), Some("from dc2"));
    // A removal at one DC reaches the other and an older write cannot bring it back.
    a.remove_roster_item("charlie", "dave@example.com")
        .await
        .unwrap()
        .unwrap();
    ship(&a, &b).await;
    assert!(b
        .roster_item("charlie", "dave@example.com")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn two_halves_of_an_item_changed_at_two_dcs_are_both_kept() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    for u in ["halice", "hbob"] {
        a.create_account(u, &creds).await.unwrap();
    }
    // Each has asked the other (both asks known at both DCs).
    let asked = |jid: &str| RosterItem {
        ask_out: true,
        ..item(jid, "x")
    };
    a.put_roster_item("halice", &asked("hbob@example.com"))
        .await
        .unwrap();
    a.put_roster_item("hbob", &asked("halice@example.com"))
        .await
        .unwrap();
    ship(&a, &b).await;
    // At the same moment Alice approves Bob at dc1 (her "from" half, his "to" half) and Bob
    // approves Alice at dc2 (his "from" half, her "to" half), each DC from its own copy.
    let with = |jid: &str, subscription: Subscription, ask_out: bool| RosterItem {
        subscription,
        ask_out,
        ..item(jid, "x")
    };
    a.put_roster_item(
        "halice",
        &with("hbob@example.com", Subscription::From, true),
    )
    .await
    .unwrap();
    a.put_roster_item("hbob", &with("halice@example.com", Subscription::To, false))
        .await
        .unwrap();
    b.put_roster_item(
        "hbob",
        &with("halice@example.com", Subscription::From, true),
    )
    .await
    .unwrap();
    b.put_roster_item("halice", &with("hbob@example.com", Subscription::To, false))
        .await
        .unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    // Whole rows, the later winning, would leave one side `from` with its ask pending.
    for (dc, store) in [("dc1", &a), ("dc2", &b)] {
        for (user, contact) in [
            ("halice", "hbob@example.com"),
            ("hbob", "halice@example.com"),
        ] {
            let it = store.roster_item(user, contact).await.unwrap().unwrap();
            assert_eq!(
                (it.subscription, it.ask_out),
                (Subscription::Both, false),
                "{user} -> {contact} at {dc}"
            );
        }
    }
    // A name set later at one DC stays with the merged subscription everywhere.
    b.put_roster_item(
        "halice",
        &RosterItem {
            name: Some("Bob B.".into()),
            ..with("hbob@example.com", Subscription::Both, false)
        },
    )
    .await
    .unwrap();
    ship(&b, &a).await;
    let it = a
        .roster_item("halice", "hbob@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (it.name.as_deref(), it.subscription),
        (Some("Bob B."), Subscription::Both)
    );
    // Nothing more to exchange: both DCs hold the same items.
    ship(&a, &b).await;
    assert_eq!(
        a.roster("halice").await.unwrap().1,
        b.roster("halice").await.unwrap().1
    );
    assert_eq!(
        a.roster("hbob").await.unwrap().1,
        b.roster("hbob").await.unwrap().1
    );
}

#[tokio::test]
async fn an_offline_message_delivered_at_one_dc_is_gone_at_the_other() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    a.create_account("charlie", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    a.store_offline("charlie", "<message><body>hi</body></message>", 100)
        .await
        .unwrap();
    ship(&a, &b).await;
    let at_b = b.offline_messages("charlie").await.unwrap();
    assert_eq!(at_b.len(), 1);
    assert_eq!(at_b[0].stanza, "<message><body>hi</body></message>");
    // Delivered at dc2.
    b.delete_offline("charlie", &[at_b[0].id]).await.unwrap();
    ship(&b, &a).await;
    assert!(a.offline_messages("charlie").await.unwrap().is_empty());
    assert!(b.offline_messages("charlie").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_gap_is_reported_and_nothing_is_applied_out_of_order() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    a.create_account("u1", &creds).await.unwrap();
    a.create_account("u2", &creds).await.unwrap();
    let me = a.identity().await.unwrap();
    let entries = a.outbox_page(0, 10).await.unwrap().entries;
    assert_eq!(entries.len(), 2);
    let second = b
        .apply_remote(&me.dc, &me.epoch, 2, &entries[1].record)
        .await
        .unwrap();
    assert_eq!(second, ApplyOutcome::Gap { expected: 1 });
    assert!(!b.account_exists("u2").await.unwrap());
    // Repaired by replaying from 1; a repeat is a duplicate.
    assert_eq!(ship(&a, &b).await, 2);
    let again = b
        .apply_remote(&me.dc, &me.epoch, 1, &entries[0].record)
        .await
        .unwrap();
    assert_eq!(again, ApplyOutcome::Duplicate);
    assert!(b.account_exists("u2").await.unwrap());
}

#[tokio::test]
async fn a_batch_applies_up_to_its_first_gap_in_one_transaction() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    for u in ["u1", "u2", "u3", "u4", "u5"] {
        a.create_account(u, &creds).await.unwrap();
    }
    let me = a.identity().await.unwrap();
    let e = a.outbox_page(0, 10).await.unwrap().entries;
    assert_eq!(e.len(), 5);
    b.apply_remote(&me.dc, &me.epoch, 1, &e[0].record)
        .await
        .unwrap();
    // 1 again, 2 and 3 in order, then 5 without 4.
    let batch = [
        (1, &e[0].record),
        (2, &e[1].record),
        (3, &e[2].record),
        (5, &e[4].record),
    ];
    let done = b
        .apply_remote_batch(&me.dc, &me.epoch, &batch)
        .await
        .unwrap();
    assert_eq!(
        done,
        [
            ApplyOutcome::Duplicate,
            ApplyOutcome::Applied,
            ApplyOutcome::Applied,
            ApplyOutcome::Gap { expected: 4 },
        ]
    );
    assert!(b.account_exists("u3").await.unwrap());
    assert!(!b.account_exists("u5").await.unwrap());
    assert_eq!(b.applied().await.unwrap()[&me.dc].seq, 3);
    // The rest by the usual path; a batch of an earlier life is stale as a whole.
    assert_eq!(ship(&a, &b).await, 2);
    let stale = b
        .apply_remote_batch(&me.dc, "0", &[(6, &e[0].record), (7, &e[1].record)])
        .await
        .unwrap();
    assert_eq!(stale, [ApplyOutcome::Stale, ApplyOutcome::Stale]);
}

#[tokio::test]
async fn a_deleted_account_stays_deleted_and_a_new_one_of_that_name_starts_empty() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    a.create_account("charlie", &creds).await.unwrap();
    a.put_roster_item("charlie", &item("bob@example.com", "b"))
        .await
        .unwrap();
    ship(&a, &b).await;
    assert!(b.delete_account("charlie").await.unwrap());
    ship(&b, &a).await;
    assert!(!a.account_exists("charlie").await.unwrap());
    assert!(a.roster("charlie").await.unwrap().1.is_empty());
    // Registered again at dc1: the old roster does not come back anywhere.
    a.create_account("charlie", &creds).await.unwrap();
    ship(&a, &b).await;
    assert!(b.account_exists("charlie").await.unwrap());
    assert!(b.roster("charlie").await.unwrap().1.is_empty());
}

#[tokio::test]
async fn a_dc_rebuilt_empty_catches_up_from_a_full_copy() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    a.create_account("charlie", &creds).await.unwrap();
    a.put_roster_item("charlie", &item("bob@example.com", "b"))
        .await
        .unwrap();
    b.create_account("dora", &creds).await.unwrap();
    b.store_offline("dora", "<message/>", 10).await.unwrap();
    ship(&b, &a).await;
    a.remove_roster_item("charlie", "bob@example.com")
        .await
        .unwrap();
    // dc3 joins empty: a copy from dc1 holds dc2's data too, and the positions say so.
    let c = dc("dc3").await;
    c.apply_copy(&a.copy_records().await.unwrap())
        .await
        .unwrap();
    let mut positions = a.applied().await.unwrap();
    let me = a.identity().await.unwrap();
    positions.insert(
        me.dc.clone(),
        meerkat_store::Applied {
            epoch: me.epoch,
            seq: me.head,
        },
    );
    c.copy_done(&positions).await.unwrap();
    assert!(accepts(&c, "charlie", "p").await);
    assert!(accepts(&c, "dora", "p").await);
    assert_eq!(c.offline_messages("dora").await.unwrap().len(), 1);
    assert!(c.roster("charlie").await.unwrap().1.is_empty());
    // Then it follows the streams from where the copy ends: nothing new to apply.
    assert_eq!(ship(&a, &c).await, 0);
    assert_eq!(ship(&b, &c).await, 0);
    b.store_offline("dora", "<message>2</message>", 10)
        .await
        .unwrap();
    assert_eq!(ship(&b, &c).await, 1);
    assert_eq!(c.offline_messages("dora").await.unwrap().len(), 2);
}

/// A full copy is read in batches: every item and tombstone of every kind comes exactly
/// once however small the batch, and a DC that applies the batches holds what the origin holds.
#[tokio::test]
async fn a_full_copy_read_in_small_batches_holds_every_item_once() {
    let a = dc("dc1").await;
    let creds = Credentials::derive("p", 16).unwrap();
    for u in 0..7 {
        let user = format!("user{u}");
        a.create_account(&user, &creds).await.unwrap();
        for c in 0..3 {
            a.put_roster_item(&user, &item(&format!("c{c}@example.com"), "c"))
                .await
                .unwrap();
        }
        a.store_offline(&user, "<message/>", 10).await.unwrap();
    }
    a.remove_roster_item("user0", "c0@example.com")
        .await
        .unwrap();
    a.create_account("gone", &creds).await.unwrap();
    a.delete_account("gone").await.unwrap();
    let all = a.copy_records().await.unwrap();
    // 8 accounts made, one deleted (a tombstone), 21 roster items less one (a tombstone), 7
    // offline messages.
    assert_eq!(all.len(), 7 + 1 + 20 + 1 + 7, "{all:#?}");

    let mut copy = a.full_copy().await.unwrap();
    let (mut batches, mut seen) = (0, Vec::new());
    loop {
        let batch = copy.next_batch(4).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 4);
        batches += 1;
        seen.extend(batch);
    }
    assert!(batches >= all.len() / 4, "{batches} batches");
    let key = |r: &meerkat_store::Record| serde_json::to_string(r).unwrap();
    let mut got: Vec<String> = seen.iter().map(key).collect();
    let mut want: Vec<String> = all.iter().map(key).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let positions = copy.positions().clone();
    assert_eq!(positions["dc1"].seq, a.identity().await.unwrap().head);

    let b = dc("dc2").await;
    for part in seen.chunks(4) {
        b.apply_copy(part).await.unwrap();
    }
    b.copy_done(&positions).await.unwrap();
    for u in 0..7 {
        let user = format!("user{u}");
        assert!(accepts(&b, &user, "p").await, "{user}");
        let want = if u == 0 { 2 } else { 3 };
        assert_eq!(b.roster(&user).await.unwrap().1.len(), want, "{user}");
        assert_eq!(b.offline_messages(&user).await.unwrap().len(), 1, "{user}");
    }
    assert!(!accepts(&b, "gone", "p").await);
    assert_eq!(
        ship(&a, &b).await,
        0,
        "the copy ends where the stream goes on"
    );
}

#[tokio::test]
async fn a_database_belongs_to_one_dc() {
    let a = dc("dc1").await;
    a.claim_dc("dc1").await.unwrap();
    let err = a.claim_dc("dc2").await.unwrap_err().to_string();
    assert!(err.contains("belongs to DC \"dc1\""), "{err}");
}

#[tokio::test]
async fn an_outbox_page_names_the_stream_its_entries_belong_to() {
    let a = dc("dc1").await;
    let empty = a.outbox_page(0, 10).await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!((empty.dc.as_str(), empty.epoch.as_str()), ("", ""));
    let creds = Credentials::derive("p", 16).unwrap();
    for u in ["u1", "u2", "u3"] {
        a.create_account(u, &creds).await.unwrap();
    }
    let me = a.identity().await.unwrap();
    let page = a.outbox_page(1, 10).await.unwrap();
    assert_eq!(
        (page.dc.as_str(), page.epoch.as_str()),
        ("dc1", me.epoch.as_str())
    );
    let seqs: Vec<i64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(a.outbox_page(1, 1).await.unwrap().entries.len(), 1);
}
