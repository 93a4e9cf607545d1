//! The message archive: each archived message has its own id and place, the same at every DC;
//! preferences decide what is archived; an account's deletion takes its archive everywhere;
//! a full copy carries it; the retention purges it.

use meerkat_auth::Credentials;
use meerkat_store::{
    ApplyOutcome, ArchiveDefault, ArchivePrefs, ArchiveQuery, NewArchived, Page, RosterItem, Store,
    Subscription,
};

use crate::replication::{dc, ship};

fn entry(owner: &str, with: &str, body: &str) -> NewArchived {
    NewArchived {
        owner: owner.into(),
        with: with.into(),
        stanza: format!("<message xmlns='jabber:client'><body>{body}</body></message>"),
        key: None,
    }
}

fn all(owner: &str) -> ArchiveQuery {
    ArchiveQuery::all(owner, 100)
}

async fn ids(s: &Store, q: &ArchiveQuery) -> Vec<String> {
    let page = s.archive_query(q).await.unwrap().expect("known ids");
    page.items.into_iter().map(|a| a.id).collect()
}

async fn two_dcs_with(users: &[&str]) -> (Store, Store) {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let creds = Credentials::derive("p", 16).unwrap();
    for u in users {
        a.create_account(u, &creds).await.unwrap();
    }
    ship(&a, &b).await;
    (a, b)
}

#[tokio::test]
async fn a_message_written_again_under_its_key_is_archived_once_with_its_first_id() {
    let (a, b) = two_dcs_with(&["kalice", "kbob"]).await;
    let keyed = |owner: &str, with: &str| NewArchived {
        key: Some("envelope-1".into()),
        ..entry(owner, with, "once")
    };
    let batch = [keyed("kbob", "kalice@d/phone"), keyed("kalice", "kbob@d")];
    let first = a
        .archive_messages(&batch, ArchiveDefault::Always)
        .await
        .unwrap();
    assert!(first.iter().all(Option::is_some), "{first:?}");
    // The handling is repeated (a retry after the write): the same ids, nothing new.
    let again = a
        .archive_messages(&batch, ArchiveDefault::Always)
        .await
        .unwrap();
    assert_eq!(again, first);
    // Repeated among other messages of a batch: those are archived, the repeat is not.
    let mixed = [
        entry("kbob", "kalice@d", "other"),
        keyed("kbob", "kalice@d/phone"),
    ];
    let written = a
        .archive_messages(&mixed, ArchiveDefault::Always)
        .await
        .unwrap();
    assert!(written[0].is_some() && written[0] != first[0]);
    assert_eq!(written[1], first[0]);
    assert_eq!(
        ids(&a, &all("kbob")).await,
        vec![first[0].clone().unwrap(), written[0].clone().unwrap()]
    );
    assert_eq!(
        ids(&a, &all("kalice")).await,
        vec![first[1].clone().unwrap()]
    );
    // Another envelope is another message, even with the same content.
    let other = NewArchived {
        key: Some("envelope-2".into()),
        ..entry("kbob", "kalice@d/phone", "once")
    };
    let third = a
        .archive_messages(&[other], ArchiveDefault::Always)
        .await
        .unwrap();
    assert!(third[0].is_some() && !first.contains(&third[0]));
    // The other DC has each row once.
    ship(&a, &b).await;
    assert_eq!(ids(&b, &all("kbob")).await, ids(&a, &all("kbob")).await);
    assert_eq!(ids(&b, &all("kbob")).await.len(), 3);
}

#[tokio::test]
async fn writes_at_two_dcs_meet_in_one_order_with_the_same_ids() {
    let (a, b) = two_dcs_with(&["alice", "bob"]).await;
    let batch = [
        entry("bob", "alice@x/phone", "1"),
        entry("alice", "bob@x", "1"),
        entry("nobody", "alice@x", "lost"),
    ];
    let got = a
        .archive_messages(&batch, ArchiveDefault::Always)
        .await
        .unwrap();
    assert!(got[0].is_some() && got[1].is_some() && got[0] != got[1]);
    assert_eq!(got[2], None, "no account, no archive");
    let at_tab = b
        .archive_messages(&[entry("bob", "alice@x/tab", "2")], ArchiveDefault::Always)
        .await
        .unwrap();
    a.archive_messages(
        &[entry("bob", "alice@x/phone", "3")],
        ArchiveDefault::Always,
    )
    .await
    .unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    let (at_a, at_b) = (ids(&a, &all("bob")).await, ids(&b, &all("bob")).await);
    assert_eq!(at_a.len(), 3);
    assert_eq!(at_a, at_b);
    assert_eq!(at_a[0], got[0].clone().unwrap());
    // Full-JID filter: one resource only; bare: every one.
    let mut q = all("bob");
    q.with = Some("alice@x/tab".into());
    assert_eq!(ids(&a, &q).await, [at_tab[0].clone().unwrap()]);
    q.with = Some("Alice@X".into());
    assert_eq!(ids(&a, &q).await.len(), 3);
    // Backward from the end, two at a time.
    let mut q = all("bob");
    q.max = 2;
    q.page = Page::Last;
    let last = a.archive_query(&q).await.unwrap().unwrap();
    assert_eq!(
        last.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        at_a[1..]
    );
    assert!(!last.complete);
    q.page = Page::Before(at_a[1].clone());
    let first = a.archive_query(&q).await.unwrap().unwrap();
    assert!(first.complete);
    assert_eq!(first.items.len(), 1);
    // An id of someone else's archive is unknown here.
    q.page = Page::After(got[1].clone().unwrap());
    assert_eq!(a.archive_query(&q).await.unwrap(), None);
}

