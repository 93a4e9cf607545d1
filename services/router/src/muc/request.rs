//! What a client asks of a room, read into typed requests before anything is looked up:
//! the join element (password, history), the admin items (XEP-0045 §8, §9), the owner's
//! configuration form (§10.2) and invitations (§7.8.2). Pure; the fuzz target `muc` drives it.

use meerkat_xmpp::{ns, Element, StanzaError};

use super::room::{Affiliation, Config, Role};
use super::{NS_ADMIN, NS_MUC, NS_USER};

fn bad(text: &str) -> StanzaError {
    StanzaError::bad_request().text(text)
}

/// `<history/>` of a join (XEP-0045 §7.2.15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub maxstanzas: Option<u32>,
    pub maxchars: Option<u32>,
    pub seconds: Option<u32>,
    /// ms since the Unix epoch.
    pub since_ms: Option<i64>,
}

/// The `<x xmlns='http://jabber.org/protocol/muc'/>` of a join presence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Join {
    /// Whether the presence carries the element (a MUC-aware join).
    pub muc: bool,
    pub password: Option<String>,
    pub history: History,
}

impl Join {
    pub fn parse(presence: &Element) -> Join {
        let Some(x) = presence.get_child("x", NS_MUC) else {
            return Join::default();
        };
        let num = |h: &Element, a: &str| h.attr(a).and_then(|v| v.trim().parse::<u32>().ok());
        let history = x
            .get_child("history", NS_MUC)
            .map_or_else(History::default, |h| History {
                maxstanzas: num(h, "maxstanzas"),
                maxchars: num(h, "maxchars"),
                seconds: num(h, "seconds"),
                since_ms: h
                    .attr("since")
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
                    .map(|d| d.timestamp_millis()),
            });
        Join {
            muc: true,
            password: x.child_text("password", NS_MUC),
            history,
        }
    }
}

/// One `<item/>` of a muc#admin request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminItem {
    pub nick: Option<String>,
    /// Bare JID.
    pub jid: Option<String>,
    pub role: Option<Role>,
    pub affiliation: Option<Affiliation>,
    pub reason: Option<String>,
}

/// A muc#admin iq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// get: the list of one affiliation or one role.
    List {
        affiliation: Option<Affiliation>,
        role: Option<Role>,
    },
    /// set: role and affiliation changes.
    Change(Vec<AdminItem>),
}

/// Items a muc#admin set may carry at most.
pub const MAX_ADMIN_ITEMS: usize = 100;

impl AdminRequest {
    pub fn parse(set: bool, query: &Element) -> Result<AdminRequest, StanzaError> {
        let items: Vec<&Element> = query
            .children()
            .filter(|c| c.is("item", NS_ADMIN))
            .collect();
        if items.is_empty() || items.len() > MAX_ADMIN_ITEMS {
            return Err(bad("one to 100 items"));
        }
        let read = |i: &Element| -> Result<AdminItem, StanzaError> {
            let role = i
                .attr("role")
                .map(|r| Role::parse(r).ok_or_else(|| bad("unknown role")))
                .transpose()?;
            let affiliation = i
                .attr("affiliation")
                .map(|a| Affiliation::parse(a).ok_or_else(|| bad("unknown affiliation")))
                .transpose()?;
            let jid = i
                .attr("jid")
                .map(|j| {
                    crate::jids::Addr::parse(j)
                        .map(|a| a.bare)
                        .ok_or_else(StanzaError::jid_malformed)
                })
                .transpose()?;
            Ok(AdminItem {
                nick: i.attr("nick").map(str::to_owned),
                jid,
                role,
                affiliation,
                reason: i.child_text("reason", NS_ADMIN),
            })
        };
        if !set {
            let [item] = items.as_slice() else {
                return Err(bad("one item"));
            };
            let i = read(item)?;
            if i.role.is_some() == i.affiliation.is_some() {
                return Err(bad("a role or an affiliation"));
            }
            return Ok(AdminRequest::List {
                affiliation: i.affiliation,
                role: i.role,
            });
        }
        let items = items.into_iter().map(read).collect::<Result<Vec<_>, _>>()?;
        for i in &items {
            let ok = match (&i.role, &i.affiliation) {
                (Some(_), None) => i.nick.is_some(),
                (None, Some(_)) => i.jid.is_some(),
                _ => false,
            };
            if !ok {
                return Err(bad("a role with a nick, or an affiliation with a jid"));
            }
        }
        Ok(AdminRequest::Change(items))
    }
}

