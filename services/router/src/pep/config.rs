//! A PEP node's configuration (XEP-0060 §8.2, the subset XEP-0163 and its clients use): the
//! access model, how many items it keeps, whether it keeps them, when the last item is sent.
//! Stored as JSON (the node's body in the store); read from a configure form or from
//! `publish-options` (§7.1.5: preconditions, checked against an existing node, the new
//! node's configuration otherwise — XEP-0223).

use meerkat_xmpp::{Element, StanzaError};
use serde::{Deserialize, Serialize};

use super::form::{self, FieldOut, Form};
use super::request::pubsub_error;

pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Who may retrieve a node's items and get its notifications (XEP-0060 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Open,
    Presence,
    Roster,
    Whitelist,
}

impl Access {
    pub const ALL: [&'static str; 4] = ["open", "presence", "roster", "whitelist"];

    fn parse(s: &str) -> Option<Access> {
        match s {
            "open" => Some(Access::Open),
            "presence" => Some(Access::Presence),
            "roster" => Some(Access::Roster),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Roster => "roster",
            Access::Whitelist => "whitelist",
        }
    }
}

/// When the last published item is sent (`pubsub#send_last_published_item`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    const ALL: [&'static str; 3] = ["never", "on_sub", "on_sub_and_presence"];

    fn parse(s: &str) -> Option<SendLast> {
        match s {
            "never" => Some(SendLast::Never),
            "on_sub" => Some(SendLast::OnSub),
            "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub access_model: Access,
    pub max_items: u32,
    pub persist_items: bool,
    pub send_last: SendLast,
    /// `pubsub#roster_groups_allowed` for the roster access model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roster_groups: Vec<String>,
}

impl NodeConfig {
    /// A new node's configuration: presence access (XEP-0163 §4), one item, persistent, the
    /// last item sent at subscription and presence.
    pub fn default_pep() -> NodeConfig {
        NodeConfig {
            access_model: Access::Presence,
            max_items: 1,
            persist_items: true,
            send_last: SendLast::OnSubAndPresence,
            roster_groups: Vec::new(),
        }
    }

    /// Reads a stored configuration; one this version cannot read is the default (a node
    /// is never lost for it).
    pub fn from_json(body: &str) -> NodeConfig {
        serde_json::from_str(body).unwrap_or_else(|_| NodeConfig::default_pep())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// How many items the store keeps: `max_items`, or only the last (for notifications of
    /// the last published item) when items are not persisted.
    pub fn kept(&self) -> u32 {
        if self.persist_items {
            self.max_items
        } else {
            1
        }
    }

    /// Applies a configure form (owner, §8.2.4): unknown fields and bad values → not-acceptable.
    pub fn configure(&self, form: &Form, cap: u32) -> Result<NodeConfig, StanzaError> {
        if form.form_type.as_deref().is_some_and(|t| t != NODE_CONFIG) {
            return Err(StanzaError::bad_request().text("FORM_TYPE must be pubsub#node_config"));
        }
        let mut cfg = self.clone();
        for (var, values) in &form.fields {
            cfg.set(var, values, cap).map_err(|e| {
                StanzaError::not_acceptable().text(format!("{var}: {}", e.unwrap_or("unsupported")))
            })?;
        }
        Ok(cfg)
    }

    /// The configuration `publish-options` asks for, from `base` (the node's, or a new
    /// node's default). An unknown field or a bad value: conflict / precondition-not-met, as
    /// a mismatch (a service advertising publish-options must reject unknown fields).
    pub fn with_options(&self, form: &Form, cap: u32) -> Result<NodeConfig, StanzaError> {
        if form
            .form_type
            .as_deref()
            .is_some_and(|t| t != PUBLISH_OPTIONS)
        {
            return Err(StanzaError::bad_request().text("FORM_TYPE must be pubsub#publish-options"));
        }
        let mut cfg = self.clone();
        for (var, values) in &form.fields {
            cfg.set(var, values, cap)
                .map_err(|e| precondition(&format!("{var}: {}", e.unwrap_or("unsupported"))))?;
        }
        Ok(cfg)
    }

    /// Sets one field; `Err(None)`: a field this service does not know.
    fn set(&mut self, var: &str, values: &[String], cap: u32) -> Result<(), Option<&'static str>> {
        let one = || values.first().map(|v| v.trim()).unwrap_or("");
        match var {
            "pubsub#access_model" => {
                self.access_model = Access::parse(one()).ok_or(Some("unknown access model"))?;
            }
            "pubsub#max_items" => {
                self.max_items = match one() {
                    "max" => cap,
                    n => match n.parse::<u32>() {
                        Ok(n) if (1..=cap).contains(&n) => n,
                        _ => {
                            return Err(Some("an integer from 1 to the service's maximum, or max"))
                        }
                    },
                };
            }
            "pubsub#persist_items" => {
                self.persist_items = boolean(one()).ok_or(Some("a boolean"))?
            }
            "pubsub#send_last_published_item" => {
                self.send_last =
                    SendLast::parse(one()).ok_or(Some("never, on_sub or on_sub_and_presence"))?;
            }
            "pubsub#roster_groups_allowed" => self.roster_groups = values.to_vec(),
            // Accepted and not kept: what clients commonly set along and PEP does anyway.
            "pubsub#notify_retract"
            | "pubsub#deliver_payloads"
            | "pubsub#deliver_notifications"
            | "pubsub#presence_based_delivery" => {
                boolean(one()).ok_or(Some("a boolean"))?;
            }
            _ => return Err(None),
        }
        Ok(())
    }

    /// The configure form (§8.2.1, and the default configuration §8.3).
    pub fn to_form(&self, cap: u32) -> Element {
        let max = if self.max_items >= cap {
            "max".to_owned()
        } else {
            self.max_items.to_string()
        };
        let b = |v: bool| if v { "1" } else { "0" }.to_owned();
        form::build(
            NODE_CONFIG,
            &[
                FieldOut {
                    var: "pubsub#access_model",
                    ty: "list-single",
                    values: vec![self.access_model.as_str().to_owned()],
                    options: &Access::ALL,
                },
                FieldOut {
                    var: "pubsub#max_items",
                    ty: "text-single",
                    values: vec![max],
                    options: &[],
                },
                FieldOut {
                    var: "pubsub#persist_items",
                    ty: "boolean",
                    values: vec![b(self.persist_items)],
                    options: &[],
                },
                FieldOut {
                    var: "pubsub#send_last_published_item",
                    ty: "list-single",
                    values: vec![self.send_last.as_str().to_owned()],
                    options: &SendLast::ALL,
                },
                FieldOut {
                    var: "pubsub#roster_groups_allowed",
                    ty: "list-multi",
                    values: self.roster_groups.clone(),
                    options: &[],
                },
            ],
        )
    }
}

fn boolean(s: &str) -> Option<bool> {
    match s {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// XEP-0060 §7.1.5: conflict with `<precondition-not-met/>`.
pub fn precondition(text: &str) -> StanzaError {
    pubsub_error(StanzaError::conflict(), "precondition-not-met").text(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> Form {
        Form {
            form_type: Some(PUBLISH_OPTIONS.to_owned()),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
        }
    }

    #[test]
    fn publish_options_set_what_they_name() {
        let base = NodeConfig::default_pep();
        let cfg = base
            .with_options(
                &form(&[
                    ("pubsub#access_model", "open"),
                    ("pubsub#max_items", "max"),
                    ("pubsub#persist_items", "true"),
                    ("pubsub#send_last_published_item", "never"),
                ]),
                256,
            )
            .expect("options");
        assert_eq!(cfg.access_model, Access::Open);
        assert_eq!(cfg.max_items, 256);
        assert_eq!(cfg.send_last, SendLast::Never);
        assert_eq!(NodeConfig::from_json(&cfg.to_json()), cfg);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_preconditions_not_met() {
        let base = NodeConfig::default_pep();
        for f in [
            ("pubsub#access_model", "authorize"),
            ("pubsub#max_items", "0"),
            ("pubsub#max_items", "257"),
            ("pubsub#persist_items", "maybe"),
            ("pubsub#title", "x"),
        ] {
            let e = base.with_options(&form(&[f]), 256).expect_err("refused");
            assert_eq!(e.condition, "conflict", "{f:?}");
        }
        let e = base
            .configure(
                &Form {
                    form_type: None,
                    fields: vec![("pubsub#max_items".into(), vec!["1000".into()])],
                },
                256,
            )
            .expect_err("past the cap");
        assert_eq!(e.condition, "not-acceptable");
    }

    #[test]
    fn a_form_round_trips() {
        let mut cfg = NodeConfig::default_pep();
        cfg.access_model = Access::Roster;
        cfg.roster_groups = vec!["friends".into()];
        let back = Form::parse(&cfg.to_form(256)).expect("form");
        let again = NodeConfig::default_pep()
            .configure(&back, 256)
            .expect("configure");
        assert_eq!(again, cfg);
    }
}