#[tokio::test]
async fn preferences_replicate_and_decide() {
    let (a, b) = two_dcs_with(&["alice"]).await;
    assert_eq!(a.archive_prefs("alice").await.unwrap(), None);
    let roster = ArchivePrefs {
        default: ArchiveDefault::Roster,
        always: vec!["carol@x".into()],
        never: vec!["dave@x".into()],
    };
    a.set_archive_prefs("alice", &roster).await.unwrap();
    a.put_roster_item(
        "alice",
        &RosterItem {
            jid: "bob@x".into(),
            name: None,
            subscription: Subscription::None,
            ask_out: false,
            approved: false,
            groups: vec![],
        },
    )
    .await
    .unwrap();
    ship(&a, &b).await;
    assert_eq!(b.archive_prefs("alice").await.unwrap(), Some(roster));
    let got = b
        .archive_messages(
            &[
                entry("alice", "bob@x/r", "roster"),
                entry("alice", "carol@x", "always"),
                entry("alice", "dave@x", "never"),
                entry("alice", "erin@x", "stranger"),
            ],
            ArchiveDefault::Always,
        )
        .await
        .unwrap();
    let kept: Vec<bool> = got.iter().map(Option::is_some).collect();
    assert_eq!(kept, [true, true, false, false]);
    // The newest write wins at both.
    let never = ArchivePrefs {
        default: ArchiveDefault::Never,
        always: vec![],
        never: vec![],
    };
    b.set_archive_prefs("alice", &never).await.unwrap();
    ship(&b, &a).await;
    assert_eq!(a.archive_prefs("alice").await.unwrap(), Some(never));
}

#[tokio::test]
async fn deletion_copy_and_retention() {
    let (a, b) = two_dcs_with(&["alice", "bob"]).await;
    a.archive_messages(
        &[entry("alice", "bob@x", "1"), entry("bob", "alice@x", "1")],
        ArchiveDefault::Always,
    )
    .await
    .unwrap();
    ship(&a, &b).await;
    // A DC joining empty gets the archive in its full copy.
    let c = dc("dc3").await;
    c.apply_copy(&a.copy_records().await.unwrap())
        .await
        .unwrap();
    assert_eq!(ids(&c, &all("alice")).await, ids(&a, &all("alice")).await);
    // Alice deleted at dc2: her archive goes at dc1 too; Bob's stays.
    assert!(b.delete_account("alice").await.unwrap());
    ship(&b, &a).await;
    assert!(ids(&a, &all("alice")).await.is_empty());
    assert_eq!(ids(&a, &all("bob")).await.len(), 1);
    // Retention: everything before now goes.
    let now = chrono::Utc::now().timestamp_millis() + 1000;
    assert_eq!(a.archive_purge(now).await.unwrap(), 1);
    assert!(ids(&a, &all("bob")).await.is_empty());
}

#[tokio::test]
async fn muc_a_room_message_handled_twice_is_archived_once_with_its_first_id() {
    use meerkat_store::MucWrite;
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    let room = "kroom@conference.d";
    let write = |key: &str, body: &str| MucWrite {
        room: room.into(),
        puts: Vec::new(),
        archive: Some((
            format!("{room}/alice"),
            format!(
                "<message xmlns='jabber:client' type='groupchat'><body>{body}</body></message>"
            ),
        )),
        key: Some(key.into()),
    };
    let first = a.muc_write(write("envelope-1", "hello")).await.unwrap();
    assert!(first.is_some());
    // The handling is repeated after its write (a retry, a redelivery): the same id, no row.
    let again = a.muc_write(write("envelope-1", "hello")).await.unwrap();
    assert_eq!(again, first);
    // Another envelope is another message, even with the same content.
    let other = a.muc_write(write("envelope-2", "hello")).await.unwrap();
    assert!(other.is_some() && other != first);
    let want = vec![first.unwrap(), other.unwrap()];
    assert_eq!(ids(&a, &all(room)).await, want);
    // The other DC has each row once.
    ship(&a, &b).await;
    assert_eq!(ids(&b, &all(room)).await, want);
}

