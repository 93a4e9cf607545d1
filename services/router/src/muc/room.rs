//! A room as stored (migration 0009): its configuration and state (JSON under key ''), its
//! subject, its affiliations (one row each) and its occupants (one row per nick).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Ctx;

/// Key of an affiliation row.
pub fn aff_key(bare: &str) -> String {
    format!("a\n{bare}")
}

pub const SUBJECT_KEY: &str = "subject";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub name: String,
    pub desc: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub password_protected: bool,
    pub password: String,
    pub max_users: u32,
    /// Real JIDs shown to every occupant (non-anonymous), else to moderators only.
    pub whois_anyone: bool,
    pub history_length: u32,
    pub logging: bool,
    pub change_subject: bool,
    pub allow_invites: bool,
    pub allow_pm: bool,
    /// Created and not yet configured (XEP-0045 §10.1.1): only the owner may enter.
    pub locked: bool,
    /// The creator's bare JID (the per-user room count).
    pub creator: String,
    /// ms since the Unix epoch.
    pub created_ms: i64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            name: String::new(),
            desc: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password_protected: false,
            password: String::new(),
            max_users: 500,
            whois_anyone: false,
            history_length: 20,
            logging: true,
            change_subject: false,
            allow_invites: false,
            allow_pm: true,
            locked: false,
            creator: String::new(),
            created_ms: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "admin" => Affiliation::Admin,
            "member" => Affiliation::Member,
            "none" => Affiliation::None,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Admin => "admin",
            Affiliation::Member => "member",
            Affiliation::None => "none",
            Affiliation::Outcast => "outcast",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "moderator" => Role::Moderator,
            "participant" => Role::Participant,
            "visitor" => Role::Visitor,
            "none" => Role::None,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Participant => "participant",
            Role::Visitor => "visitor",
            Role::None => "none",
        }
    }

    /// The role an affiliation enters with (XEP-0045 §5.1.2).
    pub fn default_for(aff: Affiliation, config: &Config) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            _ if config.moderated => Role::Visitor,
            _ => Role::Participant,
        }
    }
}

/// Key of an occupant's row: its nick and real JID, so that one nick taken by two users on
/// the two sides of a partition leaves two rows that the merge keeps (rows of an earlier
/// version are keyed by the nick alone).
pub fn occupant_key(nick: &str, jid: &str) -> String {
    format!("{nick}\n{jid}")
}

/// The nick of an occupant row's key.
pub fn nick_of_key(key: &str) -> &str {
    key.split_once('\n').map_or(key, |(n, _)| n)
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    /// The real full JID.
    pub jid: String,
    pub role: String,
    /// The occupant's last presence as it sent it (its `<x/>` of MUC removed).
    pub presence: String,
    /// The DC of its session.
    pub dc: String,
    /// Its session's id (rows of an earlier version have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<uuid::Uuid>,
    /// When it took its nick (joined, or changed to it), ms since the Unix epoch: of two
    /// occupants holding one nick after a partition, the earlier keeps it.
    #[serde(default)]
    pub since_ms: i64,
    /// Removed from the room's view because its DC was declared down; kept (not deleted) so
    /// that, when its DC returns and says its session is still there, it is put back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub away: bool,
    /// The key of its row (not stored in the body).
    #[serde(skip)]
    pub key: String,
}

impl Occupant {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Participant)
    }

    pub fn bare(&self) -> String {
        crate::jids::bare(&self.jid)
    }
}

/// A room as read from the store (`config` `None`: no such room).
#[derive(Clone, Debug, Default)]
pub struct Room {
    pub jid: String,
    pub config: Option<Config>,
    /// The subject message as the room sent it.
    pub subject: Option<String>,
    pub affiliations: BTreeMap<String, Affiliation>,
    pub occupants: BTreeMap<String, Occupant>,
    /// Occupants away with their DC, by nick (several per nick possible).
    pub away: Vec<(String, Occupant)>,
    /// Occupants that lost their nick to an earlier one (two sides of a partition took it).
    pub losers: Vec<(String, Occupant)>,
}

impl Occupant {
    /// Which of two occupants of one nick keeps it: the one that took it first (then the
    /// smaller JID); every DC decides alike.
    pub fn precedes(&self, other: &Occupant) -> bool {
        (self.since_ms, &self.jid) < (other.since_ms, &other.jid)
    }
}

impl Room {
    pub async fn load(ctx: &Ctx, jid: &str) -> anyhow::Result<Room> {
        let mut room = Room {
            jid: jid.to_owned(),
            ..Room::default()
        };
        for (key, body) in ctx.store.muc_room(jid).await? {
            if key.is_empty() {
                room.config = Some(serde_json::from_str(&body)?);
            } else if key == SUBJECT_KEY {
                room.subject = Some(body);
            } else if let Some(bare) = key.strip_prefix("a\n") {
                if let Some(a) = Affiliation::parse(&body) {
                    room.affiliations.insert(bare.to_owned(), a);
                }
            }
        }
        for (key, body) in ctx.store.muc_occupants(jid).await? {
            let mut o: Occupant = serde_json::from_str(&body)?;
            let nick = nick_of_key(&key).to_owned();
            o.key = key;
            if o.away {
                room.away.push((nick, o));
                continue;
            }
            match room.occupants.get(&nick) {
                Some(held) if held.precedes(&o) => room.losers.push((nick, o)),
                Some(_) => {
                    if let Some(held) = room.occupants.insert(nick.clone(), o) {
                        room.losers.push((nick, held));
                    }
                }
                None => {
                    room.occupants.insert(nick, o);
                }
            }
        }
        Ok(room)
    }

    pub fn affiliation(&self, bare: &str) -> Affiliation {
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// The nick of the occupant whose real full JID is `jid`.
    pub fn nick_of(&self, jid: &str) -> Option<&str> {
        self.occupants
            .iter()
            .find(|(_, o)| o.jid == jid)
            .map(|(n, _)| n.as_str())
    }

    pub fn owners(&self) -> usize {
        self.affiliations
            .values()
            .filter(|a| **a == Affiliation::Owner)
            .count()
    }
}
