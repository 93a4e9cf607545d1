//! Personal documents (issue 17): private XML items, vCards and the last logout — the private
//! storage total, and replication between real databases: per item the later write wins, a
//! deleted vCard is a tombstone, a full copy carries them, and an account's deletion takes
//! them everywhere.

use meerkat_auth::Credentials;
use meerkat_store::{Store, StoreError};

use crate::replication::{dc, ship};

async fn with_dora(stores: &[&Store]) {
    let creds = Credentials::derive("p", 16).unwrap();
    stores[0].create_account("dora", &creds).await.unwrap();
    for s in &stores[1..] {
        ship(stores[0], s).await;
    }
}

fn item(key: &str, xml: &str) -> (String, String) {
    (key.to_owned(), xml.to_owned())
}

#[tokio::test]
async fn private_items_past_the_total_write_nothing() {
    let a = dc("dc1").await;
    with_dora(&[&a]).await;
    let small = item("{x:a}a", "<a xmlns='x:a'/>");
    a.set_private("dora", std::slice::from_ref(&small), 40)
        .await
        .unwrap();
    let big = item("{x:b}b", &format!("<b xmlns='x:b'>{}</b>", "y".repeat(30)));
    assert!(matches!(
        a.set_private("dora", &[small.clone(), big], 40).await,
        Err(StoreError::Full)
    ));
    assert_eq!(a.private_item("dora", "{x:b}b").await.unwrap(), None);
    assert_eq!(
        a.private_item("dora", "{x:a}a").await.unwrap().as_deref(),
        Some("<a xmlns='x:a'/>")
    );
    assert!(matches!(
        a.set_private("nobody", &[small], 40).await,
        Err(StoreError::NoSuchAccount)
    ));
}

#[tokio::test]
async fn a_partition_heals_to_the_later_vcard_and_items_at_both_dcs() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_dora(&[&a, &b]).await;
    // Cut apart: both set the vCard and one bookmark item; dc2 writes later.
    a.set_vcard("dora", Some("<vCard xmlns='vcard-temp'><FN>A</FN></vCard>"))
        .await
        .unwrap();
    a.set_private("dora", &[item("{s}s", "<s xmlns='s'>1</s>")], 1000)
        .await
        .unwrap();
    a.set_last_activity("dora", "away at dc1").await.unwrap();
    b.set_vcard("dora", Some("<vCard xmlns='vcard-temp'><FN>B</FN></vCard>"))
        .await
        .unwrap();
    b.set_private("dora", &[item("{s}s", "<s xmlns='s'>2</s>")], 1000)
        .await
        .unwrap();
    b.set_last_activity("dora", "gone from dc2").await.unwrap();
    // Healed.
    ship(&a, &b).await;
    ship(&b, &a).await;
    for s in [&a, &b] {
        assert_eq!(
            s.vcard("dora").await.unwrap().as_deref(),
            Some("<vCard xmlns='vcard-temp'><FN>B</FN></vCard>")
        );
        assert_eq!(
            s.private_item("dora", "{s}s").await.unwrap().as_deref(),
            Some("<s xmlns='s'>2</s>")
        );
        assert_eq!(
            s.last_activity("dora").await.unwrap().unwrap().status,
            "gone from dc2"
        );
    }
    // A deletion at dc1 wins over the older vCard at dc2, and stays deleted.
    a.set_vcard("dora", None).await.unwrap();
    ship(&a, &b).await;
    assert_eq!(b.vcard("dora").await.unwrap(), None);
    assert_eq!(ship(&a, &b).await, 0);
}

