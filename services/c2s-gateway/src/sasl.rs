//! SASL authentication (RFC 6120 §6): SCRAM-SHA-256, SCRAM-SHA-1 and, inside TLS only,
//! PLAIN, against the salted keys in PostgreSQL. Failures are answered with the RFC's
//! condition. Every attempt is counted by the throttles (per address, per account) before it
//! is verified: over a limit it is answered `<temporary-auth-failure/>` unverified, and failures
//! from an address that failed often are answered more and more slowly (RFC 6120 §6.4.5 lets
//! a server limit retries; §6.5.12 names the condition for "try again later").

use std::net::SocketAddr;

use base64::Engine as _;
use meerkat_auth::{parse_plain, SaslError, ScramAlg, ScramServer};
use meerkat_xmpp::{ns, Element, Inbound};

use crate::conn::Transport;
use crate::handoff::End;
use crate::throttle::{Refused, Ticket};
use crate::Ctx;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Mechanisms offered on a stream, strongest first.
pub fn offered(secure: bool) -> &'static [&'static str] {
    if secure {
        &["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    } else {
        &["SCRAM-SHA-256", "SCRAM-SHA-1"]
    }
}

/// Which SASL profile an exchange speaks: RFC 6120 §6 (`<auth/>`, then a stream restart), or
/// XEP-0388's (`<authenticate/>`, no restart, inline features answered in `<success/>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Rfc6120,
    Sasl2,
}

impl Profile {
    fn ns(self) -> &'static str {
        match self {
            Profile::Rfc6120 => ns::SASL,
            Profile::Sasl2 => ns::SASL2,
        }
    }

    /// The initial response: the text of `<auth/>`, or SASL2's `<initial-response/>`.
    fn initial(self, auth: &Element) -> String {
        match self {
            Profile::Rfc6120 => auth.text(),
            Profile::Sasl2 => auth
                .child_text("initial-response", ns::SASL2)
                .unwrap_or_default(),
        }
    }
}

/// What an `<auth/>` or `<authenticate/>` carries as its initial response, decoded; the
/// condition to fail with when it is not base64.
pub fn initial_response(profile: Profile, auth: &Element) -> Result<Vec<u8>, &'static str> {
    decode(&profile.initial(auth)).map_err(|f| match f {
        Failure::Condition(c) => c,
        Failure::Sasl(e) => e.condition(),
        Failure::Throttled => "temporary-auth-failure",
    })
}

/// A successful exchange: the username, the fingerprint of the credentials the proof was
/// checked against (crate::accounts), and SASL2's additional data (base64), if any.
pub struct Authenticated {
    pub user: String,
    pub credentials: u64,
    pub additional: Option<String>,
}

/// SASL2's `<success/>` (XEP-0388 §2.6.1): the mechanism's additional data, the
/// authorization identifier (a bare JID, or the full JID of a resumed session), and what
/// inline features answered (`inline`, written as it is).
pub fn sasl2_success(additional: Option<&str>, jid: &str, inline: &str) -> String {
    let additional = additional
        .map(|a| format!("<additional-data>{a}</additional-data>"))
        .unwrap_or_default();
    format!(
        "<success xmlns='{}'>{additional}<authorization-identifier>{}</authorization-identifier>{inline}</success>",
        ns::SASL2,
        meerkat_xmpp::escape_text(jid)
    )
}

