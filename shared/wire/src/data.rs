//! Persistent-data replication between DCs.
//!
//! Every write to a DC's database leaves, in the same transaction, one [`Record`] per item it
//! changed in that DC's outbox, numbered by a gap-free per-DC sequence (`seq`, from 1 within
//! the database's `epoch`). A record carries the item's whole new state (or its deletion) and
//! the item's [`Stamp`], so applying it is idempotent and order between DCs does not matter:
//! the larger stamp wins, everywhere the same way.
//!
//! Records travel on `meerkat.inter.data` (topic, federated, routing key = origin DC) as
//! [`DataChange`], or several consecutive ones of a stream in one message as [`DataChanges`]
//! (wire 1.7, sent once every peer reports it reads them); replay requests, status and full
//! copies on `meerkat.inter.control` as [`DataControl`] inside [`crate::InterControl`].

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// When and where an item was last written: a hybrid logical clock value (milliseconds since
/// the Unix epoch shifted left 16 bits, plus a logical counter) and the DC that wrote it.
/// Ordered by clock, then DC id, so every DC picks the same winner.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: i64,
    pub dc: String,
}

impl Ord for Stamp {
    fn cmp(&self, other: &Stamp) -> Ordering {
        (self.hlc, &self.dc).cmp(&(other.hlc, &other.dc))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Stamp) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One SCRAM credential (RFC 5802 §3): what a server stores, never the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// An account's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The stamp of the account's creation: data of an earlier account of the same name
    /// (older stamps) is not this account's.
    pub born: Stamp,
    pub sha1: ScramKeys,
    pub sha256: ScramKeys,
}

/// A roster item's state (RFC 6121 §2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterState {
    pub name: Option<String>,
    /// `none`, `to`, `from` or `both`.
    pub subscription: String,
    pub ask_out: bool,
    pub approved: bool,
    pub groups: Vec<String>,
    /// When each part of the item last changed (wire 1.4); absent from an earlier version's
    /// record, whose parts all count as changed at the record's stamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<RosterParts>,
}

/// The stamps of a roster item's three parts, which replication merges one by one (the later
/// stamp wins each): name and groups; the owner's subscription to the contact with its pending
/// `ask` ("to"); the contact's subscription to the owner with its pre-approval ("from").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterParts {
    pub meta: Stamp,
    pub to: Stamp,
    pub from: Stamp,
}

/// A pending inbound subscription request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestState {
    pub stanza: String,
    /// When the request was first made, µs since the Unix epoch.
    pub since: i64,
}

/// An offline message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineState {
    pub stanza: String,
    /// When it was stored, µs since the Unix epoch.
    pub stored_at: i64,
}

/// A blocked JID (XEP-0191): its presence is the whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {}

/// A message in a user's archive (XEP-0313). Archived messages are only ever added (and go
/// with their account, or with the retention every DC applies alike): applying one inserts it
/// if absent. Its stamp is its place in the owner's archive, the same at every DC, and its id
/// names it at every DC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// The other party: a bare or full JID.
    pub with: String,
    /// The message as archived (XML).
    pub stanza: String,
}

/// A user's archiving preferences (XEP-0313 §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePrefsState {
    /// `always`, `never` or `roster`.
    pub default: String,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

/// A stored document of a user's personal data: a private XML item (XEP-0049), a vCard
/// (XEP-0054) or the status of the account's last logout (XEP-0012, whose time is the
/// stamp's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocState {
    pub body: String,
}

