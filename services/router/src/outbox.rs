//! Deliveries produced while handling one stanza, published together (confirmed) before the
//! stanza is acked. Publishing through one channel in call order keeps per-recipient order.
//! A session of this DC gets its delivery from `meerkat.deliver`; a session of another DC
//! (its directory entry names that DC) gets the stanza wrapped in a route envelope on the
//! federated `meerkat.inter.stanzas`, routing key = that DC.

use std::collections::HashMap;

use meerkat_bus::Props;
use meerkat_wire::fanout::{self, Recipient};
use meerkat_wire::{envelope, headers as h, topology as names, RouteKind, SessionInfo};
use meerkat_xmpp::Element;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::Ctx;

/// A session to deliver to: its DC, the gateway that holds it and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The session's DC; empty means this DC.
    pub dc: String,
    pub gateway: String,
    pub session: Uuid,
}

impl Target {
    /// Whether the session lives at another DC than `own_dc`.
    pub fn is_remote(&self, own_dc: &str) -> bool {
        !self.dc.is_empty() && self.dc != own_dc
    }
}

impl From<&SessionInfo> for Target {
    fn from(s: &SessionInfo) -> Target {
        Target {
            dc: s.dc.clone(),
            gateway: s.gateway.clone(),
            session: s.session_id,
        }
    }
}

#[derive(Debug)]
struct Out {
    /// For a fan-out, where it goes (the DC, or this DC's gateway); its session is nil.
    target: Target,
    kind: RouteKind,
    /// `None` for a kick. A fan-out's without `to` (each copy gets its recipient's).
    stanza: Option<Element>,
    /// The delivery's message id (the gateway shows a message id only once).
    id: DeliveryId,
    /// A fan-out's copies (meerkat_wire::fanout); empty otherwise.
    copies: Vec<Recipient>,
}

#[derive(Debug)]
enum DeliveryId {
    /// A fresh random id.
    Fresh,
    /// Derived from a key naming what is delivered, when the same thing can be sent to a
    /// session by several routes (a subscription request: live, at login, by a nudge).
    Keyed(String),
    /// The id it already has (a stanza from another DC keeps its envelope's id, which may
    /// be keyed).
    Given(String),
}

#[derive(Debug, Default)]
pub struct Outbox {
    items: Vec<Out>,
    /// Hops left, carried on deliveries so a bounce decrements it; a hop to another DC
    /// spends one.
    hops: u64,
    /// Accounts something was stored for: what is stored goes to their resources available
    /// here (handlers/stored.rs).
    nudges: Vec<String>,
    /// The id of the envelope being handled, when it has one: each delivery's id is derived
    /// from it (see [`Outbox::derived_from`]).
    origin: Option<String>,
    /// Deliveries queued so far per session (the derived ids' sequence).
    per_session: HashMap<Uuid, u32>,
}

impl Outbox {
    pub fn new(hops: u64) -> Outbox {
        Outbox {
            items: Vec::new(),
            hops,
            nudges: Vec::new(),
            origin: None,
            per_session: HashMap::new(),
        }
    }

    /// Derives every delivery's id from `origin`, the id of the envelope being handled: the
    /// n-th delivery to a session gets the same id every time that envelope is handled. A
    /// handling retried after a failure (its deliveries published, a write failed) or an
    /// envelope the broker gives again is then shown to each session once (the gateway
    /// drops a message id it has handed over).
    pub fn derived_from(mut self, origin: Option<&str>) -> Outbox {
        self.origin = origin.map(str::to_owned);
        self
    }

    /// The id of the envelope being handled, if any: what the handling writes may be keyed
    /// by it (an offline message is stored once per envelope).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// A fresh delivery's id: derived from the origin when there is one, else random.
    fn fresh_id(&mut self, session: Uuid) -> DeliveryId {
        let Some(origin) = &self.origin else {
            return DeliveryId::Fresh;
        };
        let n = self.per_session.entry(session).or_insert(0);
        let id = Uuid::new_v5(
            &DERIVED_DELIVERY,
            format!("{origin}\n{session}\n{n}").as_bytes(),
        );
        *n += 1;
        DeliveryId::Given(id.to_string())
    }

    /// Queues a stanza for one session, exactly as the recipient must see it.
    pub fn deliver(&mut self, target: impl Into<Target>, stanza: &Element) {
        let target = target.into();
        let id = self.fresh_id(target.session);
        self.items.push(Out {
            target,
            kind: RouteKind::Stanza,
            stanza: Some(stanza.clone()),
            id,
            copies: Vec::new(),
        });
    }

