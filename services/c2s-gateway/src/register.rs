//! In-band registration (XEP-0077): account creation before authentication, password
//! change and account removal after.

use std::net::SocketAddr;

use meerkat_auth::Credentials;
use meerkat_store::StoreError;
use meerkat_xmpp::stanza::{error_reply, iq_result, iq_result_with};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use crate::throttle::Refused;
use crate::Ctx;

fn form(instructions: &str) -> Element {
    Element::new("query", ns::REGISTER)
        .with_child(Element::new("instructions", ns::REGISTER).with_text(instructions))
        .with_child(Element::new("username", ns::REGISTER))
        .with_child(Element::new("password", ns::REGISTER))
}

/// `jabber:iq:register` before authentication. Each attempt from an address is counted (at
/// every gateway of the DC) before the account is created; over `registrations_per_address`
/// per window it is refused with `<resource-constraint/>` (XEP-0077 §3.3, type wait). An
/// attempt that fails (name taken, bad password) is taken back, as ejabberd does.
pub async fn before_auth(
    ctx: &Ctx,
    secure: bool,
    peer: SocketAddr,
    iq: &Element,
    query: &Element,
) -> Element {
    if !ctx.config.registration || (!secure && ctx.config.tls_required) {
        return error_reply(
            iq,
            &StanzaError::service_unavailable().text("in-band registration is disabled"),
        );
    }
    match StanzaType::of(iq) {
        StanzaType::Get => iq_result_with(iq, form("Choose a username and password.")),
        StanzaType::Set => {
            let (Some(username), Some(password)) = (
                query.child_text("username", ns::REGISTER),
                query.child_text("password", ns::REGISTER),
            ) else {
                return error_reply(
                    iq,
                    &StanzaError::bad_request().text("username and password are required"),
                );
            };
            let ticket = match ctx.throttle.register(peer.ip()).await {
                Ok(t) => t,
                Err(Refused::OverLimit) => {
                    tracing::info!(%peer, "registration refused: over the limit");
                    return error_reply(
                        iq,
                        &StanzaError::resource_constraint()
                            .text("too many registrations from your address; try again later"),
                    );
                }
                Err(Refused::Unavailable) => {
                    return error_reply(iq, &StanzaError::internal_server_error())
                }
            };
            match create(ctx, &username, &password).await {
                Ok(()) => iq_result(iq),
                Err(e) => {
                    // Before the reply: the client may retry with another name at once.
                    ctx.throttle.take_back_now(ticket).await;
                    error_reply(iq, &e)
                }
            }
        }
        _ => error_reply(iq, &StanzaError::bad_request()),
    }
}

async fn create(ctx: &Ctx, username: &str, password: &str) -> Result<(), StanzaError> {
    let name = jid::NodePart::new(username.trim())
        .map_err(|_| StanzaError::jid_malformed().text("not a valid username"))?
        .to_string();
    let creds = credentials(password).await?;
    match ctx.store.create_account(&name, &creds).await {
        Ok(()) => {
            tracing::info!(user = %name, "account registered");
            Ok(())
        }
        Err(StoreError::Conflict) => Err(StanzaError::conflict().text("username taken")),
        Err(e) => {
            tracing::error!(error = %e, "registration failed");
            Err(StanzaError::internal_server_error())
        }
    }
}

/// Derives the stored credentials of `password`: two PBKDF2 derivations of milliseconds each,
/// on the blocking pool, so that a registration does not hold up the other connections the
/// same async worker serves.
async fn credentials(password: &str) -> Result<Credentials, StanzaError> {
    if password.is_empty() {
        return Err(StanzaError::not_acceptable().text("the password must not be empty"));
    }
    let password = password.to_owned();
    let derived = tokio::task::spawn_blocking(move || {
        Credentials::derive(&password, Credentials::DEFAULT_ITERATIONS)
    })
    .await
    .map_err(|_| StanzaError::internal_server_error())?;
    derived.map_err(|_| {
        StanzaError::not_acceptable().text("the password contains characters that are not allowed")
    })
}

/// What an authenticated user's registration request did to the account.
pub enum AccountChange {
    None,
    /// The account is gone: the stream must end with `<not-authorized/>` (XEP-0077 §3.2).
    Removed,
    /// New credentials, by their fingerprint (`crate::accounts`): the session that changed
    /// them keeps going with them; the account's other sessions end.
    Credentials(u64),
}

/// `jabber:iq:register` from an authenticated user: get (registered), password change,
/// removal. The caller records what changed, then announces it (`accounts::announce`).
pub async fn after_auth(
    ctx: &Ctx,
    user: &str,
    iq: &Element,
    query: &Element,
) -> (Element, AccountChange) {
    match StanzaType::of(iq) {
        StanzaType::Get => (
            iq_result_with(
                iq,
                Element::new("query", ns::REGISTER)
                    .with_child(Element::new("registered", ns::REGISTER))
                    .with_child(Element::new("username", ns::REGISTER).with_text(user)),
            ),
            AccountChange::None,
        ),
        StanzaType::Set if query.has_child("remove", ns::REGISTER) => {
            match ctx.store.delete_account(user).await {
                Ok(_) => {
                    tracing::info!(user, "account removed");
                    (iq_result(iq), AccountChange::Removed)
                }
                Err(e) => {
                    tracing::error!(error = %e, "account removal failed");
                    (
                        error_reply(iq, &StanzaError::internal_server_error()),
                        AccountChange::None,
                    )
                }
            }
        }
        StanzaType::Set => {
            let name_ok = query
                .child_text("username", ns::REGISTER)
                .is_none_or(|n| jid::NodePart::new(n.trim()).is_ok_and(|n| n.as_str() == user));
            let Some(password) = query.child_text("password", ns::REGISTER) else {
                return (
                    error_reply(iq, &StanzaError::bad_request()),
                    AccountChange::None,
                );
            };
            if !name_ok {
                return (
                    error_reply(
                        iq,
                        &StanzaError::not_allowed().text("you can only change your own password"),
                    ),
                    AccountChange::None,
                );
            }
            let creds = match credentials(&password).await {
                Ok(c) => c,
                Err(e) => return (error_reply(iq, &e), AccountChange::None),
            };
            match ctx.store.set_credentials(user, &creds).await {
                Ok(true) => {
                    tracing::info!(user, "password changed");
                    (
                        iq_result(iq),
                        AccountChange::Credentials(crate::accounts::fingerprint(&creds)),
                    )
                }
                Ok(false) => (
                    error_reply(iq, &StanzaError::item_not_found()),
                    AccountChange::None,
                ),
                Err(e) => {
                    tracing::error!(error = %e, "password change failed");
                    (
                        error_reply(iq, &StanzaError::internal_server_error()),
                        AccountChange::None,
                    )
                }
            }
        }
        _ => (
            error_reply(iq, &StanzaError::bad_request()),
            AccountChange::None,
        ),
    }
}