/// Runs one SASL exchange. On success: with RFC 6120's profile the success element is sent;
/// with SASL2's the caller sends it ([`sasl2_success`]), with what inline features answered.
pub async fn authenticate(
    ctx: &Ctx,
    t: &mut Transport,
    auth: &Element,
    peer: SocketAddr,
    allowed: bool,
    profile: Profile,
) -> Result<Option<Authenticated>, End> {
    let mechanism = auth.attr("mechanism").unwrap_or_default().to_owned();
    let mut ticket = None;
    let outcome = if !allowed {
        Err(Failure::Condition("encryption-required"))
    } else if !offered(t.is_secure()).contains(&mechanism.as_str()) {
        Err(Failure::Condition("invalid-mechanism"))
    } else {
        match initial_response(profile, auth) {
            Err(c) => Err(Failure::Condition(c)),
            Ok(initial) => match mechanism.as_str() {
                "PLAIN" => plain(ctx, &initial, peer, &mut ticket).await,
                "SCRAM-SHA-256" => {
                    scram(
                        ctx,
                        t,
                        ScramAlg::Sha256,
                        &initial,
                        peer,
                        &mut ticket,
                        profile,
                    )
                    .await?
                }
                _ => scram(ctx, t, ScramAlg::Sha1, &initial, peer, &mut ticket, profile).await?,
            },
        }
    };
    let label = |o: &str| crate::metrics::OutcomeLabel {
        outcome: o.to_owned(),
    };
    match outcome {
        Ok((user, fingerprint, server_final)) => {
            if let Some(ticket) = ticket {
                ctx.throttle.take_back(ticket);
            }
            ctx.metrics.auth.get_or_create(&label("success")).inc();
            let additional = server_final.map(|data| B64.encode(data));
            if profile == Profile::Rfc6120 {
                let body = additional.as_deref().unwrap_or_default();
                t.write(&format!("<success xmlns='{}'>{body}</success>", ns::SASL))
                    .await?;
            }
            tracing::debug!(%peer, user, mechanism, ?profile, "authenticated");
            Ok(Some(Authenticated {
                user,
                credentials: fingerprint,
                additional,
            }))
        }
        Err(failure) => {
            let (condition, outcome) = match failure {
                Failure::Condition(c) => (c, "failure"),
                Failure::Sasl(e) => (e.condition(), "failure"),
                Failure::Throttled => ("temporary-auth-failure", "throttled"),
            };
            ctx.metrics.auth.get_or_create(&label(outcome)).inc();
            if let Some(ticket) = ticket.filter(|_| condition == "not-authorized") {
                let delay = ctx.throttle.failure_delay(&ticket);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            // SASL2's failure carries RFC 6120's condition, in RFC 6120's namespace.
            t.write(&format!(
                "<failure xmlns='{}'><{condition} xmlns='{}'/></failure>",
                profile.ns(),
                ns::SASL
            ))
            .await?;
            Ok(None)
        }
    }
}

enum Failure {
    Condition(&'static str),
    Sasl(SaslError),
    /// Over a throttle's limit (or the throttle unreachable): not verified.
    Throttled,
}

/// Counts the attempt on `account` from the client's address; `Err` when it must not go on.
async fn count_attempt(
    ctx: &Ctx,
    peer: SocketAddr,
    account: &str,
    ticket: &mut Option<Ticket>,
) -> Result<(), Failure> {
    match ctx.throttle.authenticate(peer.ip(), account).await {
        Ok(t) => {
            *ticket = Some(t);
            Ok(())
        }
        Err(Refused::OverLimit | Refused::Unavailable) => Err(Failure::Throttled),
    }
}

/// The username, its credentials' fingerprint, and SCRAM's server-final message.
type Success = (String, u64, Option<Vec<u8>>);

fn decode(text: &str) -> Result<Vec<u8>, Failure> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    B64.decode(text)
        .map_err(|_| Failure::Condition("incorrect-encoding"))
}

/// Turns the SASL user name into our account name (nodeprep), refusing what can't be one.
fn account_name(name: &str) -> Option<String> {
    jid::NodePart::new(name).ok().map(|n| n.to_string())
}

async fn plain(
    ctx: &Ctx,
    initial: &[u8],
    peer: SocketAddr,
    ticket: &mut Option<Ticket>,
) -> Result<Success, Failure> {
    let auth = parse_plain(initial).map_err(Failure::Sasl)?;
    let name = account_name(&auth.authcid);
    count_attempt(ctx, peer, name.as_deref().unwrap_or(&auth.authcid), ticket).await?;
    let user = name.ok_or(Failure::Condition("not-authorized"))?;
    if let Some(authzid) = auth.authzid.as_deref().filter(|a| !a.is_empty()) {
        let own = format!("{user}@{}", ctx.config.domain);
        if authzid != own {
            return Err(Failure::Condition("invalid-authzid"));
        }
    }
    let creds = ctx
        .store
        .credentials(&user)
        .await
        .map_err(|_| Failure::Condition("temporary-auth-failure"))?;
    let Some(c) = creds else {
        return Err(Failure::Condition("not-authorized"));
    };
    let fingerprint = crate::accounts::fingerprint(&c);
    // PLAIN derives the password's PBKDF2 key on every login (milliseconds): on the blocking
    // pool, so that a burst of logins does not hold up the other connections of the same
    // async worker (their TLS handshakes, their stanzas).
    let password = auth.password;
    match tokio::task::spawn_blocking(move || c.verify_plain(&password)).await {
        Ok(true) => Ok((user, fingerprint, None)),
        Ok(false) => Err(Failure::Condition("not-authorized")),
        Err(_) => Err(Failure::Condition("temporary-auth-failure")),
    }
}

async fn scram(
    ctx: &Ctx,
    t: &mut Transport,
    alg: ScramAlg,
    client_first: &[u8],
    peer: SocketAddr,
    ticket: &mut Option<Ticket>,
    profile: Profile,
) -> Result<Result<Success, Failure>, End> {
    let (mut server, name) = match ScramServer::start(alg, client_first) {
        Ok(ok) => ok,
        Err(e) => return Ok(Err(Failure::Sasl(e))),
    };
    server.set_fake_salt_secret(ctx.config.scram_secret.expose().as_bytes());
    let user = account_name(&name);
    // Counted before anything is verified; the credentials are fetched meanwhile (two
    // statements on two pooled connections, so a login waits for the slower one only).
    let fetch = async {
        match &user {
            Some(u) => ctx.store.credentials(u).await.map_err(|_| ()),
            None => Ok(None),
        }
    };
    let (counted, creds) = tokio::join!(
        count_attempt(ctx, peer, user.as_deref().unwrap_or(&name), ticket),
        fetch
    );
    if let Err(f) = counted {
        return Ok(Err(f));
    }
    let Ok(creds) = creds else {
        return Ok(Err(Failure::Condition("temporary-auth-failure")));
    };
    let server_first = server.server_first(creds.as_ref().map(|c| c.get(alg)));
    t.write(&format!(
        "<challenge xmlns='{}'>{}</challenge>",
        profile.ns(),
        B64.encode(server_first)
    ))
    .await?;
    let response = match t.read().await? {
        Inbound::Stanza(el) if el.is("response", profile.ns()) => el,
        Inbound::Stanza(el) if el.is("abort", profile.ns()) => {
            return Ok(Err(Failure::Condition("aborted")))
        }
        Inbound::Close => return Err(End::ClientClosed),
        _ => return Ok(Err(Failure::Condition("malformed-request"))),
    };
    let client_final = match decode(&response.text()) {
        Ok(b) => b,
        Err(f) => return Ok(Err(f)),
    };
    let fingerprint = creds.as_ref().map(crate::accounts::fingerprint);
    match (server.client_final(&client_final), user, fingerprint) {
        (Ok(server_final), Some(user), Some(fp)) => Ok(Ok((user, fp, Some(server_final)))),
        (Ok(_), _, _) => Ok(Err(Failure::Condition("not-authorized"))),
        (Err(e), _, _) => Ok(Err(Failure::Sasl(e))),
    }
}