#[tokio::test]
async fn documents_travel_in_a_full_copy_and_go_with_their_account() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_dora(&[&a, &b]).await;
    a.set_vcard("dora", Some("<vCard xmlns='vcard-temp'/>"))
        .await
        .unwrap();
    a.set_private("dora", &[item("{s}s", "<s xmlns='s'/>")], 1000)
        .await
        .unwrap();
    a.set_last_activity("dora", "bye").await.unwrap();
    let c = dc("dc3").await;
    c.apply_copy(&a.copy_records().await.unwrap())
        .await
        .unwrap();
    assert!(c.vcard("dora").await.unwrap().is_some());
    assert!(c.private_item("dora", "{s}s").await.unwrap().is_some());
    let last = c.last_activity("dora").await.unwrap().unwrap();
    assert_eq!(last.status, "bye");
    assert_eq!(Some(last), a.last_activity("dora").await.unwrap());

    // Deleted at dc2 (after following dc1): gone at dc1 too.
    ship(&a, &b).await;
    assert!(b.delete_account("dora").await.unwrap());
    ship(&b, &a).await;
    assert_eq!(a.vcard("dora").await.unwrap(), None);
    assert_eq!(a.private_item("dora", "{s}s").await.unwrap(), None);
    assert_eq!(a.last_activity("dora").await.unwrap(), None);
    // Registered again: nothing of the old account comes back.
    a.create_account("dora", &Credentials::derive("p", 16).unwrap())
        .await
        .unwrap();
    ship(&a, &b).await;
    assert_eq!(b.vcard("dora").await.unwrap(), None);
}

/// XEP-0153: the photo hash stored beside the vCard is computed where the vCard is written
/// and where it is applied, so it follows the winning vCard at every DC.
#[tokio::test]
async fn the_photo_hash_follows_the_winning_vcard_at_every_dc() {
    let (a, b) = (dc("dc1").await, dc("dc2").await);
    with_dora(&[&a, &b]).await;
    let photo = |b64: &str| {
        format!("<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO></vCard>")
    };
    // SHA-1 of "hello" and of "world".
    let (hello, world) = (
        "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
        "7c211433f02071597741e6ff5a8ea34789abbf43",
    );
    assert_eq!(a.vcard_photo_hash("dora").await.unwrap(), "", "no vCard");
    // Cut apart: both set a photo; dc2 writes later.
    a.set_vcard("dora", Some(&photo("aGVsbG8="))).await.unwrap();
    assert_eq!(a.vcard_photo_hash("dora").await.unwrap(), hello);
    b.set_vcard("dora", Some(&photo("d29y\n bGQ=")))
        .await
        .unwrap();
    ship(&a, &b).await;
    ship(&b, &a).await;
    for s in [&a, &b] {
        assert_eq!(s.vcard_photo_hash("dora").await.unwrap(), world);
    }
    // A vCard without a photo, and one whose photo does not decode: no hash.
    a.set_vcard("dora", Some("<vCard xmlns='vcard-temp'><FN>D</FN></vCard>"))
        .await
        .unwrap();
    ship(&a, &b).await;
    assert_eq!(b.vcard_photo_hash("dora").await.unwrap(), "");
    a.set_vcard("dora", Some(&photo("%%%"))).await.unwrap();
    assert_eq!(a.vcard_photo_hash("dora").await.unwrap(), "");
    // A body written by a process of an earlier version (the hash columns left as they
    // were): the hash is the body's, not the stale one.
    a.set_vcard("dora", Some(&photo("aGVsbG8="))).await.unwrap();
    sqlx::query("UPDATE vcards SET body = $1, hlc = hlc + 1 WHERE username = 'dora'")
        .bind(photo("d29ybGQ="))
        .execute(a.pool())
        .await
        .unwrap();
    assert_eq!(a.vcard_photo_hash("dora").await.unwrap(), world);
    let both = a
        .vcard_photo_hashes(&["dora".to_owned(), "nobody".to_owned()])
        .await
        .unwrap();
    assert_eq!(both, vec![("dora".to_owned(), world.to_owned())]);
    // Deleted: no hash.
    a.set_vcard("dora", None).await.unwrap();
    ship(&a, &b).await;
    assert_eq!(b.vcard_photo_hash("dora").await.unwrap(), "");
}