/// The new state of one item; `None` states are deletions (kept as tombstones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum Record {
    Account {
        username: String,
        stamp: Stamp,
        state: Option<AccountState>,
    },
    Roster {
        username: String,
        contact: String,
        stamp: Stamp,
        state: Option<RosterState>,
    },
    Request {
        username: String,
        contact: String,
        stamp: Stamp,
        state: Option<RequestState>,
    },
    Offline {
        username: String,
        id: Uuid,
        stamp: Stamp,
        state: Option<OfflineState>,
    },
    /// One item of an account's block list (XEP-0191); `jid` as the router normalised it.
    Block {
        username: String,
        jid: String,
        stamp: Stamp,
        state: Option<BlockState>,
    },
    /// Since the archive (issue 16): sent only where every DC reads it (docs/protocol.md).
    Archive {
        username: String,
        id: String,
        stamp: Stamp,
        state: Option<ArchiveState>,
    },
    ArchivePrefs {
        username: String,
        stamp: Stamp,
        state: Option<ArchivePrefsState>,
    },
    /// Since issue 17: one private XML item (XEP-0049), `key` = `{namespace}name`.
    Private {
        username: String,
        key: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 17: the account's vCard (XEP-0054), the `<vCard/>` element as XML.
    Vcard {
        username: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 17: the account's last logout (XEP-0012): its status text; its time is the
    /// stamp's clock (milliseconds = `hlc >> 16`).
    LastActivity {
        username: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 17 (PEP, XEP-0163): one pubsub node of an account, `key` = the node's
    /// name, its configuration (JSON) as the body.
    PepNode {
        username: String,
        key: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 17 (PEP): one published item, `key` = `node\nitem id`, the `<item/>` as
    /// published as the body.
    PepItem {
        username: String,
        key: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 17: one verified entity capabilities hash (XEP-0115), `username` empty,
    /// `key` = `hash\nver`, the features (one a line) as the body. Content-addressed.
    Caps {
        username: String,
        key: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 19 (MUC, XEP-0045): one row of a room, `username` = the room's bare JID;
    /// `key` '' = its configuration (JSON), `subject`, or `a\n<jid>` = an affiliation.
    MucRoom {
        username: String,
        key: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
    /// Since issue 19: one occupant of a room, `username` = the room's bare JID, `key` = the
    /// nick, the occupant (JSON) as the body.
    MucOccupant {
        username: String,
        key: String,
        stamp: Stamp,
        state: Option<DocState>,
    },
}

impl Record {
    pub fn stamp(&self) -> &Stamp {
        match self {
            Record::Account { stamp, .. }
            | Record::Roster { stamp, .. }
            | Record::Request { stamp, .. }
            | Record::Offline { stamp, .. }
            | Record::Block { stamp, .. }
            | Record::Archive { stamp, .. }
            | Record::ArchivePrefs { stamp, .. }
            | Record::Private { stamp, .. }
            | Record::Vcard { stamp, .. }
            | Record::LastActivity { stamp, .. }
            | Record::PepNode { stamp, .. }
            | Record::PepItem { stamp, .. }
            | Record::Caps { stamp, .. }
            | Record::MucRoom { stamp, .. }
            | Record::MucOccupant { stamp, .. } => stamp,
        }
    }

    pub fn username(&self) -> &str {
        match self {
            Record::Account { username, .. }
            | Record::Roster { username, .. }
            | Record::Request { username, .. }
            | Record::Offline { username, .. }
            | Record::Block { username, .. }
            | Record::Archive { username, .. }
            | Record::ArchivePrefs { username, .. }
            | Record::Private { username, .. }
            | Record::Vcard { username, .. }
            | Record::LastActivity { username, .. }
            | Record::PepNode { username, .. }
            | Record::PepItem { username, .. }
            | Record::Caps { username, .. }
            | Record::MucRoom { username, .. }
            | Record::MucOccupant { username, .. } => username,
        }
    }

    /// The length of the stanza or document the record carries (0 for a deletion and for the
    /// kinds whose state is a few fields): what makes a record large, for sizing batches.
    /// Exhaustive on purpose: a new kind must say whether it carries one.
    pub fn payload_len(&self) -> usize {
        match self {
            Record::Archive { state: Some(s), .. } => s.stanza.len() + s.with.len(),
            Record::Offline { state: Some(s), .. } => s.stanza.len(),
            Record::Request { state: Some(s), .. } => s.stanza.len(),
            Record::Private { state: Some(s), .. }
            | Record::Vcard { state: Some(s), .. }
            | Record::LastActivity { state: Some(s), .. }
            | Record::PepNode { state: Some(s), .. }
            | Record::PepItem { state: Some(s), .. }
            | Record::Caps { state: Some(s), .. }
            | Record::MucRoom { state: Some(s), .. }
            | Record::MucOccupant { state: Some(s), .. } => s.body.len(),
            Record::Archive { state: None, .. }
            | Record::Offline { state: None, .. }
            | Record::Request { state: None, .. }
            | Record::Private { state: None, .. }
            | Record::Vcard { state: None, .. }
            | Record::LastActivity { state: None, .. }
            | Record::PepNode { state: None, .. }
            | Record::PepItem { state: None, .. }
            | Record::Caps { state: None, .. }
            | Record::MucRoom { state: None, .. }
            | Record::MucOccupant { state: None, .. }
            | Record::Account { .. }
            | Record::Roster { .. }
            | Record::Block { .. }
            | Record::ArchivePrefs { .. } => 0,
        }
    }

    /// The account (username) whose available resources are to be shown this record when it
    /// is stored at a DC, whether written there or applied from another: what was stored
    /// because no available resource was seen (an offline message, a pending subscription
    /// request). Also a roster item carrying a pre-approval (RFC 6121 §3.4): a request to the
    /// account stored at this DC before the approval arrived is answered from it here, where
    /// the requester's resources are known first-hand. `None` for what is only data (and for
    /// every deletion). Exhaustive on purpose: a new kind must answer it (docs/decisions.md,
    /// "what is stored for an account reaches its resources").
    pub fn awaits_delivery(&self) -> Option<&str> {
        match self {
            Record::Request {
                username,
                state: Some(_),
                ..
            }
            | Record::Offline {
                username,
                state: Some(_),
                ..
            }
            | Record::Roster {
                username,
                state: Some(RosterState { approved: true, .. }),
                ..
            } => Some(username),
            Record::Request { state: None, .. }
            | Record::Offline { state: None, .. }
            | Record::Account { .. }
            | Record::Roster { .. }
            | Record::Block { .. }
            | Record::Archive { .. }
            | Record::ArchivePrefs { .. }
            | Record::Private { .. }
            | Record::Vcard { .. }
            | Record::LastActivity { .. }
            | Record::PepNode { .. }
            | Record::PepItem { .. }
            | Record::Caps { .. }
            | Record::MucRoom { .. }
            | Record::MucOccupant { .. } => None,
        }
    }
}

/// One outbox entry on its way to the other DCs (`meerkat.inter.data`, routing key = origin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataChange {
    pub v: u32,
    pub origin_dc: String,
    /// The origin database's epoch: a database rebuilt empty starts a new one.
    pub epoch: String,
    pub seq: i64,
    /// When the origin committed it, µs since the Unix epoch (for lag figures).
    pub written_at: i64,
    pub record: Record,
}

/// Consecutive outbox entries of one origin's stream (one database life) in one message
/// (wire 1.7): one publication, one federation hop and one acknowledgement for many records
/// instead of one each. Sent only once every peer has reported that it reads them
/// ([`DataControl::Status`]'s `batches`): a 1.6 receiver cannot, and would park it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataChanges {
    pub v: u32,
    pub origin_dc: String,
    pub epoch: String,
    /// In increasing `seq` order, at least one.
    pub changes: Vec<Entry>,
}

/// One outbox entry inside [`DataChanges`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    pub written_at: i64,
    pub record: Record,
}

/// Why a data message was not read.
#[derive(Debug, thiserror::Error)]
pub enum DataReadError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("a batch of data changes with none")]
    Empty,
    #[error("a batch of data changes out of sequence order at seq {0}")]
    OutOfOrder(i64),
}

impl DataChanges {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The JSON of the batch holding `changes`, written from them as they are. They must be
    /// at least one, all of one origin and epoch, in increasing `seq` order.
    pub fn json_of(changes: &[DataChange]) -> Vec<u8> {
        #[derive(Serialize)]
        struct Batch<'a> {
            v: u32,
            origin_dc: &'a str,
            epoch: &'a str,
            changes: Vec<EntryRef<'a>>,
        }
        #[derive(Serialize)]
        struct EntryRef<'a> {
            seq: i64,
            written_at: i64,
            record: &'a Record,
        }
        let first = &changes[0];
        let batch = Batch {
            v: first.v,
            origin_dc: &first.origin_dc,
            epoch: &first.epoch,
            changes: changes
                .iter()
                .map(|c| EntryRef {
                    seq: c.seq,
                    written_at: c.written_at,
                    record: &c.record,
                })
                .collect(),
        };
        serde_json::to_vec(&batch).unwrap_or_default()
    }
}

