//! One kind of replicated item (accounts, roster items, subscription requests, offline
//! messages, ...) behind one small trait: how to read the stamp of the item a record is about,
//! apply a record whose stamp won, list every item for a full copy, and what a tombstone of
//! the kind stands for. The rest of replication (the larger-stamp-wins rule, tombstones, the
//! account's ownership of its items, the outbox, full copies) is written once, over [`KINDS`].
//!
//! A new kind is one module here, one entry in [`KINDS`], and one variant of
//! `meerkat_wire::data::Record`.

use async_trait::async_trait;
use meerkat_wire::data::{Record, Stamp};
use sqlx::PgConnection;

use crate::StoreError;

/// Where a full copy of one kind has got to: the key of the last item sent, as text (one or
/// two columns; the second is empty for kinds with a one-column key).
pub(crate) type Cursor = (String, String);

#[async_trait]
pub(crate) trait Kind: Sync {
    /// The kind's name in `tombstones.kind`.
    fn name(&self) -> &'static str;

    /// Whether `rec` is of this kind.
    fn owns(&self, rec: &Record) -> bool;

    /// The table of the kind's items when they belong to an account (columns `username`,
    /// `hlc`, `hlc_dc`): they go with the account and never predate its birth. `None` for the
    /// accounts themselves.
    fn user_table(&self) -> Option<&'static str>;

    /// The key of the item `rec` is about, in `tombstones.key`.
    fn tombstone_key(&self, rec: &Record) -> String;

    /// The stamp of the item `rec` is about, from its row here (`None`: no row).
    async fn row_stamp(
        &self,
        conn: &mut PgConnection,
        rec: &Record,
    ) -> Result<Option<Stamp>, StoreError>;

    /// Writes `rec` (whose stamp won): the item's new state, or its deletion and tombstone.
    async fn apply(&self, conn: &mut PgConnection, rec: &Record) -> Result<(), StoreError>;

    /// Up to `limit` items after `after` in key order, as records, each with its key.
    async fn copy_batch(
        &self,
        conn: &mut PgConnection,
        after: Option<&Cursor>,
        limit: i64,
    ) -> Result<Vec<(Cursor, Record)>, StoreError>;

    /// The deletion a tombstone of this kind stands for.
    fn deleted(&self, key: &str, username: String, stamp: Stamp) -> Result<Record, StoreError>;
}

/// Every kind, in the order a full copy sends them (accounts before what they own).
pub(crate) static KINDS: &[&dyn Kind] = &[
    &super::accounts::Accounts,
    &super::roster::Roster,
    &super::requests::Requests,
    &super::offline::Offline,
    &super::blocking::Blocking,
    &super::archive::Archive,
    &super::archive::ArchivePrefs,
    &super::docs::PRIVATE,
    &super::docs::VCARD,
    &super::docs::LAST,
    &super::docs::PEP_NODE,
    &super::docs::PEP_ITEM,
    &super::docs::CAPS,
    &super::docs::MUC_ROOM,
    &super::docs::MUC_OCCUPANT,
];

/// The kind of `rec`.
pub(crate) fn of(rec: &Record) -> Result<&'static dyn Kind, StoreError> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.owns(rec))
        .ok_or_else(|| StoreError::Corrupt("a record of no known kind".into()))
}

/// The kind named `name` in `tombstones`.
pub(crate) fn named(name: &str) -> Result<&'static dyn Kind, StoreError> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.name() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("a tombstone of unknown kind {name:?}")))
}

/// The key of an item of two-part key in `tombstones`.
pub(crate) fn key2(username: &str, contact: &str) -> String {
    format!("{username}\n{contact}")
}

/// The contact part of a [`key2`].
pub(crate) fn contact_of(key: &str) -> String {
    key.split_once('\n')
        .map(|(_, c)| c.to_owned())
        .unwrap_or_default()
}

/// `(username, contact)` after the cursor, for the kinds keyed so.
pub(crate) fn cursor2(after: Option<&Cursor>) -> (&str, &str) {
    after.map_or(("", ""), |(a, b)| (a.as_str(), b.as_str()))
}