    /// Queues a stanza for one session under the message id it came with (from another DC):
    /// what another DC keyed stays recognisable here.
    pub fn deliver_as(&mut self, target: impl Into<Target>, stanza: &Element, id: &str) {
        self.items.push(Out {
            target: target.into(),
            kind: RouteKind::Stanza,
            stanza: Some(stanza.clone()),
            id: DeliveryId::Given(id.to_owned()),
            copies: Vec::new(),
        });
    }

    /// Queues a stanza that a session must see once even if it is queued for it again,
    /// from another stanza's handling, under the same `key`.
    pub fn deliver_once(&mut self, target: impl Into<Target>, stanza: &Element, key: &str) {
        self.items.push(Out {
            target: target.into(),
            kind: RouteKind::Stanza,
            stanza: Some(stanza.clone()),
            id: DeliveryId::Keyed(key.to_owned()),
            copies: Vec::new(),
        });
    }

    /// Queues `stanza` for each of `recipients` (a session and the full JID that is its
    /// `to`), as [`Outbox::deliver`] of each copy would, in that order, but as one fan-out
    /// message per gateway of this DC and per other DC (meerkat_wire::fanout; without
    /// `config.fanout`, one delivery each).
    pub fn fan_out(&mut self, ctx: &Ctx, stanza: &Element, recipients: Vec<(Target, String)>) {
        let copies = recipients
            .into_iter()
            .map(|(target, to)| {
                let id = match self.fresh_id(target.session) {
                    DeliveryId::Given(id) | DeliveryId::Keyed(id) => id,
                    DeliveryId::Fresh => Uuid::new_v4().to_string(),
                };
                (target, to, id)
            })
            .collect();
        self.fan_out_as(ctx, stanza, copies);
    }

    /// [`Outbox::fan_out`] with each copy's message id given (a fan-out from another DC).
    pub fn fan_out_as(
        &mut self,
        ctx: &Ctx,
        stanza: &Element,
        copies: Vec<(Target, String, String)>,
    ) {
        if !ctx.config.fanout || copies.len() < 2 {
            for (target, to, id) in copies {
                let mut el = stanza.clone();
                el.set_attr("to", to);
                self.deliver_as(target, &el, &id);
            }
            return;
        }
        let own = ctx.config.dc.as_str();
        let mut bare = stanza.clone();
        bare.remove_attr("to");
        // Grouped by where they go, in the order each place first appears.
        let mut groups: Vec<(Target, Vec<Recipient>)> = Vec::new();
        for (target, to, id) in copies {
            let place = if target.is_remote(own) {
                Target {
                    dc: target.dc.clone(),
                    gateway: String::new(),
                    session: Uuid::nil(),
                }
            } else {
                Target {
                    dc: String::new(),
                    gateway: target.gateway.clone(),
                    session: Uuid::nil(),
                }
            };
            let copy = Recipient {
                session: target.session,
                id,
                to,
            };
            match groups.iter_mut().find(|(p, _)| *p == place) {
                Some((_, list)) => list.push(copy),
                None => groups.push((place, vec![copy])),
            }
        }
        for (place, list) in groups {
            // Alone at its gateway or DC: a delivery of its own, as without fan-outs.
            if let [one] = list.as_slice() {
                let mut el = bare.clone();
                el.set_attr("to", one.to.clone());
                let target = Target {
                    session: one.session,
                    ..place
                };
                self.deliver_as(target, &el, &one.id);
                continue;
            }
            for chunk in fanout::split(&list) {
                self.items.push(Out {
                    target: place.clone(),
                    kind: RouteKind::Fanout,
                    stanza: Some(bare.clone()),
                    id: combined_id(chunk),
                    copies: chunk.to_vec(),
                });
            }
        }
    }

    /// Queues a fan-out of `stanza` with no copies for `dc` (another DC): a room's archive
    /// copy for a DC where the room has no occupant (muc/kept.rs). Nothing when fan-outs are
    /// off (a mesh being upgraded: the receivers before wire 1.6 would drop it).
    pub fn archive_copy(&mut self, ctx: &Ctx, dc: &str, stanza: &Element) {
        if !ctx.config.fanout {
            return;
        }
        let mut bare = stanza.clone();
        bare.remove_attr("to");
        let id = self.fresh_id(Uuid::nil());
        self.items.push(Out {
            target: Target {
                dc: dc.to_owned(),
                gateway: String::new(),
                session: Uuid::nil(),
            },
            kind: RouteKind::Fanout,
            stanza: Some(bare),
            id,
            copies: Vec::new(),
        });
    }

