//! Personal data at one DC (issue 17), as a client sees it: vCards (XEP-0054), private XML
//! storage (XEP-0049), entity time (XEP-0202), last activity (XEP-0012) and their disco
//! features — and every limit and refusal a hostile or mistaken client meets.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;

use meerkat_testkit::client::pred::presence_of_type;
use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::personal::{last_activity, private_get, vcard_name};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{befriend, dc, online, user};

fn vcard(fn_: &str) -> Element {
    Element::new("vCard", ns::VCARD).with_child(Element::new("FN", ns::VCARD).with_text(fn_))
}

fn private(children: Vec<Element>) -> Element {
    let mut q = Element::new("query", ns::PRIVATE);
    for c in children {
        q.push_child(c);
    }
    q
}

/// Alice (her name and her client) and Bob, logged in at `dc`.
async fn alice_and_bob(dc: &Dc) -> (String, Client, Client) {
    let alice = user("alice");
    let a = online(dc, &alice, "phone").await;
    let b = online(dc, &user("bob"), "desk").await;
    (alice, a, b)
}

async fn condition(c: &mut Client, ty: &str, to: Option<&str>, payload: Element) -> String {
    let r = c.iq(ty, to, payload).await.unwrap();
    stanza_error_condition(&r).unwrap_or_else(|| "result".into())
}

#[tokio::test]
async fn vcards_are_set_by_their_owner_read_by_anyone_and_bounded() {
    let dc = roomy_dc().await;
    let (_, mut a, mut b) = alice_and_bob(&dc).await;
    let aj = a.bare_jid().to_owned();

    // No vCard yet: an empty one, as ejabberd and Prosody answer.
    let r = b
        .iq_ok("get", Some(&aj), Element::new("vCard", ns::VCARD))
        .await
        .unwrap();
    let v = r.get_child("vCard", ns::VCARD).unwrap();
    assert_eq!(v.children().count(), 0, "{r}");

    a.iq_ok("set", None, vcard("Alice Liddell")).await.unwrap();
    for (who, to) in [(&mut a, None), (&mut b, Some(aj.as_str()))] {
        let r = who
            .iq_ok("get", to, Element::new("vCard", ns::VCARD))
            .await
            .unwrap();
        assert_eq!(vcard_name(&r).as_deref(), Some("Alice Liddell"));
    }

    // Bob cannot set Alice's.
    assert_eq!(
        condition(&mut b, "set", Some(&aj), vcard("Mallory")).await,
        "forbidden"
    );
    // An unknown account has none to give.
    let ghost = format!("{}@example.com", user("ghost"));
    assert_eq!(
        condition(
            &mut b,
            "get",
            Some(&ghost),
            Element::new("vCard", ns::VCARD)
        )
        .await,
        "service-unavailable"
    );
    // Past the 200 KiB limit (within the 256 KiB stanza limit): not-acceptable, and the old
    // vCard stays.
    let photo = Element::new("PHOTO", ns::VCARD)
        .with_child(Element::new("BINVAL", ns::VCARD).with_text("A".repeat(210 * 1024)));
    assert_eq!(
        condition(&mut a, "set", None, vcard("Too big").with_child(photo)).await,
        "not-acceptable"
    );
    // A 128 KiB avatar, base64-encoded, fits.
    let avatar = Element::new("PHOTO", ns::VCARD)
        .with_child(Element::new("TYPE", ns::VCARD).with_text("image/png"))
        .with_child(Element::new("BINVAL", ns::VCARD).with_text("B".repeat(128 * 1024 * 4 / 3)));
    a.iq_ok("set", None, vcard("Alice").with_child(avatar))
        .await
        .unwrap();
    let r = b
        .iq_ok("get", Some(&aj), Element::new("vCard", ns::VCARD))
        .await
        .unwrap();
    assert!(
        r.to_xml().len() > 128 * 1024 * 4 / 3,
        "the avatar came back"
    );
    // An empty vCard deletes it.
    a.iq_ok("set", None, Element::new("vCard", ns::VCARD))
        .await
        .unwrap();
    let r = b
        .iq_ok("get", Some(&aj), Element::new("vCard", ns::VCARD))
        .await
        .unwrap();
    assert_eq!(
        r.get_child("vCard", ns::VCARD).unwrap().children().count(),
        0
    );
}