/// Reads a message of `meerkat.inter.data`: a batch ([`DataChanges`]) or a single
/// [`DataChange`] (what every version sends to a peer that does not read batches), as the
/// changes it holds, in order.
pub fn read_changes(bytes: &[u8]) -> Result<Vec<DataChange>, DataReadError> {
    let batch = match serde_json::from_slice::<DataChanges>(bytes) {
        Ok(b) => b,
        Err(as_batch) => {
            return match DataChange::from_json(bytes) {
                Ok(one) => Ok(vec![one]),
                // Say what is wrong with it as what it claims to be.
                Err(_) if claims_batch(bytes) => Err(as_batch.into()),
                Err(as_one) => Err(as_one.into()),
            };
        }
    };
    if batch.changes.is_empty() {
        return Err(DataReadError::Empty);
    }
    if let Some(w) = batch.changes.windows(2).find(|w| w[1].seq <= w[0].seq) {
        return Err(DataReadError::OutOfOrder(w[1].seq));
    }
    let DataChanges {
        v,
        origin_dc,
        epoch,
        changes,
    } = batch;
    Ok(changes
        .into_iter()
        .map(|e| DataChange {
            v,
            origin_dc: origin_dc.clone(),
            epoch: epoch.clone(),
            seq: e.seq,
            written_at: e.written_at,
            record: e.record,
        })
        .collect())
}

