//! Sessions follow their account (docs/security/accounts-and-links.md): removing an account
//! ends every session of it and refuses a later bind; a password change ends every other
//! session; an account may bind only so many resources at once.

use meerkat_testkit::client::{stanza_error_condition, Client, Mechanism};
use meerkat_xmpp::{ns, Element};

use crate::{dc, user};

fn change_password(name: &str, password: &str) -> Element {
    Element::new("query", ns::REGISTER)
        .with_child(Element::new("username", ns::REGISTER).with_text(name))
        .with_child(Element::new("password", ns::REGISTER).with_text(password))
}

fn remove() -> Element {
    Element::new("query", ns::REGISTER).with_child(Element::new("remove", ns::REGISTER))
}

fn bind_iq(resource: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", "late-bind")
        .with_child(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("resource", ns::BIND).with_text(resource)),
        )
}

fn ping() -> Element {
    Element::new("ping", "urn:xmpp:ping")
}

/// Connected and authenticated as `name`, no resource bound yet.
async fn authenticated(
    cfg: &meerkat_testkit::client::ClientConfig,
    name: &str,
    pw: &str,
) -> Client {
    let mut c = Client::connect(cfg).await.expect("connect");
    c.authenticate(Mechanism::ScramSha256, name, pw)
        .await
        .expect("authenticate io")
        .expect("login");
    c
}

#[tokio::test]
async fn removing_the_account_ends_every_session_and_refuses_a_later_bind() {
    let dc = dc().await;
    let name = user("gone");
    let cfg = dc.client();
    Client::register_account(&cfg, &name, "pw-1").await.unwrap();
    let mut phone = Client::login(&cfg, &name, "pw-1", Some("phone"))
        .await
        .unwrap();
    let mut desk = Client::login(&cfg, &name, "pw-1", Some("desk"))
        .await
        .unwrap();
    // Authenticated before the removal, binds after it (the reported attack, from another
    // connection).
    let mut late = authenticated(&cfg, &name, "pw-1").await;

    let reply = phone.iq("set", None, remove()).await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(
        phone.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized")
    );
    assert_eq!(
        desk.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized"),
        "the account's other session ends too (XEP-0077 §3.2)"
    );
    late.send(&bind_iq("late")).await.unwrap();
    assert_eq!(
        late.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized"),
        "no resource is bound for a removed account"
    );
    assert!(
        late.buffered()
            .all(|el| el.get_child("bind", ns::BIND).is_none()),
        "no bind result was sent"
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn removing_the_account_before_binding_ends_the_stream() {
    let dc = dc().await;
    let name = user("unbound");
    let cfg = dc.client();
    Client::register_account(&cfg, &name, "pw-1").await.unwrap();
    let mut c = authenticated(&cfg, &name, "pw-1").await;
    let reply = c.iq("set", None, remove()).await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(
        c.expect_stream_end().await.unwrap().as_deref(),
        Some("not-authorized")
    );
    let mut again = Client::connect(&cfg).await.unwrap();
    assert_eq!(
        again
            .authenticate(Mechanism::ScramSha256, &name, "pw-1")
            .await
            .unwrap(),
        Err("not-authorized".to_owned())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn a_password_change_resets_the_accounts_other_sessions() {
    let dc = dc().await;
    let name = user("chpw");
    let cfg = dc.client();
    Client::register_account(&cfg, &name, "old-pw")
        .await
        .unwrap();
    let mut phone = Client::login(&cfg, &name, "old-pw", Some("phone"))
        .await
        .unwrap();
    let mut desk = Client::login(&cfg, &name, "old-pw", Some("desk"))
        .await
        .unwrap();
    let mut late = authenticated(&cfg, &name, "old-pw").await;
    // Another account's session is not touched.
    let other = user("bystander");
    Client::register_account(&cfg, &other, "pw").await.unwrap();
    let mut bystander = Client::login(&cfg, &other, "pw", Some("r")).await.unwrap();

    phone
        .iq_ok("set", None, change_password(&name, "new-pw"))
        .await
        .unwrap();
    assert_eq!(
        desk.expect_stream_end().await.unwrap().as_deref(),
        Some("reset"),
        "the other session must authenticate again"
    );
    late.send(&bind_iq("late")).await.unwrap();
    assert_eq!(
        late.expect_stream_end().await.unwrap().as_deref(),
        Some("reset"),
        "a bind with the old credentials is refused"
    );
    // The session that changed the password stays (as in Prosody), and so does the other
    // account's.
    phone.iq_ok("get", None, ping()).await.unwrap();
    bystander.iq_ok("get", None, ping()).await.unwrap();
    let mut c = Client::connect(&cfg).await.unwrap();
    assert_eq!(
        c.authenticate(Mechanism::ScramSha256, &name, "old-pw")
            .await
            .unwrap(),
        Err("not-authorized".to_owned())
    );
    let mut again = Client::login(&cfg, &name, "new-pw", Some("desk"))
        .await
        .unwrap();
    again.iq_ok("get", None, ping()).await.unwrap();
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn an_account_binds_at_most_ten_resources() {
    let dc = dc().await;
    let name = user("many");
    let cfg = dc.client();
    Client::register_account(&cfg, &name, "pw").await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..10 {
        sessions.push(
            Client::login(&cfg, &name, "pw", Some(&format!("r{i}")))
                .await
                .unwrap(),
        );
    }
    // The eleventh: RFC 6120 §7.6.2.1, <resource-constraint/> of type wait; the stream stays.
    let mut extra = authenticated(&cfg, &name, "pw").await;
    let bind = Element::new("bind", ns::BIND)
        .with_child(Element::new("resource", ns::BIND).with_text("r10"));
    let reply = extra.iq("set", None, bind).await.unwrap();
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&reply).as_deref(),
        Some("resource-constraint")
    );
    assert_eq!(
        reply
            .get_child("error", ns::CLIENT)
            .and_then(|e| e.attr("type")),
        Some("wait")
    );
    // Taking over a resource already bound replaces a session rather than adding one.
    let mut takeover = Client::login(&cfg, &name, "pw", Some("r0")).await.unwrap();
    assert_eq!(
        sessions[0].expect_stream_end().await.unwrap().as_deref(),
        Some("conflict")
    );
    takeover.iq_ok("get", None, ping()).await.unwrap();
    // Once a session ends there is room again, on the same stream that was refused.
    sessions.pop().unwrap().close().await.unwrap();
    let jid = extra.bind(Some("r10")).await.unwrap();
    assert_eq!(jid, format!("{name}@example.com/r10"));
    dc.stop().await.unwrap();
}
