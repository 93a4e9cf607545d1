//! Sessions follow their account (docs/security/accounts-and-links.md). Each session
//! remembers a fingerprint of the credentials it authenticated with. When an account changes
//! (an in-band password change or removal here, `meerkatctl`, or another DC's change applied
//! by the replicator), `AccountChanged` reaches every gateway of the DC on the control
//! exchange, and each ends the account's sessions whose fingerprint is no longer the
//! account's: `<reset/>` when the account still exists (new credentials: authenticate again,
//! as Prosody does), `<not-authorized/>` when it is gone (XEP-0077 §3.2). A bind checks the
//! account once more after the session is registered, so a change racing a login ends it too.

use std::hash::{DefaultHasher, Hash, Hasher};

use meerkat_auth::Credentials;
use meerkat_wire::{topology as names, ControlEvent};
use meerkat_xmpp::StreamError;

use crate::registry::Outbound;
use crate::Ctx;

/// A fingerprint of stored credentials. Every password change derives new random salts, so
/// any change (even to the same password) changes it.
pub fn fingerprint(c: &Credentials) -> u64 {
    let mut h = DefaultHasher::new();
    for s in [&c.sha1, &c.sha256] {
        s.salt.hash(&mut h);
        s.iterations.hash(&mut h);
        s.stored_key.hash(&mut h);
        s.server_key.hash(&mut h);
    }
    h.finish()
}

/// The account's credentials' fingerprint now; `None` when the account does not exist.
pub async fn current(ctx: &Ctx, username: &str) -> Result<Option<u64>, StreamError> {
    match ctx.store.credentials(username).await {
        Ok(c) => Ok(c.as_ref().map(fingerprint)),
        Err(e) => {
            tracing::error!(error = %e, user = username, "account lookup failed");
            Err(StreamError::with_text(
                "internal-server-error",
                "account store unavailable",
            ))
        }
    }
}

/// The stream error for a session whose credentials are `had` when the account's are `now`,
/// or none when they are the same.
pub fn stale(had: u64, now: Option<u64>) -> Option<StreamError> {
    match now {
        Some(fp) if fp == had => None,
        Some(_) => Some(StreamError::with_text(
            "reset",
            "the account's password changed: authenticate again",
        )),
        None => Some(StreamError::with_text(
            "not-authorized",
            "the account was removed",
        )),
    }
}

/// Whether a session authenticated with `had` may still be bound.
pub async fn check(ctx: &Ctx, username: &str, had: u64) -> Result<(), StreamError> {
    match stale(had, current(ctx, username).await?) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// `AccountChanged`: ends the account's sessions here that hold old credentials.
pub async fn end_stale(ctx: &Ctx, username: &str) {
    let sessions = ctx
        .registry
        .of_account(&meerkat_xmpp::addr::account(username, &ctx.config.domain));
    if sessions.is_empty() {
        return;
    }
    let Ok(now) = current(ctx, username).await else {
        // Unknown: the sessions stay; the next change or bind checks again.
        return;
    };
    for (had, tx) in sessions {
        if let Some(e) = stale(had, now) {
            tracing::info!(
                user = username,
                condition = e.condition,
                "ending a session of a changed account"
            );
            // A mailbox never makes its caller wait; a session already ending needs no word.
            tx.tell(Outbound::End(e));
        }
    }
}

/// Tells every gateway of this DC (this one too) that `username` changed. The replicator
/// announces the change again when it ships it, and at every other DC when it applies it.
pub async fn announce(ctx: &Ctx, username: &str) {
    let event = ControlEvent::AccountChanged {
        username: username.to_owned(),
        reported_by: ctx.instance.clone(),
    };
    let props = meerkat_bus::control_event_properties(&ctx.config.dc);
    if let Err(e) = ctx
        .publisher
        .publish(names::CONTROL_EXCHANGE, "", props, &event.to_json())
        .await
    {
        tracing::warn!(error = %e, user = username, "account change not announced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_a_new_fingerprint() {
        let a = Credentials::derive("pw", 4096).unwrap();
        let b = Credentials::derive("pw", 4096).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let fp = fingerprint(&a);
        assert!(stale(fp, Some(fp)).is_none());
        assert_eq!(stale(fp, Some(fp ^ 1)).unwrap().condition, "reset");
        assert_eq!(stale(fp, None).unwrap().condition, "not-authorized");
    }
}