/// Whether unreadable JSON is an object with `changes`, as a batch has.
fn claims_batch(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
        .is_ok_and(|m| m.contains_key("changes"))
}

/// Data replication between replicators, inside [`crate::InterControl::Data`] (routing key =
/// target DC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DataControl {
    /// Sent every second to every other DC: the sender's outbox head, and how far it has
    /// applied each origin (the receiver trims its outbox by it and sees its lag).
    Status {
        from_dc: String,
        epoch: String,
        head: i64,
        applied: BTreeMap<String, Applied>,
        /// The sender reads [`DataChanges`] (wire 1.7); absent (false) from an earlier
        /// version, to which changes go one a message.
        #[serde(default)]
        batches: bool,
    },
    /// "Send me your outbox from `from_seq` on" (after a gap or a missed tail). Answered on
    /// `meerkat.inter.data`, or with a full copy when the outbox no longer holds `from_seq`
    /// (a new or rebuilt DC, or one further behind than the retention).
    Replay { from_dc: String, from_seq: i64 },
    /// A part of a full copy; records are applied like stream records (the larger stamp wins).
    CopyChunk {
        from_dc: String,
        copy_id: Uuid,
        records: Vec<Record>,
    },
    /// The end of a full copy: it contains every origin's changes up to `positions`.
    CopyEnd {
        from_dc: String,
        copy_id: Uuid,
        chunks: u32,
        positions: BTreeMap<String, Applied>,
    },
}

/// How far one origin's stream has been applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub epoch: String,
    pub seq: i64,
}

impl DataChange {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<DataChange, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(hlc: i64, dc: &str) -> Stamp {
        Stamp { hlc, dc: dc.into() }
    }

    #[test]
    fn stamps_order_by_clock_then_dc() {
        assert!(stamp(2, "dc1") > stamp(1, "dc2"));
        assert!(stamp(1, "dc2") > stamp(1, "dc1"));
        assert_eq!(stamp(1, "dc1").cmp(&stamp(1, "dc1")), Ordering::Equal);
    }

