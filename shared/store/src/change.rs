//! The one write path: every mutation is a [`Change`], applied in one transaction by
//! [`Store::write`]. A replication outbox will append the change in that same transaction.

use meerkat_auth::Credentials;

use crate::{accounts, offline, roster, subscriptions, RosterItem, Store, StoreError};

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
    StoreOffline {
        username: String,
        stanza: String,
        max: u32,
    },
    DeleteOffline {
        username: String,
        ids: Vec<i64>,
    },
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
}

impl Store {
    /// Applies `change` in one transaction.
    pub async fn write(&self, change: &Change) -> Result<Outcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let outcome = match change {
            Change::CreateAccount {
                username,
                credentials,
            } => {
                accounts::create(&mut tx, username, credentials).await?;
                Outcome::Done
            }
            Change::SetCredentials {
                username,
                credentials,
            } => Outcome::Existed(accounts::set_credentials(&mut tx, username, credentials).await?),
            Change::DeleteAccount { username } => {
                Outcome::Existed(accounts::delete(&mut tx, username).await?)
            }
            Change::PutRosterItem { username, item } => {
                Outcome::RosterVersion(Some(roster::put(&mut tx, username, item).await?))
            }
            Change::RemoveRosterItem { username, contact } => {
                Outcome::RosterVersion(roster::remove(&mut tx, username, contact).await?)
            }
            Change::AddSubscriptionRequest {
                username,
                contact,
                stanza,
            } => Outcome::Since(subscriptions::add(&mut tx, username, contact, stanza).await?),
            Change::RemoveSubscriptionRequest { username, contact } => {
                Outcome::Existed(subscriptions::remove(&mut tx, username, contact).await?)
            }
            Change::StoreOffline {
                username,
                stanza,
                max,
            } => {
                offline::store(&mut tx, username, stanza, *max).await?;
                Outcome::Done
            }
            Change::DeleteOffline { username, ids } => {
                offline::delete(&mut tx, username, ids).await?;
                Outcome::Done
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }
}