    /// The other DCs something is queued for so far.
    pub fn remote_dcs(&self, ctx: &Ctx) -> Vec<String> {
        let own = ctx.config.dc.as_str();
        let mut dcs: Vec<String> = Vec::new();
        for o in &self.items {
            if o.target.is_remote(own) && !dcs.contains(&o.target.dc) {
                dcs.push(o.target.dc.clone());
            }
        }
        dcs
    }

    /// Queues a kick: the gateway closes the session with a `<conflict/>` stream error.
    pub fn kick(&mut self, target: impl Into<Target>) {
        let target = target.into();
        let id = self.fresh_id(target.session);
        self.items.push(Out {
            target,
            kind: RouteKind::Conflict,
            stanza: None,
            id,
            copies: Vec::new(),
        });
    }

    /// The sessions a stanza is queued for so far.
    pub fn delivered_sessions(&self) -> Vec<Uuid> {
        self.items
            .iter()
            .flat_map(|o| match o.kind {
                RouteKind::Stanza => vec![o.target.session],
                RouteKind::Fanout => o.copies.iter().map(|c| c.session).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// Queues a nudge for `bare`, published after the deliveries: the router partition of the
    /// account delivers what is stored for it to its resources available at this DC.
    pub fn nudge_stored(&mut self, bare: &str) {
        if !self.nudges.iter().any(|b| b == bare) {
            self.nudges.push(bare.to_owned());
        }
    }

    /// Publishes everything queued and waits for every confirm.
    pub async fn flush(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let own = ctx.config.dc.as_str();
        let items = if ctx.config.fanout {
            bundled(std::mem::take(&mut self.items), own)
        } else {
            std::mem::take(&mut self.items)
        };
        let written = ctx.store.written_mark();
        // Started in order: the publisher's channel lock is fair, so the broker sees them in
        // this order; the confirms are awaited together.
        let publishes = items.iter().map(|o| {
            let remote = o.target.is_remote(own);
            let hops = if remote {
                self.hops.saturating_sub(1)
            } else {
                self.hops
            };
            let id = message_id(o);
            let mut props = Props::stanza(o.kind, own).id(id.clone()).u64(h::HOPS, hops);
            // A fan-out or bundle names its copies; an archive copy names none (`[]`).
            props = if o.kind == RouteKind::Fanout || !o.copies.is_empty() {
                props.str(h::RECIPIENTS, &fanout::encode(&o.copies))
            } else {
                props.str(h::SESSION, &o.target.session.to_string())
            };
            if remote {
                props = props.str(h::TARGET_DC, &o.target.dc);
                if let Some((epoch, seq)) = &written {
                    props = props
                        .str(h::DATA_EPOCH, epoch)
                        .u64(h::DATA_SEQ, u64::try_from(*seq).unwrap_or(0));
                }
                // A bundle's sender is its stanzas' (one per bundle to another DC).
                let stanza = o.stanza.as_ref().and_then(|s| match o.kind {
                    RouteKind::Bundle => s.children().next(),
                    _ => Some(s),
                });
                props = props.opt_str(h::SENDER, stanza.and_then(|s| s.attr("from")));
            }
            tracing::debug!(session = %o.target.session, copies = o.copies.len(), dc = %o.target.dc, gateway = %o.target.gateway, message = %id, stanza = ?o.stanza.as_ref().and_then(|s| s.attr("id")), kind = o.kind.as_str(), "delivery");
            let span = publish_span(remote, o, &id);
            span.in_scope(|| meerkat_runtime::telemetry::inject_context(props.headers_mut()));
            let (exchange, key, body) = if remote {
                let body = envelope::wrap(
                    o.stanza.as_ref(),
                    &names::dc_address(own, &ctx.config.domain),
                    &names::dc_address(&o.target.dc, &ctx.config.domain),
                );
                ctx.metrics.inter_out.inc();
                (names::INTER_STANZAS_EXCHANGE, o.target.dc.as_str(), body)
            } else {
                let body = o.stanza.as_ref().map(Element::to_xml).unwrap_or_default();
                (names::DELIVER_EXCHANGE, o.target.gateway.as_str(), body)
            };
            // Test only: a DC speaking a newer minor version sends a kind this one does not
            // know besides (docs/protocol.md); receivers park it.
            let newer_kind = (remote && ctx.config.test_newer_minor_wire).then(|| {
                Props::stanza(o.kind, own).str(h::KIND, meerkat_bus::publisher::NEWER_MINOR_KIND)
            });
            async move {
                // To another DC: the federated exchange must have the link's binding; while a
                // link restarts it has none, and the stanza is published again.
                if remote {
                    ctx.publisher
                        .publish_routed(exchange, key, props, body.as_bytes())
                        .await?;
                } else {
                    ctx.publisher
                        .publish(exchange, key, props, body.as_bytes())
                        .await?;
                }
                if let Some(props) = newer_kind {
                    ctx.publisher
                        .publish(exchange, key, props, body.as_bytes())
                        .await?;
                }
                Ok::<(), meerkat_bus::PublishError>(())
            }
            .instrument(span)
        });
        for r in futures::future::join_all(publishes).await {
            r?;
        }
        for bare in std::mem::take(&mut self.nudges) {
            ctx.publisher.offline_nudge(own, &bare).await?;
        }
        Ok(())
    }
}

/// `items` with each run of two or more consecutive stanzas for sessions of one gateway of
/// this DC, or for sessions at one other DC from one sender, made one bundle
/// (meerkat_wire::fanout), or several when their recipients do not fit one header; in order,
/// each stanza under the id it would have had alone. A bundle to another DC is handled there
/// in the partition of its sender (fanout.rs), hence one sender per bundle: a sender's stanzas
/// keep their order there.
fn bundled(items: Vec<Out>, own: &str) -> Vec<Out> {
    let bundleable =
        |o: &Out| o.kind == RouteKind::Stanza && o.copies.is_empty() && o.stanza.is_some();
    // Where a bundle of `o` goes: its gateway here, or its DC and sender's bare JID.
    let place = |o: &Out| {
        if o.target.is_remote(own) {
            let sender = o
                .stanza
                .as_ref()
                .and_then(|s| s.attr("from"))
                .map(crate::jids::bare);
            (o.target.dc.clone(), sender)
        } else {
            (String::new(), Some(o.target.gateway.clone()))
        }
    };
    let mut result = Vec::with_capacity(items.len());
    let mut run: Vec<Out> = Vec::new();
    // The place of the run's first item: each item's place is worked out once (a sender's
    // bare JID is a normalising parse), not again for every item that joins the run.
    let mut run_place = None;
    for o in items {
        let at = bundleable(&o).then(|| place(&o));
        let joins = at
            .as_ref()
            .is_some_and(|p| p.1.is_some() && run_place.as_ref() == Some(p));
        if !joins {
            bundle_run(std::mem::take(&mut run), own, &mut result);
            run_place = None;
        }
        match at {
            Some(p) => {
                if run.is_empty() {
                    run_place = Some(p);
                }
                run.push(o);
            }
            None => result.push(o),
        }
    }
    bundle_run(run, own, &mut result);
    result
}

fn bundle_run(run: Vec<Out>, own: &str, result: &mut Vec<Out>) {
    if run.len() < 2 {
        result.extend(run);
        return;
    }
    let copies: Vec<Recipient> = run
        .iter()
        .map(|o| Recipient {
            session: o.target.session,
            id: message_id(o),
            to: o
                .stanza
                .as_ref()
                .and_then(|s| s.attr("to"))
                .unwrap_or("-")
                .to_owned(),
        })
        .collect();
    // Another DC, or a gateway of this one.
    let (dc, gateway) = if run[0].target.is_remote(own) {
        (run[0].target.dc.clone(), String::new())
    } else {
        (String::new(), run[0].target.gateway.clone())
    };
    let mut at = 0;
    for chunk in fanout::split(&copies) {
        let outs = &run[at..at + chunk.len()];
        at += chunk.len();
        if let ([o], [copy]) = (outs, chunk) {
            result.push(Out {
                target: o.target.clone(),
                kind: RouteKind::Stanza,
                stanza: o.stanza.clone(),
                id: DeliveryId::Given(copy.id.clone()),
                copies: Vec::new(),
            });
            continue;
        }
        let stanzas: Vec<&Element> = outs.iter().filter_map(|o| o.stanza.as_ref()).collect();
        result.push(Out {
            target: Target {
                dc: dc.clone(),
                gateway: gateway.clone(),
                session: Uuid::nil(),
            },
            kind: RouteKind::Bundle,
            stanza: Some(fanout::bundle(&stanzas)),
            id: combined_id(chunk),
            copies: chunk.to_vec(),
        });
    }
}

/// A fan-out's or a bundle's id, derived from its copies': the same copies make the same id,
/// so a retried handling's message is one.
fn combined_id(copies: &[Recipient]) -> DeliveryId {
    let ids: Vec<&str> = copies.iter().map(|c| c.id.as_str()).collect();
    DeliveryId::Given(Uuid::new_v5(&FANOUT_DELIVERY, ids.join("\n").as_bytes()).to_string())
}

/// The publish span of one delivery, a child of the span handling the stanza (current here);
/// its context is the delivery's creation context. Named and attributed by the OpenTelemetry
/// messaging conventions: to another DC over the federated exchange, routing key = that DC, or
/// to a gateway of this DC, routing key = the gateway.
fn publish_span(remote: bool, o: &Out, message_id: &str) -> tracing::Span {
    if remote {
        tracing::info_span!(
            "publish meerkat.inter.stanzas",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "publish",
            messaging.operation.name = "publish",
            messaging.destination.name = names::INTER_STANZAS_EXCHANGE,
            messaging.rabbitmq.destination.routing_key = o.target.dc.as_str(),
            messaging.message.id = message_id,
            meerkat.delivery.kind = o.kind.as_str(),
        )
    } else {
        tracing::info_span!(
            "publish meerkat.deliver",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "publish",
            messaging.operation.name = "publish",
            messaging.destination.name = names::DELIVER_EXCHANGE,
            messaging.rabbitmq.destination.routing_key = o.target.gateway.as_str(),
            messaging.message.id = message_id,
            meerkat.delivery.kind = o.kind.as_str(),
        )
    }
}

/// Namespace of keyed delivery ids (a fixed random UUID).
const KEYED_DELIVERY: Uuid = Uuid::from_u128(0x5d1c_83a4_2b6f_4e0d_9a57_c3e1_64f0_8b29);
/// Namespace of fan-out ids, derived from their copies' (a fixed random UUID).
const FANOUT_DELIVERY: Uuid = Uuid::from_u128(0x2c8a_61f4_0b93_47e5_8d1e_97a3_5f06_c4d2);
/// Namespace of delivery ids derived from the handled envelope's (a fixed random UUID).
const DERIVED_DELIVERY: Uuid = Uuid::from_u128(0x9e3f_0c27_71d8_4b5a_a6e4_2f19_c08d_53b6);

/// A random id, or for a keyed delivery one derived from the key and the session, so the
/// same key queued twice for one session carries one id; or the id it came with.
fn message_id(o: &Out) -> String {
    match &o.id {
        DeliveryId::Keyed(key) => Uuid::new_v5(
            &KEYED_DELIVERY,
            format!("{}\n{}", o.target.session, key).as_bytes(),
        )
        .to_string(),
        DeliveryId::Given(id) => id.clone(),
        DeliveryId::Fresh => Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(session: Uuid, key: Option<&str>) -> Out {
        Out {
            target: Target {
                dc: String::new(),
                gateway: "gw".into(),
                session,
            },
            kind: RouteKind::Stanza,
            stanza: None,
            id: key.map_or(DeliveryId::Fresh, |k| DeliveryId::Keyed(k.to_owned())),
            copies: Vec::new(),
        }
    }

    #[test]
    fn keyed_deliveries_share_an_id_per_session_only() {
        let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
        let id = |s, k| message_id(&out(s, k));
        assert_eq!(id(s1, Some("a")), id(s1, Some("a")));
        assert_ne!(id(s1, Some("a")), id(s2, Some("a")));
        assert_ne!(id(s1, Some("a")), id(s1, Some("b")));
        assert_ne!(id(s1, None), id(s1, None));
    }

    #[test]
    fn a_given_id_is_kept() {
        let mut o = out(Uuid::now_v7(), None);
        o.id = DeliveryId::Given("from-dc1".into());
        assert_eq!(message_id(&o), "from-dc1");
    }

    fn target(session: Uuid) -> Target {
        Target {
            dc: String::new(),
            gateway: "gw".into(),
            session,
        }
    }

    /// The ids of what one handling of an envelope queues.
    fn handling(origin: Option<&str>, sessions: &[Uuid]) -> Vec<String> {
        let mut out = Outbox::new(3).derived_from(origin);
        let el = Element::new("message", meerkat_xmpp::ns::CLIENT);
        for s in sessions {
            out.deliver(target(*s), &el);
        }
        out.kick(target(sessions[0]));
        out.items.iter().map(message_id).collect()
    }

    #[test]
    fn a_retried_handling_repeats_its_ids_and_no_two_deliveries_share_one() {
        let (s1, s2) = (Uuid::now_v7(), Uuid::now_v7());
        let order = [s1, s2, s1];
        let first = handling(Some("env-1"), &order);
        assert_eq!(first, handling(Some("env-1"), &order));
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), first.len(), "{first:?}");
        assert!(first
            .iter()
            .all(|id| !handling(Some("env-2"), &order).contains(id)));
        // Without an envelope id, random ones.
        assert_ne!(handling(None, &order), handling(None, &order));
    }
}