/// A muc#owner iq.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnerRequest {
    /// get: the configuration form.
    Form,
    /// set with a submitted form: the new configuration (applied to the current one).
    Submit(Vec<(String, Vec<String>)>),
    /// set with a cancelled form (or an empty submit: the instant room of §10.1.2).
    Cancel,
    /// set `<destroy/>`: alternate venue, reason.
    Destroy {
        jid: Option<String>,
        reason: Option<String>,
    },
}

impl OwnerRequest {
    pub fn parse(set: bool, query: &Element) -> Result<OwnerRequest, StanzaError> {
        let mut children = query.children();
        let first = children.next();
        if !set {
            return match first {
                None => Ok(OwnerRequest::Form),
                Some(_) => Err(bad("an empty query")),
            };
        }
        let (Some(el), None) = (first, children.next()) else {
            return Err(bad("one element"));
        };
        if el.is("destroy", super::NS_OWNER) {
            return Ok(OwnerRequest::Destroy {
                jid: el.attr("jid").map(str::to_owned),
                reason: el.child_text("reason", super::NS_OWNER),
            });
        }
        if !el.is("x", ns::DATA_FORMS) {
            return Err(bad("a data form or <destroy/>"));
        }
        match el.attr("type") {
            Some("cancel") => Ok(OwnerRequest::Cancel),
            Some("submit") => {
                let mut fields = Vec::new();
                for f in el.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
                    let Some(var) = f.attr("var") else {
                        return Err(bad("a field without var"));
                    };
                    let values = f
                        .children()
                        .filter(|v| v.is("value", ns::DATA_FORMS))
                        .map(Element::text)
                        .collect();
                    fields.push((var.to_owned(), values));
                }
                if fields.is_empty() {
                    return Ok(OwnerRequest::Cancel);
                }
                Ok(OwnerRequest::Submit(fields))
            }
            _ => Err(bad("a form of type submit or cancel")),
        }
    }
}

fn boolean(values: &[String]) -> Result<bool, StanzaError> {
    match values {
        [v] if v == "1" || v == "true" => Ok(true),
        [v] if v == "0" || v == "false" => Ok(false),
        _ => Err(bad("not a boolean")),
    }
}

fn single(values: &[String]) -> Result<&str, StanzaError> {
    match values {
        [v] => Ok(v),
        [] => Ok(""),
        _ => Err(bad("several values")),
    }
}

fn number(values: &[String], max: u32) -> Result<u32, StanzaError> {
    let v = single(values)?;
    if v.is_empty() || v == "none" {
        return Ok(max);
    }
    v.trim()
        .parse::<u32>()
        .map(|n| n.min(max))
        .map_err(|_| bad("not a number"))
}

/// Applies submitted fields to `config` (XEP-0045 §15.5.3 `muc#roomconfig`). An unknown field,
/// or a value of the wrong type: `bad-request`, nothing applied.
pub fn apply_form(
    config: &Config,
    fields: &[(String, Vec<String>)],
    max_users: u32,
    max_history: u32,
) -> Result<Config, StanzaError> {
    let mut c = config.clone();
    for (var, values) in fields {
        match var.as_str() {
            "FORM_TYPE" => {
                if single(values)? != "http://jabber.org/protocol/muc#roomconfig" {
                    return Err(bad("FORM_TYPE"));
                }
            }
            "muc#roomconfig_roomname" => c.name = single(values)?.to_owned(),
            "muc#roomconfig_roomdesc" => c.desc = single(values)?.to_owned(),
            "muc#roomconfig_persistentroom" => c.persistent = boolean(values)?,
            "muc#roomconfig_publicroom" => c.public = boolean(values)?,
            "muc#roomconfig_membersonly" => c.members_only = boolean(values)?,
            "muc#roomconfig_moderatedroom" => c.moderated = boolean(values)?,
            "muc#roomconfig_passwordprotectedroom" => c.password_protected = boolean(values)?,
            "muc#roomconfig_roomsecret" => c.password = single(values)?.to_owned(),
            "muc#roomconfig_maxusers" => c.max_users = number(values, max_users)?.max(1),
            "muc#roomconfig_whois" => {
                c.whois_anyone = match single(values)? {
                    "anyone" => true,
                    "moderators" => false,
                    _ => return Err(bad("whois: anyone or moderators")),
                }
            }
            "muc#roomconfig_historylength" | "muc#maxhistoryfetch" => {
                c.history_length = number(values, max_history)?
            }
            "muc#roomconfig_enablelogging" => c.logging = boolean(values)?,
            "muc#roomconfig_changesubject" => c.change_subject = boolean(values)?,
            "muc#roomconfig_allowinvites" => c.allow_invites = boolean(values)?,
            "muc#roomconfig_allowpm" => {
                c.allow_pm = match single(values)? {
                    "anyone" | "participants" | "moderators" => true,
                    "none" => false,
                    _ => return Err(bad("allowpm: anyone, participants, moderators or none")),
                }
            }
            _ => return Err(bad("unknown field")),
        }
    }
    if c.password_protected && c.password.is_empty() {
        return Err(bad("a password-protected room needs a secret"));
    }
    Ok(c)
}

