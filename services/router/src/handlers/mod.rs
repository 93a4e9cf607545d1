//! Server-side handlers, one file per protocol. Each parses its stanza into a typed request
//! and applies it. `server_iq` dispatches an iq addressed to the server or to an account.

pub mod archive;
pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod carbons;
pub mod disco;
pub mod last;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod roster;
pub mod stored;
pub mod subscription;
pub mod substate;
pub mod time;
pub mod vcard;
pub mod version;

use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

use crate::inbound::Inbound;
use crate::jids::Addr;
use crate::metrics::Outcome;
use crate::outbox::Outbox;
use crate::reply::{error, reply};
use crate::Ctx;

/// Who an iq is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entity {
    /// The domain itself.
    Server,
    /// An account, answered by the server on its behalf. `own`: the sender's own account;
    /// `no_to`: the iq had no `to` at all.
    Account {
        bare: String,
        own: bool,
        no_to: bool,
    },
}

/// Answers an iq get/set addressed to the server or an account: exactly one reply.
pub async fn server_iq(
    ctx: &Ctx,
    inb: &Inbound,
    out: &mut Outbox,
    entity: Entity,
) -> anyhow::Result<Outcome> {
    match inb.ty {
        StanzaType::Get | StanzaType::Set => {}
        // A client's answer to the server's caps query (XEP-0115); other results and errors
        // addressed to the server answer nothing we asked.
        StanzaType::Result | StanzaType::Error if entity == Entity::Server => {
            return crate::pep::notify::caps_result(ctx, inb, out).await
        }
        StanzaType::Result | StanzaType::Error => return Ok(Outcome::Dropped),
        _ => return Ok(error(ctx, inb, out, StanzaError::bad_request())),
    }
    let mut payloads = inb.el.children();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return Ok(error(ctx, inb, out, StanzaError::bad_request()));
    };
    let server_like = matches!(entity, Entity::Server | Entity::Account { no_to: true, .. });
    let answer = match payload.ns() {
        ns::ROSTER => match &entity {
            Entity::Account { own: true, .. } => return roster::handle(ctx, inb, out).await,
            _ => Err(StanzaError::service_unavailable()),
        },
        ns::BLOCKING => match &entity {
            Entity::Account { own: true, .. } if ctx.config.blocking => {
                return blocking::handle(ctx, inb, out).await
            }
            _ => Err(StanzaError::service_unavailable()),
        },
        ns::MAM => return archive::handle(ctx, inb, out, &entity, payload).await,
        ns::DISCO_INFO => disco::DiscoRequest::parse(inb.ty, payload)
            .and_then(|req| req.answer_info(&inb.el, &entity, &ctx.config.domain))
            .map(|r| blocking::advertised(ctx, r)),
        ns::DISCO_ITEMS => match disco::DiscoRequest::parse(inb.ty, payload) {
            Ok(req) => {
                let nodes = match &entity {
                    Entity::Account { bare, .. } if req.node.is_none() => {
                        pep::node_items(ctx, bare, &inb.from_bare).await?
                    }
                    // The MUC service (XEP-0045 §6.1).
                    Entity::Server if req.node.is_none() && ctx.config.muc => {
                        vec![Element::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", ctx.config.muc_domain())
                            .with_attr("name", "Chatrooms")]
                    }
                    _ => Vec::new(),
                };
                req.answer_items(&inb.el, nodes)
            }
            Err(e) => Err(e),
        },
        crate::pep::request::PUBSUB | crate::pep::request::PUBSUB_OWNER => {
            return pep::handle(ctx, inb, out, &entity, payload).await
        }
        ns::CARBONS => carbons::answer(&inb.el, inb.ty, payload, &entity),
        ns::PING => ping::Ping::parse(inb.ty, payload).map(|p| p.answer(&inb.el)),
        ns::VERSION if server_like => {
            version::VersionRequest::parse(inb.ty, payload).map(|v| v.answer(&inb.el))
        }
        ns::TIME if server_like => time::answer(inb.ty, &inb.el, payload, chrono::Utc::now()),
        ns::PRIVATE => private::answer(ctx, inb, out, &entity, payload).await?,
        ns::VCARD => vcard::answer(ctx, inb, &entity, payload).await?,
        ns::LAST => last::answer(ctx, inb, &entity, payload).await?,
        _ => Err(StanzaError::service_unavailable()),
    };
    Ok(match answer {
        Ok(mut result) => {
            if result.attr("to").is_none() {
                result.set_attr("to", inb.from.clone());
            }
            reply(ctx, inb, out, &result);
            Outcome::Handled
        }
        Err(e) => error(ctx, inb, out, e),
    })
}

/// Whether a local account exists: any session proves it, else ask the database.
pub async fn account_exists(ctx: &Ctx, addr: &Addr) -> anyhow::Result<bool> {
    if !ctx.sessions.read().resources(&addr.bare).is_empty() {
        return Ok(true);
    }
    match &addr.node {
        Some(node) => Ok(ctx.store.account_exists(node).await?),
        None => Ok(false),
    }
}
