//! Persistent-data replication under faults (docs/replication.md): a DC cut off while writes
//! are made elsewhere catches up once back (from its queue, or by a replay when the backlog
//! is lost), two DCs written on both sides of a partition converge to the same data, and a
//! DC whose database is rebuilt empty gets everything back by a full copy.

use std::time::{Duration, Instant};

use meerkat_localstack::rabbit_api::percent_encode;

use meerkat_testkit::client::Client;
use meerkat_testkit::multi::{DcBroker, MultiDc};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{accepts, available, eventually, multi, register, store, user, CONVERGE};

/// How long a DC gets to catch up after an outage or a rebuild.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Waits until `dc`'s database holds every account of `names`.
async fn wait_accounts(dc: &Dc, names: &[String], within: Duration) {
    let s = store(dc).await;
    eventually("the accounts reached the DC", within, || async {
        for n in names {
            if !s.account_exists(n).await.unwrap() {
                return false;
            }
        }
        true
    })
    .await;
}

/// Everything a DC's database holds that replication carries (accounts with their keys,
/// roster items, subscription requests, offline messages, tombstones, each with its stamp),
/// in a canonical order.
async fn contents(dc: &Dc) -> Vec<String> {
    let mut out: Vec<String> = store(dc)
        .await
        .copy_records()
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    out.sort();
    out
}

