//! The one write path: every mutation is a [`Change`], applied in one transaction by
//! [`Store::write`], which appends what it changed to the replication outbox in that same
//! transaction.

use meerkat_auth::Credentials;

use crate::{
    accounts, blocking, offline, pep, personal, replication, roster, subscriptions, PepChange,
    RosterItem, Store, StoreError, Subscription,
};

/// A mutation of persistent user data.
#[derive(Clone, Debug)]
pub enum Change {
    CreateAccount {
        username: String,
        credentials: Credentials,
    },
    SetCredentials {
        username: String,
        credentials: Credentials,
    },
    DeleteAccount {
        username: String,
    },
    PutRosterItem {
        username: String,
        item: RosterItem,
    },
    RemoveRosterItem {
        username: String,
        contact: String,
    },
    AddSubscriptionRequest {
        username: String,
        contact: String,
        stanza: String,
    },
    RemoveSubscriptionRequest {
        username: String,
        contact: String,
    },
    /// One side of a presence subscription moving on from the state it was read in: written
    /// only if the owner's item and pending request are still as `expected` (under the
    /// account's lock), else nothing is written and the caller reads again.
    SubscriptionStep {
        username: String,
        contact: String,
        expected: SubSnapshot,
        /// The item to put, when it changed.
        item: Option<RosterItem>,
        request: RequestChange,
    },
    StoreOffline {
        username: String,
        stanza: String,
        max: u32,
        /// Names what is stored (the routed envelope): stored once however often it comes.
        key: Option<String>,
    },
    DeleteOffline {
        username: String,
        ids: Vec<i64>,
    },
    /// XEP-0191: block `jids`; refused (`StoreError::Full`) past `max` items.
    Block {
        username: String,
        jids: Vec<String>,
        max: u32,
    },
    /// XEP-0191: unblock `jids`, or everything (`None`).
    Unblock {
        username: String,
        jids: Option<Vec<String>>,
    },
    /// XEP-0049: store private XML items (key `{namespace}name`, element); refused
    /// (`StoreError::Full`) when the account's items would pass `max_total` bytes.
    SetPrivate {
        username: String,
        items: Vec<(String, String)>,
        max_total: u64,
    },
    /// XEP-0054: replace the vCard; `None` deletes it.
    SetVcard {
        username: String,
        vcard: Option<String>,
    },
    /// XEP-0012: the account's last resource went unavailable now, with this status.
    SetLastActivity {
        username: String,
        status: String,
    },
    /// XEP-0163: a change of the account's PEP service (nodes and items).
    Pep {
        username: String,
        change: PepChange,
    },
    /// XEP-0115: a verified caps hash (`hash\nver`) and its features.
    PutCaps {
        key: String,
        features: String,
    },
    /// XEP-0045: rows of one room and a groupchat message for its archive, under the room's
    /// lock (muc.rs).
    Muc(crate::MucWrite),
}

/// What applying a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Whether the target row existed.
    Existed(bool),
    /// The new roster version, if the roster changed.
    RosterVersion(Option<i64>),
    /// When the written item was first created (µs since the Unix epoch).
    Since(i64),
    /// A [`Change::SubscriptionStep`]: whether it was written (the state was as read), the
    /// new roster version if the item was put, and the `since` of a stored request.
    Step {
        applied: bool,
        version: Option<i64>,
        since: Option<i64>,
    },
}

/// What a subscription transition read of one owner's side: its item's state (none: no item)
/// and whether the contact's request waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubSnapshot {
    pub item: Option<(Subscription, bool, bool)>,
    pub pending: bool,
}

/// What a subscription transition does to the pending request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestChange {
    Keep,
    /// Store it (the subscribe stanza).
    Add(String),
    Remove,
}