    #[test]
    fn records_round_trip_as_json() {
        let c = DataChange {
            v: 1,
            origin_dc: "dc1".into(),
            epoch: "e".into(),
            seq: 7,
            written_at: 1,
            record: Record::Roster {
                username: "alice".into(),
                contact: "bob@example.com".into(),
                stamp: stamp(5, "dc1"),
                state: None,
            },
        };
        let json = String::from_utf8(c.to_json()).unwrap();
        assert!(json.contains(r#""item":"roster""#), "{json}");
        assert_eq!(DataChange::from_json(json.as_bytes()).unwrap(), c);
    }

    fn change(seq: i64) -> DataChange {
        DataChange {
            v: 1,
            origin_dc: "dc1".into(),
            epoch: "e".into(),
            seq,
            written_at: seq * 10,
            record: Record::Archive {
                username: "alice".into(),
                id: format!("{seq:x}-dc1"),
                stamp: stamp(seq, "dc1"),
                state: Some(ArchiveState {
                    with: "bob@example.com".into(),
                    stanza: "<message/>".into(),
                }),
            },
        }
    }

    #[test]
    fn a_batch_reads_as_the_changes_it_was_made_of_and_a_single_change_as_one() {
        let changes: Vec<DataChange> = (7..10).map(change).collect();
        let json = DataChanges::json_of(&changes);
        let batch: DataChanges = serde_json::from_slice(&json).unwrap();
        assert_eq!(batch.changes.len(), 3);
        assert_eq!(batch.to_json(), json);
        assert_eq!(read_changes(&json).unwrap(), changes);
        // What every earlier version sends, and sends to a peer that does not read batches.
        assert_eq!(read_changes(&change(7).to_json()).unwrap(), vec![change(7)]);
    }

    #[test]
    fn a_batch_empty_or_out_of_order_is_refused() {
        let mut batch = DataChanges {
            v: 1,
            origin_dc: "dc1".into(),
            epoch: "e".into(),
            changes: Vec::new(),
        };
        assert!(matches!(
            read_changes(&batch.to_json()),
            Err(DataReadError::Empty)
        ));
        let entry = |seq| Entry {
            seq,
            written_at: 0,
            record: change(seq).record,
        };
        batch.changes = vec![entry(3), entry(5), entry(5)];
        assert!(matches!(
            read_changes(&batch.to_json()),
            Err(DataReadError::OutOfOrder(5))
        ));
        batch.changes = vec![entry(3), entry(2)];
        assert!(matches!(
            read_changes(&batch.to_json()),
            Err(DataReadError::OutOfOrder(2))
        ));
        // A batch holding a record this version cannot read: the batch's error.
        let unknown = br#"{"v":1,"origin_dc":"dc1","epoch":"e","changes":[{"seq":1,"written_at":0,"record":{"item":"hologram"}}]}"#;
        let why = read_changes(unknown).unwrap_err().to_string();
        assert!(why.contains("hologram"), "{why}");
        // Neither a batch nor a change: the single change's error.
        assert!(matches!(
            read_changes(br#"{"v":1}"#),
            Err(DataReadError::Json(_))
        ));
    }

    #[test]
    fn a_status_of_an_earlier_version_does_not_claim_to_read_batches() {
        let old = r#"{"op":"status","from_dc":"dc2","epoch":"e","head":3,"applied":{}}"#;
        let status: DataControl = serde_json::from_str(old).unwrap();
        assert!(matches!(status, DataControl::Status { batches: false, .. }));
    }

    #[test]
    fn stored_items_await_delivery_and_data_does_not() {
        let request = |state| Record::Request {
            username: "bob".into(),
            contact: "alice@example.com".into(),
            stamp: stamp(1, "dc1"),
            state,
        };
        let offline = |state| Record::Offline {
            username: "bob".into(),
            id: Uuid::nil(),
            stamp: stamp(1, "dc1"),
            state,
        };
        let pending = RequestState {
            stanza: "<presence type='subscribe'/>".into(),
            since: 1,
        };
        let message = OfflineState {
            stanza: "<message/>".into(),
            stored_at: 1,
        };
        assert_eq!(request(Some(pending)).awaits_delivery(), Some("bob"));
        assert_eq!(offline(Some(message)).awaits_delivery(), Some("bob"));
        // Answered, delivered: nothing left to show.
        assert_eq!(request(None).awaits_delivery(), None);
        assert_eq!(offline(None).awaits_delivery(), None);
        let roster = Record::Roster {
            username: "bob".into(),
            contact: "alice@example.com".into(),
            stamp: stamp(1, "dc1"),
            state: None,
        };
        assert_eq!(roster.awaits_delivery(), None);
        // A pre-approval may answer a request stored before it arrived; a plain item not.
        let item = |approved| Record::Roster {
            username: "bob".into(),
            contact: "alice@example.com".into(),
            stamp: stamp(1, "dc1"),
            state: Some(RosterState {
                name: None,
                subscription: "none".into(),
                ask_out: false,
                approved,
                groups: Vec::new(),
                parts: None,
            }),
        };
        assert_eq!(item(true).awaits_delivery(), Some("bob"));
        assert_eq!(item(false).awaits_delivery(), None);
    }
}