/// Waits until every DC of `m` holds the same data.
async fn wait_identical(m: &MultiDc, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let first = contents(m.dc(1)).await;
        let mut same = true;
        for dc in &m.dcs[1..] {
            same &= contents(dc).await == first;
        }
        if same {
            return;
        }
        if Instant::now() > until {
            for dc in &m.dcs {
                eprintln!("{}: {:#?}", dc.options.dc, contents(dc).await);
            }
            panic!("the DCs' data differ after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets (adds or updates) `contact` in the roster of the logged-in `c`.
async fn roster_set(c: &mut Client, contact: &str, name: &str) {
    let item = Element::new("item", ns::ROSTER)
        .with_attr("jid", contact)
        .with_attr("name", name);
    c.iq_ok(
        "set",
        None,
        Element::new("query", ns::ROSTER).with_child(item),
    )
    .await
    .unwrap();
}

/// (jid, name) of every item of `name`'s roster as a fresh login at `dc` sees it.
async fn roster_at(dc: &Dc, name: &str, password: &str) -> Vec<(String, String)> {
    let mut c = Client::login(&dc.client(), name, password, None)
        .await
        .unwrap();
    let r = c
        .iq_ok("get", None, Element::new("query", ns::ROSTER))
        .await
        .unwrap();
    let _ = c.close().await;
    let mut items: Vec<(String, String)> = r
        .get_child("query", ns::ROSTER)
        .map(|q| {
            q.children()
                .map(|i| {
                    (
                        i.attr("jid").unwrap_or_default().to_owned(),
                        i.attr("name").unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items
}

/// Deletes `b`'s queue of the other DCs' data changes: what it buffered is lost, and until a
/// replicator declares it again the other DCs' changes have nowhere to go.
async fn delete_data_queue(b: &DcBroker) {
    let url = format!(
        "{}api/queues/{}/{}",
        b.vhost.mgmt_url,
        percent_encode(&b.vhost.name),
        percent_encode(&format!("meerkat.inter.data.{}", b.dc))
    );
    let resp = reqwest::Client::new()
        .delete(&url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "DELETE {url}: {}",
        resp.status()
    );
}

const NEW_ACCOUNTS: usize = 20;
const ROSTER_SETS: usize = 15;
const OFFLINE: usize = 15;

/// DC 2's replicator is stopped while 50 changes are made at DC 1 (20 registrations, 15
/// roster sets, 15 offline messages); when it starts again, DC 2 has every one of them, once.
/// With `lose_backlog`, DC 2's queue of changes is deleted during the outage too, so only
/// the status reports and the replay they trigger can repair it.
async fn catch_up_after_outage(lose_backlog: bool) {
    let mut m = multi(2).await;
    let (alice, dora) = (user("alice"), user("dora"));
    for name in [&alice, &dora] {
        register(m.dc(1), name).await;
    }
    wait_accounts(m.dc(2), &[alice.clone(), dora.clone()], CONVERGE).await;

    m.dc_mut(2).stop_replicator().await.unwrap();
    if lose_backlog {
        delete_data_queue(&m.brokers[1]).await;
    }
    let fresh: Vec<String> = (0..NEW_ACCOUNTS).map(|_| user("n")).collect();
    for name in &fresh {
        register(m.dc(1), name).await;
    }
    let mut a = available(m.dc(1), &alice, "phone").await;
    for i in 0..ROSTER_SETS {
        roster_set(
            &mut a,
            &format!("contact{i}@example.com"),
            &format!("Contact {i}"),
        )
        .await;
    }
    for i in 0..OFFLINE {
        a.send_message(&format!("{dora}@example.com"), &format!("m{i}"))
            .await
            .unwrap();
    }
    let dc1 = store(m.dc(1)).await;
    eventually("DC 1 stored the offline messages", CONVERGE, || async {
        dc1.offline_messages(&dora).await.unwrap().len() == OFFLINE
    })
    .await;
    let _ = a.close().await;
    // Nothing reached DC 2 meanwhile.
    let dc2 = store(m.dc(2)).await;
    assert!(dc2.offline_messages(&dora).await.unwrap().is_empty());
    assert!(!dc2.account_exists(&fresh[0]).await.unwrap());

    m.dc_mut(2).start_replicator().await.unwrap();
    wait_accounts(m.dc(2), &fresh, CATCH_UP).await;
    eventually("DC 2 holds the offline messages", CATCH_UP, || async {
        dc2.offline_messages(&dora).await.unwrap().len() >= OFFLINE
    })
    .await;
    wait_identical(&m, CATCH_UP).await;
    assert_eq!(dc2.offline_messages(&dora).await.unwrap().len(), OFFLINE);

    // What users see at DC 2: every new account logs in, alice's roster is whole, and dora
    // gets each message once, in order.
    for name in &fresh {
        assert!(accepts(m.dc(2), name, "secret-pw").await, "{name} at DC 2");
    }
    let expected: Vec<(String, String)> = {
        let mut v: Vec<_> = (0..ROSTER_SETS)
            .map(|i| (format!("contact{i}@example.com"), format!("Contact {i}")))
            .collect();
        v.sort();
        v
    };
    assert_eq!(roster_at(m.dc(2), &alice, "secret-pw").await, expected);
    let mut d = available(m.dc(2), &dora, "tablet").await;
    for i in 0..OFFLINE {
        let msg = d
            .expect("offline message", |e| e.is("message", ns::CLIENT))
            .await
            .unwrap();
        assert_eq!(
            msg.child_text("body", ns::CLIENT),
            Some(format!("m{i}")),
            "message {i}"
        );
    }
    d.expect_none(Duration::from_secs(1), |e| e.is("message", ns::CLIENT))
        .await
        .unwrap();
    // Delivered at DC 2, so gone at DC 1 too.
    eventually("DC 1 forgot the delivered messages", CONVERGE, || async {
        dc1.offline_messages(&dora).await.unwrap().is_empty()
    })
    .await;
    m.stop().await.unwrap();
}

#[tokio::test]
async fn a_dc_whose_replicator_was_down_gets_every_change_made_meanwhile_once() {
    catch_up_after_outage(false).await;
}

#[tokio::test]
async fn a_dc_that_lost_its_backlog_of_changes_is_repaired_by_a_replay() {
    catch_up_after_outage(true).await;
}

/// Both replicators stopped (neither DC hears of the other's writes), writes at both DCs,
/// including the same roster item at both, the same new account name at both and a password
/// change at one; after the heal both DCs hold the same data, nothing lost, and the later of
/// two concurrent writes wins at both.
#[tokio::test]
async fn writes_on_both_sides_of_a_partition_converge() {
    let mut m = multi(2).await;
    let carol = user("carol");
    register(m.dc(1), &carol).await;
    wait_accounts(m.dc(2), std::slice::from_ref(&carol), CONVERGE).await;

    m.dc_mut(1).stop_replicator().await.unwrap();
    m.dc_mut(2).stop_replicator().await.unwrap();

    let at1: Vec<String> = (0..10).map(|_| user("one")).collect();
    let at2: Vec<String> = (0..10).map(|_| user("two")).collect();
    for name in &at1 {
        register(m.dc(1), name).await;
    }
    for name in &at2 {
        register(m.dc(2), name).await;
    }
    // The same new name at both DCs, DC 2's later.
    let zed = user("zed");
    Client::register_account(&m.dc(1).client(), &zed, "zed-at-one")
        .await
        .unwrap();
    Client::register_account(&m.dc(2).client(), &zed, "zed-at-two")
        .await
        .unwrap();

    // carol at DC 1: a contact of her own, the shared one, then a new password.
    let mut c1 = available(m.dc(1), &carol, "phone").await;
    roster_set(&mut c1, "erin@example.com", "Erin").await;
    roster_set(&mut c1, "dora@example.com", "Dora (phone)").await;
    let change = Element::new("query", ns::REGISTER)
        .with_child(Element::new("username", ns::REGISTER).with_text(carol.as_str()))
        .with_child(Element::new("password", ns::REGISTER).with_text("new-pw"));
    c1.iq_ok("set", None, change).await.unwrap();
    let _ = c1.close().await;
    // carol at DC 2 (which still has the old password): her own contact, then the shared
    // one, later than DC 1's.
    let mut c2 = available(m.dc(2), &carol, "fridge").await;
    roster_set(&mut c2, "frank@example.com", "Frank").await;
    roster_set(&mut c2, "dora@example.com", "Dora (fridge)").await;
    let _ = c2.close().await;

    m.dc_mut(1).start_replicator().await.unwrap();
    m.dc_mut(2).start_replicator().await.unwrap();

    let everyone: Vec<String> = at1.iter().chain(&at2).cloned().collect();
    for k in [1, 2] {
        wait_accounts(m.dc(k), &everyone, CATCH_UP).await;
    }
    wait_identical(&m, CATCH_UP).await;

    for k in [1, 2] {
        let dc = m.dc(k);
        for name in &everyone {
            assert!(accepts(dc, name, "secret-pw").await, "{name} at DC {k}");
        }
        assert!(
            accepts(dc, &carol, "new-pw").await,
            "carol's new password at DC {k}"
        );
        assert!(
            !accepts(dc, &carol, "secret-pw").await,
            "carol's old password at DC {k}"
        );
        assert!(accepts(dc, &zed, "zed-at-two").await, "zed at DC {k}");
        assert!(!accepts(dc, &zed, "zed-at-one").await, "zed at DC {k}");
        assert_eq!(
            roster_at(dc, &carol, "new-pw").await,
            vec![
                ("dora@example.com".to_owned(), "Dora (fridge)".to_owned()),
                ("erin@example.com".to_owned(), "Erin".to_owned()),
                ("frank@example.com".to_owned(), "Frank".to_owned()),
            ],
            "carol's roster at DC {k}"
        );
    }
    m.stop().await.unwrap();
}

/// DC 1 trims its outbox (every peer has applied it); DC 2's database is then rebuilt empty:
/// the replay it asks for is no longer in DC 1's outbox, so it gets a full copy, and ends
/// with every account again, those first registered at DC 2 included. The copy is read and
/// sent in batches of 8 records, so its 35 accounts and their roster items take several.
#[tokio::test]
async fn a_dc_rebuilt_on_an_empty_database_catches_up_from_a_full_copy() {
    let mut m = MultiDc::start(
        2,
        StackOptions {
            outbox_retention_secs: Some(1),
            data_status_ms: Some(100),
            full_copy_batch: std::num::NonZeroUsize::new(8),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let at1: Vec<String> = (0..30).map(|_| user("one")).collect();
    let at2: Vec<String> = (0..5).map(|_| user("two")).collect();
    for name in &at1 {
        register(m.dc(1), name).await;
    }
    for name in &at2 {
        register(m.dc(2), name).await;
    }
    let everyone: Vec<String> = at1.iter().chain(&at2).cloned().collect();
    for k in [1, 2] {
        wait_accounts(m.dc(k), &everyone, CONVERGE).await;
    }
    let dc1 = store(m.dc(1)).await;
    eventually("DC 1 trimmed its outbox", CONVERGE, || async {
        let head = dc1.identity().await.unwrap().head;
        dc1.outbox_first().await.unwrap() == head + 1
    })
    .await;

    let old = m.dc(2).database_url.clone();
    m.dc_mut(2).rebuild_database().await.unwrap();
    assert_ne!(m.dc(2).database_url, old, "a fresh database");
    wait_accounts(m.dc(2), &everyone, CATCH_UP).await;
    wait_identical(&m, CATCH_UP).await;
    for name in &everyone {
        assert!(accepts(m.dc(2), name, "secret-pw").await, "{name} at DC 2");
    }
    // And DC 2 takes part as before: a registration there reaches DC 1.
    let late = user("late");
    register(m.dc(2), &late).await;
    wait_accounts(m.dc(1), std::slice::from_ref(&late), CONVERGE).await;
    m.stop().await.unwrap();
}