/// A run of archived messages is applied as one set (a few statements for the whole run):
/// DC 2 applies DC 1's messages in one batch, DC 3 one by one, and both hold the same. Those
/// of an account DC 2 deleted meanwhile are refused at both, and a full copy bringing them
/// again, one of them twice, changes nothing.
#[tokio::test]
async fn archived_messages_applied_as_a_set_are_what_one_by_one_gives() {
    let (a, b) = two_dcs_with(&["salice", "sbob", "scarol"]).await;
    let c = dc("dc3").await;
    ship(&a, &c).await;
    let me = a.identity().await.unwrap();
    let from = a.identity().await.unwrap().head;
    let batch = [
        entry("salice", "sbob@d/phone", "1"),
        entry("sbob", "salice@d/laptop", "1"),
        entry("scarol", "salice@d", "2"),
        entry("salice", "scarol@d", "2"),
        entry("salice", "sbob@d/phone", "3"),
        entry("sbob", "salice@d/laptop", "3"),
    ];
    let written = a
        .archive_messages(&batch, ArchiveDefault::Always)
        .await
        .unwrap();
    // Deleted after the write, in the clocks' order too: within the same millisecond the two
    // DCs' stamps (milliseconds, then a counter) are concurrent, and DC 1's may be the larger.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    assert!(b.delete_account("scarol").await.unwrap());
    ship(&b, &c).await;

    let entries = a.outbox_page(from, 100).await.unwrap().entries;
    assert_eq!(entries.len(), 6);
    // Each record names its row as the writer answered it: in order, one sequence number
    // after another, its id its stamp written out, its stamp's clock one past the one before.
    for (i, (e, id)) in entries.iter().zip(&written).enumerate() {
        let meerkat_store::Record::Archive {
            id: rid,
            stamp,
            username,
            state,
        } = &e.record
        else {
            panic!("not an archive record: {:?}", e.record);
        };
        assert_eq!(Some(rid), id.as_ref());
        assert_eq!(meerkat_store::archive_id(stamp), *rid);
        assert_eq!(
            (username.as_str(), stamp.dc.as_str()),
            (batch[i].owner.as_str(), me.dc.as_str())
        );
        assert_eq!(
            state.as_ref().map(|s| s.with.as_str()),
            Some(batch[i].with.as_str())
        );
        assert_eq!(e.seq, entries[0].seq + i as i64);
        let first = meerkat_store::archive_stamp(written[0].as_deref().unwrap()).unwrap();
        assert_eq!(stamp.hlc, first.hlc + i as i64);
    }
    let changes: Vec<(i64, &meerkat_store::Record)> =
        entries.iter().map(|e| (e.seq, &e.record)).collect();
    let done = b
        .apply_remote_batch(&me.dc, &me.epoch, &changes)
        .await
        .unwrap();
    assert!(done.iter().all(|o| *o == ApplyOutcome::Applied), "{done:?}");
    assert_eq!(ship(&a, &c).await, 6);
    for (user, held) in [("salice", 3), ("sbob", 2), ("scarol", 0)] {
        let at_b = ids(&b, &all(user)).await;
        assert_eq!(at_b.len(), held, "{user} at dc2: {at_b:?}");
        assert_eq!(
            at_b,
            ids(&c, &all(user)).await,
            "{user}: dc2 and dc3 differ"
        );
    }
    assert_eq!(ids(&a, &all("salice")).await, ids(&b, &all("salice")).await);

    let mut again: Vec<meerkat_store::Record> = entries.into_iter().map(|e| e.record).collect();
    again.push(again[0].clone());
    b.apply_copy(&again).await.unwrap();
    for user in ["salice", "sbob", "scarol"] {
        assert_eq!(
            ids(&b, &all(user)).await,
            ids(&c, &all(user)).await,
            "{user}"
        );
    }
    let stanzas = b.archive_query(&all("salice")).await.unwrap().unwrap();
    assert_eq!(stanzas.items.len(), 3);
    assert!(
        stanzas.items[0].stanza.contains("<body>1</body>"),
        "{:?}",
        stanzas.items[0]
    );
}
