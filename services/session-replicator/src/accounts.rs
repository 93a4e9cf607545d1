//! Account changes end stale sessions. Every account record this DC ships (a local change,
//! in-band or by `meerkatctl`) or applies (another DC's, also after a partition heals) is
//! announced on the DC's control exchange; each gateway then ends the account's sessions that
//! authenticated with credentials the account no longer has (docs/security/accounts-and-links.md).
//! An announcement for an unchanged account ends nothing, so duplicates are harmless.

use meerkat_store::Record;
use meerkat_wire::{topology as names, ControlEvent};

use crate::{publish, Ctx};

/// Announces `record` if it is an account's; false if the broker did not take it.
pub(crate) async fn announce(ctx: &Ctx, record: &Record) -> bool {
    let Record::Account { username, .. } = record else {
        return true;
    };
    let event = ControlEvent::AccountChanged {
        username: username.clone(),
        reported_by: ctx.instance.clone(),
    };
    let props = {
        let seq = ctx.sequencer.lock();
        publish::props(&ctx.config.dc, seq.epoch())
    };
    match ctx
        .publisher
        .publish(names::CONTROL_EXCHANGE, "", props, &event.to_json())
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, user = %username, "account change not announced");
            false
        }
    }
}

/// Announces the account records of a full copy whose account has a session at this DC (a
/// copy carries every account; only those with sessions can have stale ones).
pub(crate) async fn announce_copied(ctx: &Ctx, records: &[Record]) {
    for r in records {
        if let Record::Account { username, .. } = r {
            let bare = meerkat_xmpp::addr::account(username, &ctx.config.domain);
            if ctx.sequencer.lock().has_session(&bare) {
                announce(ctx, r).await;
            }
        }
    }
}
