//! PEP at one DC (issue 17), as clients see it: an avatar (XEP-0084), bookmarks (XEP-0402)
//! with publish-options and an OMEMO device list (XEP-0384) open to anyone; notifications to
//! contacts and the owner filtered by verified caps (XEP-0115), a lying caps hash not
//! believed; the last item at login; the access models' refusals; the limits and what a
//! malformed request gets.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::time::Duration;

use base64::Engine as _;
use meerkat_testkit::client::{stanza_error_condition, Client};
use meerkat_testkit::pep::{
    avatar_metadata, items, notified, notifies, publish, pubsub_condition, result_items, Caps,
    BOOKMARK_OPTIONS, PUBSUB, PUBSUB_OWNER,
};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{befriend, user};

const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";

/// A DC whose gateways let a client send a 128 KiB avatar at once.
async fn roomy_dc(pep_limits: Option<(u32, u32)>) -> Dc {
    Dc::start(StackOptions {
        gateway: Some(c2s_gateway::Config {
            client_bytes_per_sec: NonZeroU32::new(10_000_000).unwrap(),
            ..c2s_gateway::Config::default()
        }),
        pep_limits,
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

async fn login(dc: &Dc, name: &str, resource: &str, register: bool) -> Client {
    let cfg = dc.client();
    if register {
        let mut c = Client::connect(&cfg).await.unwrap();
        c.register(name, "secret-pw").await.unwrap().unwrap();
    }
    Client::login(&cfg, name, "secret-pw", Some(resource))
        .await
        .unwrap()
}

const MOOD: &str = "http://jabber.org/protocol/mood";

/// Publishes the client's mood (XEP-0107) as item `current`.
async fn set_mood(c: &mut Client, feeling: &str) {
    let m = payload("mood", MOOD).with_child(payload(feeling, MOOD));
    c.iq_ok("set", None, publish(MOOD, "current", m, &[]))
        .await
        .unwrap();
}

fn payload(name: &str, ns_: &str) -> Element {
    Element::new(name, ns_)
}

async fn outcome(c: &mut Client, ty: &str, to: Option<&str>, p: Element) -> (String, String) {
    let r = c.iq(ty, to, p).await.unwrap();
    (
        stanza_error_condition(&r).unwrap_or_else(|| "result".into()),
        pubsub_condition(&r).unwrap_or_default(),
    )
}

fn is_notification(m: &Element) -> bool {
    m.is("message", ns::CLIENT) && m.has_child("event", meerkat_testkit::pep::PUBSUB_EVENT)
}

#[tokio::test]
async fn avatar_bookmarks_and_devices_are_published_notified_and_guarded() {
    let dc = roomy_dc(None).await;
    let (alice, bob, eve) = (user("alice"), user("bob"), user("eve"));
    let mut a = login(&dc, &alice, "phone", true).await;
    let mut b = login(&dc, &bob, "desk", true).await;
    let mut e = login(&dc, &eve, "evil", true).await;
    let aj = a.bare_jid().to_owned();
    let wants = [AVATAR_META, BOOKMARKS, DEVICES];
    Caps::new(&wants).announce(&mut a).await.unwrap();
    Caps::new(&wants).announce(&mut b).await.unwrap();
    befriend(&mut a, &mut b).await;

    // The account is a PEP service.
    let r = b
        .iq_ok("get", Some(&aj), Element::new("query", ns::DISCO_INFO))
        .await
        .unwrap();
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    assert!(q.children().any(|i| i.is("identity", ns::DISCO_INFO)
        && i.attr("category") == Some("pubsub")
        && i.attr("type") == Some("pep")));
    for f in [
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#access-whitelist",
    ] {
        assert!(q.children().any(|c| c.attr("var") == Some(f)), "{f} in {r}");
    }

    // A 128 KiB avatar, then its metadata.
    let png = vec![0x89u8; 128 * 1024];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let data = payload("data", AVATAR_DATA).with_text(b64.clone());
    a.iq_ok("set", None, publish(AVATAR_DATA, "hash1", data, &[]))
        .await
        .unwrap();
    let meta = avatar_metadata("hash1", 128 * 1024);
    a.iq_ok("set", None, publish(AVATAR_META, "hash1", meta, &[]))
        .await
        .unwrap();
    notified(&mut b, AVATAR_META, "hash1").await.unwrap();
    notified(&mut a, AVATAR_META, "hash1").await.unwrap();
    let r = b.iq_ok("get", Some(&aj), items(AVATAR_DATA)).await.unwrap();
    let got = result_items(&r);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "hash1");
    assert_eq!(got[0].1.text(), b64);
    // No caps wanted the data node: nobody was told of it.
    b.expect_none(Duration::from_millis(300), |m| {
        notifies(m, AVATAR_DATA, "hash1")
    })
    .await
    .unwrap();

    // Bookmarks: private (whitelist), kept, as XEP-0402 asks with publish-options.
    let opts = BOOKMARK_OPTIONS;
    for room in ["room1@muc.example.com", "room2@muc.example.com"] {
        let conf = payload("conference", BOOKMARKS).with_attr("autojoin", "true");
        a.iq_ok("set", None, publish(BOOKMARKS, room, conf, &opts))
            .await
            .unwrap();
        notified(&mut a, BOOKMARKS, room).await.unwrap();
    }
    let r = a.iq_ok("get", None, items(BOOKMARKS)).await.unwrap();
    assert_eq!(result_items(&r).len(), 2, "{r}");
    assert_eq!(
        outcome(&mut b, "get", Some(&aj), items(BOOKMARKS)).await,
        ("not-allowed".into(), "closed-node".into())
    );
    // publish-options that do not match the node: refused, nothing written.
    let conf = payload("conference", BOOKMARKS);
    let open = publish(
        BOOKMARKS,
        "room3@muc.example.com",
        conf,
        &[("pubsub#access_model", "open")],
    );
    assert_eq!(
        outcome(&mut a, "set", None, open).await,
        ("conflict".into(), "precondition-not-met".into())
    );
    let r = a.iq_ok("get", None, items(BOOKMARKS)).await.unwrap();
    assert_eq!(result_items(&r).len(), 2, "{r}");

    // OMEMO device list, open: a stranger may read it, not the avatar.
    let list = payload("list", "eu.siacs.conversations.axolotl")
        .with_child(Element::new("device", "eu.siacs.conversations.axolotl").with_attr("id", "42"));
    a.iq_ok(
        "set",
        None,
        publish(DEVICES, "current", list, &[("pubsub#access_model", "open")]),
    )
    .await
    .unwrap();
    notified(&mut b, DEVICES, "current").await.unwrap();
    let r = e.iq_ok("get", Some(&aj), items(DEVICES)).await.unwrap();
    assert!(
        r.to_xml().contains("id=\"42\"") || r.to_xml().contains("id='42'"),
        "{r}"
    );
    assert_eq!(
        outcome(&mut e, "get", Some(&aj), items(AVATAR_DATA)).await,
        (
            "not-authorized".into(),
            "presence-subscription-required".into()
        )
    );
    assert_eq!(
        outcome(&mut e, "get", Some(&aj), items("urn:nothing:here"))
            .await
            .0,
        "item-not-found"
    );
    // Nobody writes to another's service.
    let forged = publish(
        DEVICES,
        "current",
        payload("list", "eu.siacs.conversations.axolotl"),
        &[],
    );
    assert_eq!(
        outcome(&mut e, "set", Some(&aj), forged).await.0,
        "forbidden"
    );
    e.expect_none(Duration::from_millis(200), is_notification)
        .await
        .unwrap();

    // disco#items: the nodes each may see.
    let nodes = |r: &Element| -> Vec<String> {
        let mut n: Vec<String> = r
            .get_child("query", ns::DISCO_ITEMS)
            .map(|q| {
                q.children()
                    .filter_map(|i| i.attr("node").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    let r = b
        .iq_ok("get", Some(&aj), Element::new("query", ns::DISCO_ITEMS))
        .await
        .unwrap();
    assert_eq!(nodes(&r), vec![DEVICES, AVATAR_DATA, AVATAR_META]);
    let r = e
        .iq_ok("get", Some(&aj), Element::new("query", ns::DISCO_ITEMS))
        .await
        .unwrap();
    assert_eq!(nodes(&r), vec![DEVICES]);
    let r = a
        .iq_ok("get", None, Element::new("query", ns::DISCO_ITEMS))
        .await
        .unwrap();
    assert_eq!(nodes(&r).len(), 4, "{r}");

    // Retract with notify: Bob is told the metadata item went.
    let retract = Element::new("pubsub", PUBSUB).with_child(
        Element::new("retract", PUBSUB)
            .with_attr("node", AVATAR_META)
            .with_attr("notify", "true")
            .with_child(Element::new("item", PUBSUB).with_attr("id", "hash1")),
    );
    a.iq_ok("set", None, retract).await.unwrap();
    b.expect("the retraction", |m| {
        m.to_xml().contains("retract") && m.to_xml().contains(AVATAR_META)
    })
    .await
    .unwrap();
    let r = b.iq_ok("get", Some(&aj), items(AVATAR_META)).await.unwrap();
    assert!(result_items(&r).is_empty(), "{r}");
}

#[tokio::test]
async fn the_last_item_comes_at_login_and_a_lying_caps_hash_is_not_believed() {
    let dc = roomy_dc(None).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a = login(&dc, &alice, "phone", true).await;
    let mut b = login(&dc, &bob, "desk", true).await;
    Caps::new(&[]).announce(&mut a).await.unwrap();
    Caps::new(&[]).announce(&mut b).await.unwrap();
    befriend(&mut a, &mut b).await;
    let mood = MOOD;
    set_mood(&mut a, "happy").await;

    // Bob's tablet comes online wanting moods: the last one comes once its caps are verified.
    let mut tablet = login(&dc, &bob, "tablet", false).await;
    let honest = Caps::new(&[mood]);
    honest.announce(&mut tablet).await.unwrap();
    notified(&mut tablet, mood, "current").await.unwrap();

    // Bob's watch says it wants moods, under a ver that is not the hash of what it answers.
    let mut watch = login(&dc, &bob, "watch", false).await;
    let liar = Caps::new(&[mood]).with_wrong_ver();
    liar.announce(&mut watch).await.unwrap();
    set_mood(&mut a, "sad").await;
    tablet
        .expect("the new mood", |m| {
            notifies(m, mood, "current") && m.to_xml().contains("sad")
        })
        .await
        .unwrap();
    watch
        .expect_none(Duration::from_millis(500), is_notification)
        .await
        .unwrap();
    // Bob's desk never said it wants moods.
    b.expect_none(Duration::from_millis(100), is_notification)
        .await
        .unwrap();

    // Carol, who wants moods, subscribes: she gets the last mood once Alice approves.
    let mut c = login(&dc, &user("carol"), "pad", true).await;
    Caps::new(&[mood]).announce(&mut c).await.unwrap();
    befriend(&mut c, &mut a).await;
    c.expect("the last mood on subscription", |m| {
        notifies(m, mood, "current") && m.to_xml().contains("sad")
    })
    .await
    .unwrap();

    // Another resource with the honest caps is not asked again: the ver is known.
    let mut laptop = login(&dc, &bob, "laptop", false).await;
    laptop.send(&honest.presence()).await.unwrap();
    laptop
        .expect("the last mood at once", |m| {
            notifies(m, mood, "current") && m.to_xml().contains("sad")
        })
        .await
        .unwrap();
    assert!(
        !laptop.buffered().any(|s| s.is("iq", ns::CLIENT)),
        "asked again"
    );
}

#[tokio::test]
async fn limits_owner_operations_and_malformed_requests() {
    // Nodes keep at most 3 items; an account has at most 2 nodes.
    let dc = roomy_dc(Some((3, 2))).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let mut a = login(&dc, &alice, "phone", true).await;
    let mut b = login(&dc, &bob, "desk", true).await;
    let node = "urn:example:notes";
    let wants = [node];
    Caps::new(&wants).announce(&mut a).await.unwrap();
    Caps::new(&wants).announce(&mut b).await.unwrap();
    befriend(&mut a, &mut b).await;
    let aj = a.bare_jid().to_owned();
    let note = |t: &str| payload("note", "urn:example").with_text(t.to_owned());

    // An item past 200 KiB: not-acceptable / payload-too-big, nothing created.
    let big = note(&"x".repeat(210 * 1024));
    assert_eq!(
        outcome(&mut a, "set", None, publish(node, "big", big, &[])).await,
        ("not-acceptable".into(), "payload-too-big".into())
    );
    assert_eq!(
        outcome(&mut a, "get", None, items(node)).await.0,
        "item-not-found"
    );

    // max_items=max is the service's cap (3): the oldest go.
    for i in 0..5 {
        a.iq_ok(
            "set",
            None,
            publish(
                node,
                &format!("n{i}"),
                note("t"),
                &[("pubsub#max_items", "max")],
            ),
        )
        .await
        .unwrap();
    }
    let r = b.iq_ok("get", Some(&aj), items(node)).await.unwrap();
    let ids: Vec<String> = result_items(&r).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec!["n2", "n3", "n4"]);
    let newest = Element::new("pubsub", PUBSUB).with_child(
        Element::new("items", PUBSUB)
            .with_attr("node", node)
            .with_attr("max_items", "1"),
    );
    let r = b.iq_ok("get", Some(&aj), newest).await.unwrap();
    assert_eq!(
        result_items(&r)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec!["n4"]
    );
    let by_id = Element::new("pubsub", PUBSUB).with_child(
        Element::new("items", PUBSUB)
            .with_attr("node", node)
            .with_child(Element::new("item", PUBSUB).with_attr("id", "n3")),
    );
    let r = b.iq_ok("get", Some(&aj), by_id).await.unwrap();
    assert_eq!(
        result_items(&r)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec!["n3"]
    );
    // More than the cap in publish-options: the precondition cannot hold.
    assert_eq!(
        outcome(
            &mut a,
            "set",
            None,
            publish(node, "n9", note("t"), &[("pubsub#max_items", "4")])
        )
        .await,
        ("conflict".into(), "precondition-not-met".into())
    );

    // A second node, then a third: resource-constraint / max-nodes-exceeded.
    a.iq_ok("set", None, publish("urn:example:two", "1", note("t"), &[]))
        .await
        .unwrap();
    assert_eq!(
        outcome(
            &mut a,
            "set",
            None,
            publish("urn:example:three", "1", note("t"), &[])
        )
        .await,
        ("resource-constraint".into(), "max-nodes-exceeded".into())
    );

    // Malformed publishes: bad-request with XEP-0060's condition.
    let no_item = Element::new("pubsub", PUBSUB)
        .with_child(Element::new("publish", PUBSUB).with_attr("node", node));
    assert_eq!(
        outcome(&mut a, "set", None, no_item).await,
        ("bad-request".into(), "item-required".into())
    );
    let empty_item = Element::new("pubsub", PUBSUB).with_child(
        Element::new("publish", PUBSUB)
            .with_attr("node", node)
            .with_child(Element::new("item", PUBSUB)),
    );
    assert_eq!(
        outcome(&mut a, "set", None, empty_item).await,
        ("bad-request".into(), "payload-required".into())
    );

    // The owner configures; Bob may not.
    let configure = |n: &str| {
        Element::new("pubsub", PUBSUB_OWNER)
            .with_child(Element::new("configure", PUBSUB_OWNER).with_attr("node", n.to_owned()))
    };
    let r = a.iq_ok("get", None, configure(node)).await.unwrap();
    assert!(r.to_xml().contains("pubsub#access_model"), "{r}");
    assert_eq!(
        outcome(&mut b, "get", Some(&aj), configure(node)).await.0,
        "forbidden"
    );
    let form = meerkat_testkit::pep::options(&[("pubsub#max_items", "1")])
        .children()
        .next()
        .unwrap()
        .clone();
    // (a publish-options form under the node_config FORM_TYPE would be refused; none here)
    let mut form = form;
    form.remove_children(|f| f.attr("var") == Some("FORM_TYPE"));
    let set = Element::new("pubsub", PUBSUB_OWNER).with_child(
        Element::new("configure", PUBSUB_OWNER)
            .with_attr("node", node)
            .with_child(form),
    );
    a.iq_ok("set", None, set).await.unwrap();
    let r = b.iq_ok("get", Some(&aj), items(node)).await.unwrap();
    assert_eq!(
        result_items(&r)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec!["n4"]
    );

    // Purge, then delete: Bob is told of each.
    let owner_op = |verb: &str| {
        Element::new("pubsub", PUBSUB_OWNER)
            .with_child(Element::new(verb.to_owned(), PUBSUB_OWNER).with_attr("node", node))
    };
    a.iq_ok("set", None, owner_op("purge")).await.unwrap();
    b.expect("the purge", |m| m.to_xml().contains("purge"))
        .await
        .unwrap();
    let r = b.iq_ok("get", Some(&aj), items(node)).await.unwrap();
    assert!(result_items(&r).is_empty());
    assert_eq!(
        outcome(&mut b, "set", Some(&aj), owner_op("delete"))
            .await
            .0,
        "forbidden"
    );
    a.iq_ok("set", None, owner_op("delete")).await.unwrap();
    b.expect("the deletion", |m| m.to_xml().contains("delete"))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut b, "get", Some(&aj), items(node)).await.0,
        "item-not-found"
    );
    assert_eq!(
        outcome(&mut a, "set", None, owner_op("delete")).await.0,
        "item-not-found"
    );
    // The node no longer counts: a new one fits.
    a.iq_ok(
        "set",
        None,
        publish("urn:example:three", "1", note("t"), &[]),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn legacy_bookmarks_in_private_storage_are_the_pep_bookmarks() {
    let dc = roomy_dc(None).await;
    let alice = user("alice");
    let mut old = login(&dc, &alice, "old", true).await;
    let mut new = login(&dc, &alice, "new", false).await;
    Caps::new(&[BOOKMARKS]).announce(&mut new).await.unwrap();
    let r = new
        .iq_ok("get", None, Element::new("query", ns::DISCO_INFO))
        .await
        .unwrap();
    assert!(r.to_xml().contains("urn:xmpp:bookmarks:1#compat"), "{r}");
    let legacy = "storage:bookmarks";
    let storage = |rooms: &[&str]| {
        let mut s = Element::new("storage", legacy);
        for room in rooms {
            s.push_child(
                Element::new("conference", legacy)
                    .with_attr("jid", *room)
                    .with_attr("autojoin", "true")
                    .with_child(Element::new("nick", legacy).with_text("al")),
            );
        }
        Element::new("query", ns::PRIVATE).with_child(s)
    };

    // The XEP-0048 client stores two rooms; the XEP-0402 client is told and reads them.
    let (r1, r2, r3) = (
        "r1@muc.example.com",
        "r2@muc.example.com",
        "r3@muc.example.com",
    );
    old.iq_ok("set", None, storage(&[r1, r2])).await.unwrap();
    new.expect("the bookmarks notification", |m| {
        notifies(m, BOOKMARKS, r1) && notifies(m, BOOKMARKS, r2)
    })
    .await
    .unwrap();
    let r = new.iq_ok("get", None, items(BOOKMARKS)).await.unwrap();
    let got = result_items(&r);
    assert_eq!(got.len(), 2, "{r}");
    assert_eq!(got[0].1.attr("autojoin"), Some("true"));
    assert_eq!(
        got[0].1.child_text("nick", BOOKMARKS).as_deref(),
        Some("al")
    );

    // The XEP-0402 client adds a room: the XEP-0048 client reads three.
    let conf = payload("conference", BOOKMARKS).with_attr("autojoin", "false");
    new.iq_ok("set", None, publish(BOOKMARKS, r3, conf, &BOOKMARK_OPTIONS))
        .await
        .unwrap();
    let got = meerkat_testkit::personal::private_get(&mut old, "storage", legacy)
        .await
        .unwrap();
    let jids: Vec<&str> = got.children().filter_map(|c| c.attr("jid")).collect();
    assert_eq!(jids, vec![r1, r2, r3], "{got}");

    // The XEP-0048 client drops r2: the XEP-0402 client is told it went.
    old.iq_ok("set", None, storage(&[r1, r3])).await.unwrap();
    new.expect("the retraction of r2", |m| {
        m.to_xml().contains("retract") && m.to_xml().contains(r2)
    })
    .await
    .unwrap();
    let r = new.iq_ok("get", None, items(BOOKMARKS)).await.unwrap();
    let ids: Vec<String> = result_items(&r).into_iter().map(|(id, _)| id).collect();
    assert!(ids.len() == 2 && !ids.iter().any(|i| i == r2), "{r}");
}
