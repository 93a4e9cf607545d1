//! Registration (XEP-0077) and SASL authentication against the real gateway and database.

use meerkat_testkit::client::{Client, ClientConfig, Mechanism};
use meerkat_testkit::stack::{Dc, StackOptions};
use meerkat_xmpp::{ns, Element};

use crate::{dc, user};

#[tokio::test]
async fn registration_then_scram_sha1_and_sha256_logins() {
    let dc = dc().await;
    let name = user("reg");
    let mut c = Client::connect(&dc.client()).await.unwrap();
    assert!(
        c.features().has_child("register", ns::REGISTER_FEATURE),
        "register feature after TLS"
    );
    c.register(&name, "pencil")
        .await
        .unwrap()
        .expect("first registration succeeds");

    // The same name again is a conflict.
    let mut c = Client::connect(&dc.client()).await.unwrap();
    assert_eq!(
        c.register(&name, "other").await.unwrap(),
        Err("conflict".to_owned())
    );
    // An invalid name is refused.
    let mut c2 = Client::connect(&dc.client()).await.unwrap();
    let bad = c2.register("bad@name/x", "pw").await.unwrap();
    assert!(
        matches!(
            bad.as_ref().map_err(String::as_str),
            Err("jid-malformed") | Err("not-acceptable")
        ),
        "{bad:?}"
    );
    let mut c3 = Client::connect(&dc.client()).await.unwrap();
    assert_eq!(
        c3.register(&user("empty"), "").await.unwrap(),
        Err("not-acceptable".to_owned())
    );

    for mech in [
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
        Mechanism::Plain,
    ] {
        let mut c = Client::connect(&dc.client()).await.unwrap();
        c.authenticate(mech, &name, "pencil")
            .await
            .unwrap()
            .expect("login succeeds");
        let jid = c.bind(Some("desk")).await.unwrap();
        assert_eq!(jid, format!("{name}@example.com/desk"));
        c.close().await.unwrap();
    }
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_not_authorized() {
    let dc = dc().await;
    let name = user("pw");
    let mut c = Client::connect(&dc.client()).await.unwrap();
    c.register(&name, "right").await.unwrap().unwrap();
    for mech in [
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ] {
        let mut c = Client::connect(&dc.client()).await.unwrap();
        assert_eq!(
            c.authenticate(mech, &name, "wrong").await.unwrap(),
            Err("not-authorized".to_owned())
        );
        let mut c = Client::connect(&dc.client()).await.unwrap();
        assert_eq!(
            c.authenticate(mech, &user("nobody"), "x").await.unwrap(),
            Err("not-authorized".to_owned())
        );
    }
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn plain_and_auth_are_refused_before_tls() {
    let dc = dc().await;
    let cfg = ClientConfig {
        starttls: false,
        ..dc.client()
    };
    let mut c = Client::connect(&cfg).await.unwrap();
    assert!(!c.is_encrypted());
    let starttls = c
        .features()
        .get_child("starttls", ns::TLS)
        .expect("starttls offered");
    assert!(starttls.has_child("required", ns::TLS));
    assert!(!c.mechanisms().contains(&"PLAIN".to_owned()));
    // In-band registration is offered after TLS only, and refused before it.
    assert!(!c.features().has_child("register", ns::REGISTER_FEATURE));
    let name = user("notls");
    assert_eq!(
        c.register(&name, "pw").await.unwrap(),
        Err("service-unavailable".to_owned())
    );
    let r = c
        .authenticate(Mechanism::Plain, "someone", "pw")
        .await
        .unwrap();
    assert_eq!(r, Err("encryption-required".to_owned()));
    // Nothing was created: the name can still be registered over TLS.
    let mut c = Client::connect(&dc.client()).await.unwrap();
    c.register(&name, "pw")
        .await
        .unwrap()
        .expect("registered over TLS");
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn plain_is_not_offered_without_tls_when_tls_is_optional() {
    let dc = Dc::start(StackOptions {
        tls_required: false,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let name = user("opt");
    let cfg = ClientConfig {
        starttls: false,
        ..dc.client()
    };
    let mut c = Client::connect(&cfg).await.unwrap();
    c.register(&name, "pw1").await.unwrap().unwrap();
    let mut c = Client::connect(&cfg).await.unwrap();
    assert!(c.mechanisms().contains(&"SCRAM-SHA-256".to_owned()));
    assert!(!c.mechanisms().contains(&"PLAIN".to_owned()));
    assert_eq!(
        c.authenticate(Mechanism::Plain, &name, "pw1")
            .await
            .unwrap(),
        Err("invalid-mechanism".to_owned())
    );
    let mut c = Client::connect(&cfg).await.unwrap();
    c.authenticate(Mechanism::ScramSha256, &name, "pw1")
        .await
        .unwrap()
        .unwrap();
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn registration_can_be_disabled() {
    let dc = Dc::start(StackOptions {
        registration: false,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut c = Client::connect(&dc.client()).await.unwrap();
    assert!(!c.features().has_child("register", ns::REGISTER_FEATURE));
    assert_eq!(
        c.register(&user("x"), "pw").await.unwrap(),
        Err("service-unavailable".to_owned())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn password_change_and_account_removal() {
    let dc = dc().await;
    let name = user("chg");
    let mut c = Client::connect(&dc.client()).await.unwrap();
    c.register(&name, "old").await.unwrap().unwrap();
    let mut s = Client::login(&dc.client(), &name, "old", Some("r"))
        .await
        .unwrap();
    let change = Element::new("query", ns::REGISTER)
        .with_child(Element::new("username", ns::REGISTER).with_text(name.clone()))
        .with_child(Element::new("password", ns::REGISTER).with_text("new"));
    let reply = s.iq("set", None, change).await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    let mut c = Client::connect(&dc.client()).await.unwrap();
    assert_eq!(
        c.authenticate(Mechanism::ScramSha256, &name, "old")
            .await
            .unwrap(),
        Err("not-authorized".to_owned())
    );
    let mut c = Client::connect(&dc.client()).await.unwrap();
    c.authenticate(Mechanism::ScramSha1, &name, "new")
        .await
        .unwrap()
        .expect("new password works");

    let remove =
        Element::new("query", ns::REGISTER).with_child(Element::new("remove", ns::REGISTER));
    let reply = s.iq("set", None, remove).await.unwrap();
    assert_eq!(reply.attr("type"), Some("result"));
    s.expect_stream_end().await.unwrap();
    let mut c = Client::connect(&dc.client()).await.unwrap();
    assert_eq!(
        c.authenticate(Mechanism::ScramSha256, &name, "new")
            .await
            .unwrap(),
        Err("not-authorized".to_owned())
    );
    dc.stop().await.unwrap();
}

#[tokio::test]
async fn direct_tls_login_and_server_generated_resource() {
    let dc = dc().await;
    let name = user("dtls");
    let mut c = Client::connect(&dc.client_direct_tls()).await.unwrap();
    assert!(c.is_encrypted());
    c.register(&name, "pw").await.unwrap().unwrap();
    let mut c = Client::connect(&dc.client_direct_tls()).await.unwrap();
    c.authenticate(Mechanism::ScramSha256, &name, "pw")
        .await
        .unwrap()
        .unwrap();
    let jid = c.bind(None).await.unwrap();
    let prefix = format!("{name}@example.com/");
    assert!(
        jid.starts_with(&prefix) && jid.len() > prefix.len(),
        "{jid}"
    );
    dc.stop().await.unwrap();
}