/// A mediated invitation (XEP-0045 §7.8.2): the invitees (bare JIDs) and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub to: Vec<String>,
    pub reason: Option<String>,
}

/// Invitations at most in one message.
pub const MAX_INVITES: usize = 20;

impl Invite {
    /// `None`: the message is not an invitation.
    pub fn parse(message: &Element) -> Option<Result<Invite, StanzaError>> {
        let x = message.get_child("x", NS_USER)?;
        let invites: Vec<&Element> = x.children().filter(|c| c.is("invite", NS_USER)).collect();
        if invites.is_empty() {
            return None;
        }
        if invites.len() > MAX_INVITES {
            return Some(Err(StanzaError::resource_constraint()));
        }
        let mut to = Vec::new();
        let mut reason = None;
        for i in invites {
            let Some(jid) = i.attr("to").and_then(crate::jids::Addr::parse) else {
                return Some(Err(StanzaError::jid_malformed()));
            };
            to.push(jid.bare);
            reason = reason.or_else(|| i.child_text("reason", NS_USER));
        }
        Some(Ok(Invite { to, reason }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        Element::parse(xml).expect("xml")
    }

    #[test]
    fn joins_read_password_and_history() {
        let p = el("<presence xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc'><password>s</password><history maxstanzas='5' since='1970-01-01T00:00:01Z'/></x></presence>");
        let j = Join::parse(&p);
        assert!(j.muc);
        assert_eq!(j.password.as_deref(), Some("s"));
        assert_eq!(j.history.maxstanzas, Some(5));
        assert_eq!(j.history.since_ms, Some(1000));
        assert!(!Join::parse(&el("<presence xmlns='jabber:client'/>")).muc);
    }

    #[test]
    fn admin_items_need_a_target() {
        let q = |x: &str| {
            el(&format!(
                "<query xmlns='http://jabber.org/protocol/muc#admin'>{x}</query>"
            ))
        };
        assert_eq!(
            AdminRequest::parse(
                true,
                &q("<item nick='n' role='none'><reason>r</reason></item>")
            ),
            Ok(AdminRequest::Change(vec![AdminItem {
                nick: Some("n".into()),
                jid: None,
                role: Some(Role::None),
                affiliation: None,
                reason: Some("r".into()),
            }]))
        );
        assert!(AdminRequest::parse(true, &q("<item role='none'/>")).is_err());
        assert!(AdminRequest::parse(true, &q("<item jid='a@b' affiliation='king'/>")).is_err());
        assert!(AdminRequest::parse(true, &q("")).is_err());
        assert_eq!(
            AdminRequest::parse(false, &q("<item affiliation='member'/>")),
            Ok(AdminRequest::List {
                affiliation: Some(Affiliation::Member),
                role: None
            })
        );
    }

    #[test]
    fn forms_apply_or_refuse_whole() {
        let c = Config::default();
        let f = |var: &str, v: &str| (var.to_owned(), vec![v.to_owned()]);
        let n = apply_form(
            &c,
            &[
                f("muc#roomconfig_membersonly", "1"),
                f("muc#roomconfig_maxusers", "10"),
            ],
            100,
            50,
        )
        .expect("form");
        assert!(n.members_only);
        assert_eq!(n.max_users, 10);
        assert!(apply_form(&c, &[f("muc#roomconfig_membersonly", "maybe")], 100, 50).is_err());
        assert!(apply_form(&c, &[f("x-unknown", "1")], 100, 50).is_err());
        assert!(apply_form(
            &c,
            &[f("muc#roomconfig_passwordprotectedroom", "1")],
            100,
            50
        )
        .is_err());
    }
}