/// A DC whose gateway lets a client send 10 MB/s: at the default 50 kB/s, the megabyte these
/// tests send would take 20 s.
async fn roomy_dc() -> Dc {
    Dc::start(StackOptions {
        gateway: Some(c2s_gateway::Config {
            client_bytes_per_sec: NonZeroU32::new(10_000_000).unwrap(),
            ..c2s_gateway::Config::default()
        }),
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

/// The `<photo>` of a presence's `vcard-temp:x:update` child (`Some("")` for `<photo/>`),
/// `None` without one; fails on two such children.
fn photo(p: &Element) -> Option<String> {
    let xs: Vec<&Element> = p
        .children()
        .filter(|c| c.is("x", ns::VCARD_UPDATE))
        .collect();
    assert!(xs.len() <= 1, "one vcard-temp:x:update at most: {p}");
    xs.first()
        .map(|x| x.child_text("photo", ns::VCARD_UPDATE).expect("a photo"))
}

fn presence_with_status(status: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_child(Element::new("status", ns::CLIENT).with_text(status))
}

/// XEP-0153 (as ejabberd's mod_vcard_xupdate): the server says what it knows of the avatar in
/// every available presence, whatever the client claimed.
#[tokio::test]
async fn presence_carries_the_photo_hash_of_the_stored_vcard() {
    let dc = dc().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a = online(&dc, &alice, "phone").await;
    let mut b = online(&dc, &bob, "desk").await;
    a.send_presence().await.unwrap();
    b.send_presence().await.unwrap();
    befriend(&mut a, &mut b).await;
    let aj = a.jid().to_owned();
    let from_alice = |status: &'static str| {
        let aj = aj.clone();
        move |el: &Element| {
            el.is("presence", ns::CLIENT)
                && el.attr("from") == Some(aj.as_str())
                && el.child_text("status", ns::CLIENT).as_deref() == Some(status)
        }
    };

    // No vCard: an empty <photo/>.
    a.send(&presence_with_status("no vcard")).await.unwrap();
    let p = b.expect("no vcard", from_alice("no vcard")).await.unwrap();
    assert_eq!(photo(&p).as_deref(), Some(""), "{p}");

    // A vCard with a photo (the bytes "hello", base64 with a line break as clients send it).
    let mut v = Element::new("vCard", ns::VCARD);
    v.push_child(
        Element::new("PHOTO", ns::VCARD)
            .with_child(Element::new("TYPE", ns::VCARD).with_text("image/png"))
            .with_child(Element::new("BINVAL", ns::VCARD).with_text("aGVs\nbG8=")),
    );
    a.iq_ok("set", None, v).await.unwrap();
    // Her client forges another hash: the server's replaces it.
    let hello = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let forged = presence_with_status("forged").with_child(
        Element::new("x", ns::VCARD_UPDATE)
            .with_child(Element::new("photo", ns::VCARD_UPDATE).with_text("deadbeef")),
    );
    a.send(&forged).await.unwrap();
    let p = b.expect("forged", from_alice("forged")).await.unwrap();
    assert_eq!(photo(&p).as_deref(), Some(hello), "{p}");

    // A directed presence too.
    let bj = b.bare_jid().to_owned();
    a.send(&presence_with_status("directed").with_attr("to", &bj))
        .await
        .unwrap();
    let p = b.expect("directed", from_alice("directed")).await.unwrap();
    assert_eq!(photo(&p).as_deref(), Some(hello), "{p}");

    // Carol's subscription is approved: the presence she gets at once (Alice's last, her
    // client's, forged) is stamped as well.
    let mut c = online(&dc, &user("carol"), "laptop").await;
    c.send_presence().await.unwrap();
    let cj = c.bare_jid().to_owned();
    c.send(
        &Element::new("presence", ns::CLIENT)
            .with_attr("type", "subscribe")
            .with_attr("to", a.bare_jid().to_owned()),
    )
    .await
    .unwrap();
    a.expect("carol's request", presence_of_type(&cj, Some("subscribe")))
        .await
        .unwrap();
    a.send(
        &Element::new("presence", ns::CLIENT)
            .with_attr("type", "subscribed")
            .with_attr("to", cj.clone()),
    )
    .await
    .unwrap();
    let p = c
        .expect("Alice's presence on approval", from_alice("forged"))
        .await
        .unwrap();
    assert_eq!(photo(&p).as_deref(), Some(hello), "{p}");

    // Bob's new resource is answered with Alice's last presence (her client's, forged):
    // stamped as well.
    let mut b2 = Client::login(&dc.client(), &bob, "secret-pw", Some("tablet"))
        .await
        .unwrap();
    b2.send_presence().await.unwrap();
    let p = b2.expect("forged", from_alice("forged")).await.unwrap();
    assert_eq!(photo(&p).as_deref(), Some(hello), "{p}");

    // A photo that does not decode is no photo; unavailable presence carries none.
    let bad = Element::new("vCard", ns::VCARD).with_child(
        Element::new("PHOTO", ns::VCARD)
            .with_child(Element::new("BINVAL", ns::VCARD).with_text("%%% not base64")),
    );
    a.iq_ok("set", None, bad).await.unwrap();
    a.send(&presence_with_status("bad photo")).await.unwrap();
    let p = b
        .expect("bad photo", from_alice("bad photo"))
        .await
        .unwrap();
    assert_eq!(photo(&p).as_deref(), Some(""), "{p}");
    a.send(
        &presence_with_status("bye")
            .with_attr("type", "unavailable")
            .with_child(
                Element::new("x", ns::VCARD_UPDATE)
                    .with_child(Element::new("photo", ns::VCARD_UPDATE)),
            ),
    )
    .await
    .unwrap();
    let p = b.expect("bye", from_alice("bye")).await.unwrap();
    assert_eq!(p.attr("type"), Some("unavailable"));
    assert_eq!(
        p.children().filter(|c| c.is("x", ns::VCARD_UPDATE)).count(),
        1,
        "left as the client sent it: {p}"
    );
}

#[tokio::test]
async fn private_storage_is_the_owners_only_and_bounded() {
    let dc = roomy_dc().await;
    let (_, mut a, mut b) = alice_and_bob(&dc).await;
    let aj = a.bare_jid().to_owned();
    let bookmarks = |name: &str| {
        Element::new("storage", "storage:bookmarks").with_child(
            Element::new("conference", "storage:bookmarks")
                .with_attr("jid", "room@conference.example.com")
                .with_attr("name", name),
        )
    };

    // Nothing stored: the empty element back.
    let stored = private_get(&mut a, "storage", "storage:bookmarks")
        .await
        .unwrap();
    assert_eq!(stored.children().count(), 0);

    a.iq_ok("set", Some(&aj), private(vec![bookmarks("Tea party")]))
        .await
        .unwrap();
    let stored = private_get(&mut a, "storage", "storage:bookmarks")
        .await
        .unwrap();
    let conf = stored.get_child("conference", "storage:bookmarks").unwrap();
    assert_eq!(conf.attr("name"), Some("Tea party"));
    // Another namespace under the same name is another item.
    let notes = private_get(&mut a, "storage", "storage:rosternotes")
        .await
        .unwrap();
    assert_eq!(notes.children().count(), 0);

    // Someone else's: forbidden, either way.
    for ty in ["get", "set"] {
        assert_eq!(
            condition(&mut b, ty, Some(&aj), private(vec![bookmarks("x")])).await,
            "forbidden"
        );
    }
    // The protocol's own namespaces, and nothing named: not-acceptable.
    for reserved in [ns::PRIVATE, ns::CLIENT, ns::SERVER] {
        let payload = private(vec![Element::new("x", reserved)]);
        assert_eq!(
            condition(&mut a, "set", None, payload).await,
            "not-acceptable"
        );
    }
    assert_eq!(
        condition(&mut a, "get", None, private(vec![])).await,
        "not-acceptable"
    );
    // One element past 64 KiB: not-acceptable.
    let big = Element::new("big", "urn:example:big").with_text("z".repeat(65 * 1024));
    assert_eq!(
        condition(&mut a, "set", None, private(vec![big])).await,
        "not-acceptable"
    );
    // The account's 1 MiB in all: resource-constraint, and that request stores nothing.
    let chunk =
        |i: usize| Element::new(format!("c{i}"), "urn:example:fill").with_text("f".repeat(60_000));
    let mut last = String::new();
    for set in 0..6 {
        last = condition(
            &mut a,
            "set",
            None,
            private((0..3).map(|i| chunk(set * 3 + i)).collect()),
        )
        .await;
        if last != "result" {
            break;
        }
    }
    assert_eq!(last, "resource-constraint");
    let r = private_get(&mut a, "c17", "urn:example:fill")
        .await
        .unwrap();
    assert!(r.text().is_empty(), "the refused request stored nothing");
}

#[tokio::test]
async fn time_last_activity_and_disco() {
    let dc = dc().await;
    let (alice, mut a, mut b) = alice_and_bob(&dc).await;
    let aj = a.bare_jid().to_owned();
    // Never logged out: nothing known.
    assert_eq!(
        condition(&mut a, "get", Some(&aj), Element::new("query", ns::LAST)).await,
        "item-not-found"
    );

    let r = a
        .iq_ok("get", Some("example.com"), Element::new("time", ns::TIME))
        .await
        .unwrap();
    let t = r.get_child("time", ns::TIME).unwrap();
    assert_eq!(t.child_text("tzo", ns::TIME).as_deref(), Some("+00:00"));
    let utc = t.child_text("utc", ns::TIME).unwrap();
    assert!(
        utc.starts_with("20") && utc.ends_with('Z') && utc.contains('T'),
        "{utc}"
    );

    // The server's uptime.
    let r = a
        .iq_ok("get", Some("example.com"), Element::new("query", ns::LAST))
        .await
        .unwrap();
    assert!(last_activity(&r).is_some(), "{r}");
    // A stranger may not know when Alice was last seen; Alice may, and she is online: 0.
    a.send_presence().await.unwrap();
    assert_eq!(
        condition(&mut b, "get", Some(&aj), Element::new("query", ns::LAST)).await,
        "forbidden"
    );
    let r = a
        .iq_ok("get", Some(&aj), Element::new("query", ns::LAST))
        .await
        .unwrap();
    assert_eq!(last_activity(&r), Some((0, String::new())));
    assert_eq!(
        condition(&mut a, "set", Some(&aj), Element::new("query", ns::LAST)).await,
        "bad-request"
    );

    // A request to a user's full JID is the client's to answer: routed to it.
    let ask = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", "time-1")
        .with_attr("to", a.jid())
        .with_child(Element::new("time", ns::TIME));
    b.send(&ask).await.unwrap();
    let got = a
        .expect("Bob's time request", |e| {
            e.is("iq", ns::CLIENT) && e.attr("id") == Some("time-1")
        })
        .await
        .unwrap();
    assert_eq!(got.attr("from"), Some(b.jid()));

    // A logout's status is kept, cut at 1024 characters; the account's other session (not
    // available) reads it.
    let mut gone = Client::login(&dc.client(), &alice, "secret-pw", Some("gone"))
        .await
        .unwrap();
    gone.send_presence().await.unwrap();
    a.send(&Element::new("presence", ns::CLIENT).with_attr("type", "unavailable"))
        .await
        .unwrap();
    let bye = Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_child(Element::new("status", ns::CLIENT).with_text("s".repeat(5000)));
    gone.send(&bye).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        let r = a
            .iq("get", Some(&aj), Element::new("query", ns::LAST))
            .await
            .unwrap();
        let text = last_activity(&r).map(|(_, t)| t).unwrap_or_default();
        if !text.is_empty() || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status.len(), 1024);

    let r = a
        .iq_ok(
            "get",
            Some("example.com"),
            Element::new("query", ns::DISCO_INFO),
        )
        .await
        .unwrap();
    let features: Vec<&str> = r
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [ns::VCARD, ns::PRIVATE, ns::TIME, ns::LAST] {
        assert!(features.contains(&f), "{f} not advertised: {r}");
    }
}