impl Store {
    /// Applies `change` in one transaction, with the outbox records that carry it to the other
    /// DCs (see `replication.rs`).
    pub async fn write(&self, change: &Change) -> Result<Outcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let stamp = replication::tick(&mut tx).await?;
        let mut records = Vec::new();
        let outcome = match change {
            Change::CreateAccount {
                username,
                credentials,
            } => {
                accounts::create(&mut tx, username, credentials, &stamp).await?;
                replication::account_created(&mut tx, username, &stamp).await?;
                records.push(replication::account_record(&mut tx, username).await?);
                Outcome::Done
            }
            Change::SetCredentials {
                username,
                credentials,
            } => {
                let existed =
                    accounts::set_credentials(&mut tx, username, credentials, &stamp).await?;
                if existed {
                    records.push(replication::account_record(&mut tx, username).await?);
                }
                Outcome::Existed(existed)
            }
            Change::DeleteAccount { username } => {
                let existed = accounts::delete(&mut tx, username).await?;
                if existed {
                    records.push(replication::account_deleted(&mut tx, username, &stamp).await?);
                }
                Outcome::Existed(existed)
            }
            Change::PutRosterItem { username, item } => {
                let (version, parts) = roster::put(&mut tx, username, item, &stamp).await?;
                replication::roster_put(&mut tx, username, &item.jid).await?;
                records.push(replication::roster_record(username, item, &stamp, parts));
                Outcome::RosterVersion(Some(version))
            }
            Change::RemoveRosterItem { username, contact } => {
                let version = roster::remove(&mut tx, username, contact).await?;
                if version.is_some() {
                    records.push(
                        replication::roster_removed(&mut tx, username, contact, &stamp).await?,
                    );
                }
                Outcome::RosterVersion(version)
            }
            Change::AddSubscriptionRequest {
                username,
                contact,
                stanza,
            } => {
                let since = subscriptions::add(&mut tx, username, contact, stanza, &stamp).await?;
                records.push(
                    replication::request_put(&mut tx, username, contact, stanza, since, &stamp)
                        .await?,
                );
                Outcome::Since(since)
            }
            Change::RemoveSubscriptionRequest { username, contact } => {
                let existed = subscriptions::remove(&mut tx, username, contact).await?;
                if existed {
                    records.push(
                        replication::request_removed(&mut tx, username, contact, &stamp).await?,
                    );
                }
                Outcome::Existed(existed)
            }
            Change::SubscriptionStep {
                username,
                contact,
                expected,
                item,
                request,
            } => {
                // The account's lock serialises every transition of this owner's side, so a
                // concurrent one either ran before (then the state differs: not written) or
                // waits for this one.
                accounts::lock(&mut tx, username).await?;
                let now = subscriptions::snapshot(&mut tx, username, contact).await?;
                if now != *expected {
                    Outcome::Step {
                        applied: false,
                        version: None,
                        since: None,
                    }
                } else {
                    let mut since = None;
                    match request {
                        RequestChange::Keep => {}
                        RequestChange::Add(stanza) => {
                            let s = subscriptions::add(&mut tx, username, contact, stanza, &stamp)
                                .await?;
                            records.push(
                                replication::request_put(
                                    &mut tx, username, contact, stanza, s, &stamp,
                                )
                                .await?,
                            );
                            since = Some(s);
                        }
                        RequestChange::Remove => {
                            if subscriptions::remove(&mut tx, username, contact).await? {
                                records.push(
                                    replication::request_removed(
                                        &mut tx, username, contact, &stamp,
                                    )
                                    .await?,
                                );
                            }
                        }
                    }
                    let mut version = None;
                    if let Some(item) = item {
                        let (v, parts) = roster::put(&mut tx, username, item, &stamp).await?;
                        version = Some(v);
                        replication::roster_put(&mut tx, username, &item.jid).await?;
                        records.push(replication::roster_record(username, item, &stamp, parts));
                    }
                    Outcome::Step {
                        applied: true,
                        version,
                        since,
                    }
                }
            }
            Change::StoreOffline {
                username,
                stanza,
                max,
                key,
            } => {
                let stored =
                    offline::store(&mut tx, username, stanza, *max, key.as_deref(), &stamp).await?;
                records.extend(stored);
                Outcome::Done
            }
            Change::DeleteOffline { username, ids } => {
                for uid in offline::delete(&mut tx, username, ids).await? {
                    records
                        .push(replication::offline_removed(&mut tx, username, uid, &stamp).await?);
                }
                Outcome::Done
            }
            Change::Block {
                username,
                jids,
                max,
            } => {
                records.extend(blocking::block(&mut tx, username, jids, *max, &stamp).await?);
                Outcome::Done
            }
            Change::Unblock { username, jids } => {
                records
                    .extend(blocking::unblock(&mut tx, username, jids.as_deref(), &stamp).await?);
                Outcome::Done
            }
            Change::SetPrivate {
                username,
                items,
                max_total,
            } => {
                records.extend(
                    personal::set_private(&mut tx, username, items, *max_total, &stamp).await?,
                );
                Outcome::Done
            }
            Change::SetVcard { username, vcard } => {
                records
                    .push(personal::set_vcard(&mut tx, username, vcard.as_deref(), &stamp).await?);
                Outcome::Done
            }
            Change::SetLastActivity { username, status } => {
                records.push(personal::set_last(&mut tx, username, status, &stamp).await?);
                Outcome::Done
            }
            Change::Pep { username, change } => {
                let (outcome, recs) = pep::apply(&mut tx, username, change, &stamp).await?;
                records.extend(recs);
                outcome
            }
            Change::PutCaps { key, features } => {
                records.push(pep::put_caps(&mut tx, key, features, &stamp).await?);
                Outcome::Done
            }
            Change::Muc(w) => {
                let (_, recs) = crate::muc::apply(&mut tx, w, &stamp).await?;
                records.extend(recs);
                Outcome::Done
            }
        };
        let mark = replication::append(&mut tx, &records).await?;
        tx.commit().await?;
        if let Some((epoch, seq)) = mark {
            self.note_written(&epoch, seq);
        }
        Ok(outcome)
    }
}
