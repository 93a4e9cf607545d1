//! What a client asks of its message archive (XEP-0313 `urn:xmpp:mam:2`, with XEP-0059 result
//! set management), read into a typed request before anything is looked up. Pure: the
//! handler (handlers/archive.rs) applies it; the fuzz target `mam` drives it.

use meerkat_store::{ArchiveDefault, ArchivePrefs, ArchiveQuery, Page};
use meerkat_xmpp::{ns, Element, StanzaError, StanzaType};

/// Results per page at most; a larger RSM `max` is clamped to it.
pub const MAX_PAGE: u32 = 250;
/// Results per page when the client gives no `max`.
pub const DEFAULT_PAGE: u32 = 50;
/// JIDs in one `<always/>` or `<never/>` list at most.
pub const MAX_PREFS_JIDS: usize = 1000;
/// Ids in one `ids` filter at most.
pub const MAX_IDS: usize = MAX_PAGE as usize;

/// A parsed archive request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MamRequest {
    /// `<query/>` get: the search form.
    Form,
    Query(Query),
    /// `<metadata/>` get.
    Metadata,
    PrefsGet,
    PrefsSet(ArchivePrefs),
}

/// A query: the filters of the data form and the page asked for (`search.owner` is left
/// empty: whose archive is the handler's to say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub queryid: Option<String>,
    pub search: ArchiveQuery,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::bad_request().text(text)
}

/// An XEP-0082 date-time as ms since the Unix epoch.
fn datetime(s: &str) -> Result<i64, StanzaError> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.timestamp_millis())
        .map_err(|_| bad("not an XEP-0082 date-time"))
}

/// A bare or full JID, normalised.
fn jid(s: &str) -> Result<String, StanzaError> {
    crate::jids::Addr::parse(s.trim())
        .map(|a| a.full())
        .ok_or_else(|| bad("not a JID"))
}

/// The value of a single-value field.
fn single(values: &[String]) -> Result<&str, StanzaError> {
    match values {
        [v] => Ok(v.as_str()),
        _ => Err(bad("a single-value field without exactly one value")),
    }
}

impl MamRequest {
    /// `payload`: the iq's one child, in the `urn:xmpp:mam:2` namespace.
    pub fn parse(ty: StanzaType, payload: &Element) -> Result<MamRequest, StanzaError> {
        match (payload.name(), ty) {
            ("query", StanzaType::Get) => Ok(MamRequest::Form),
            ("query", StanzaType::Set) => Query::parse(payload).map(MamRequest::Query),
            ("metadata", StanzaType::Get) => Ok(MamRequest::Metadata),
            ("prefs", StanzaType::Get) => Ok(MamRequest::PrefsGet),
            ("prefs", StanzaType::Set) => parse_prefs(payload).map(MamRequest::PrefsSet),
            ("query" | "metadata" | "prefs", _) => Err(bad("wrong iq type for this request")),
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }
}

impl Query {
    fn parse(q: &Element) -> Result<Query, StanzaError> {
        let mut out = Query {
            queryid: q.attr("queryid").map(str::to_owned),
            search: ArchiveQuery::all("", DEFAULT_PAGE),
        };
        let mut form_seen = false;
        let mut rsm_seen = false;
        for c in q.children() {
            if c.is("x", ns::DATA_FORMS) && !form_seen {
                form_seen = true;
                out.read_form(c)?;
            } else if c.is("set", ns::RSM) && !rsm_seen {
                rsm_seen = true;
                out.read_rsm(c)?;
            } else if c.ns() == ns::MAM {
                // <flip-page/> and whatever later versions add.
                return Err(StanzaError::feature_not_implemented().text("not supported"));
            } else {
                return Err(bad("unexpected child of <query/>"));
            }
        }
        Ok(out)
    }

    fn read_form(&mut self, x: &Element) -> Result<(), StanzaError> {
        if x.attr("type").is_some_and(|t| t != "submit") {
            return Err(bad("the form must be submitted"));
        }
        let mut seen: Vec<String> = Vec::new();
        for f in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let var = f.attr("var").ok_or_else(|| bad("a field without var"))?;
            if seen.iter().any(|v| v == var) {
                return Err(bad("a field given twice"));
            }
            seen.push(var.to_owned());
            let values: Vec<String> = f
                .children()
                .filter(|c| c.is("value", ns::DATA_FORMS))
                .map(Element::text)
                .collect();
            let one = || single(&values);
            match var {
                "FORM_TYPE" => {
                    if one()?.trim() != ns::MAM {
                        return Err(bad("FORM_TYPE is not urn:xmpp:mam:2"));
                    }
                }
                "with" => self.search.with = Some(jid(one()?)?),
                "start" => self.search.start_ms = Some(datetime(one()?)?),
                "end" => self.search.end_ms = Some(datetime(one()?)?),
                "after-id" => self.search.after_id = Some(one()?.trim().to_owned()),
                "before-id" => self.search.before_id = Some(one()?.trim().to_owned()),
                "ids" => {
                    if values.is_empty() || values.len() > MAX_IDS {
                        return Err(bad("ids: between 1 and 250 values"));
                    }
                    self.search.ids = values.iter().map(|v| v.trim().to_owned()).collect();
                }
                _ => {
                    return Err(
                        StanzaError::feature_not_implemented().text(format!("field {var:?}"))
                    )
                }
            }
        }
        Ok(())
    }

    fn read_rsm(&mut self, set: &Element) -> Result<(), StanzaError> {
        let mut page = None;
        for c in set.children() {
            if c.ns() != ns::RSM {
                return Err(bad("unexpected child of <set/>"));
            }
            let set_page = |p: Page, page: &mut Option<Page>| {
                if page.replace(p).is_some() {
                    Err(bad("after and before together"))
                } else {
                    Ok(())
                }
            };
            match c.name() {
                "max" => {
                    let n: u32 = c
                        .text()
                        .trim()
                        .parse()
                        .map_err(|_| bad("max is not a number"))?;
                    self.search.max = n.min(MAX_PAGE);
                }
                "after" => {
                    let id = c.text().trim().to_owned();
                    if id.is_empty() {
                        return Err(bad("an empty <after/>"));
                    }
                    set_page(Page::After(id), &mut page)?;
                }
                "before" => {
                    let id = c.text().trim().to_owned();
                    let p = if id.is_empty() {
                        Page::Last
                    } else {
                        Page::Before(id)
                    };
                    set_page(p, &mut page)?;
                }
                "index" => {
                    return Err(StanzaError::feature_not_implemented().text("RSM index"));
                }
                _ => return Err(bad("unexpected child of <set/>")),
            }
        }
        if let Some(p) = page {
            self.search.page = p;
        }
        Ok(())
    }
}

fn parse_prefs(p: &Element) -> Result<ArchivePrefs, StanzaError> {
    let default = p
        .attr("default")
        .and_then(ArchiveDefault::parse)
        .ok_or_else(|| bad("default must be always, never or roster"))?;
    let mut always = Vec::new();
    let mut never = Vec::new();
    let (mut always_seen, mut never_seen) = (false, false);
    for c in p.children() {
        let (list, seen) = match (c.name(), c.ns()) {
            ("always", ns::MAM) => (&mut always, &mut always_seen),
            ("never", ns::MAM) => (&mut never, &mut never_seen),
            _ => return Err(bad("unexpected child of <prefs/>")),
        };
        if std::mem::replace(seen, true) {
            return Err(bad("a list given twice"));
        }
        for j in c.children() {
            if !j.is("jid", ns::MAM) {
                return Err(bad("a list holds <jid/> elements"));
            }
            let j = crate::jids::bare(&jid(&j.text())?);
            if !list.contains(&j) {
                list.push(j);
            }
            if list.len() > MAX_PREFS_JIDS {
                return Err(StanzaError::policy_violation().text("too many JIDs"));
            }
        }
    }
    Ok(ArchivePrefs {
        default,
        always,
        never,
    })
}

/// `<prefs/>` as a result carries it.
pub fn prefs_element(p: &ArchivePrefs) -> Element {
    let list = |name: &str, jids: &[String]| {
        let mut l = Element::new(name, ns::MAM);
        for j in jids {
            l.push_child(Element::new("jid", ns::MAM).with_text(j.clone()));
        }
        l
    };
    Element::new("prefs", ns::MAM)
        .with_attr("default", p.default.as_str())
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

/// The search form (XEP-0313 §4.1, §5.1.1): the fields a query may use.
pub fn form_element() -> Element {
    let field = |var: &str, ty: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", ty)
    };
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(
            field("FORM_TYPE", "hidden")
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(ns::MAM)),
        );
    for (var, ty) in [
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("after-id", "text-single"),
        ("before-id", "text-single"),
        ("ids", "list-multi"),
    ] {
        x.push_child(field(var, ty));
    }
    Element::new("query", ns::MAM).with_child(x)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(ty: StanzaType, xml: &str) -> Result<MamRequest, StanzaError> {
        MamRequest::parse(ty, &Element::parse(xml).unwrap())
    }

    fn query(xml: &str) -> Result<Query, StanzaError> {
        match parse(StanzaType::Set, xml)? {
            MamRequest::Query(q) => Ok(q),
            other => panic!("{other:?}"),
        }
    }

    fn condition(e: StanzaError) -> &'static str {
        e.condition
    }

    const Q: &str = "<query xmlns='urn:xmpp:mam:2' queryid='q1'>";
    const FORM: &str = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>";

    #[test]
    fn a_full_query_is_read() {
        let q = query(&format!(
            "{Q}{FORM}<field var='with'><value>Juliet@Capulet.lit</value></field>\
             <field var='start'><value>2010-06-07T00:00:00Z</value></field>\
             <field var='end'><value>2010-07-07T13:23:54.5+02:00</value></field>\
             <field var='ids'><value>a</value><value>b</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>1000</max><before/></set></query>"
        ))
        .unwrap();
        assert_eq!(q.queryid.as_deref(), Some("q1"));
        let s = q.search;
        assert_eq!(s.with.as_deref(), Some("juliet@capulet.lit"));
        assert_eq!(s.start_ms, Some(1_275_868_800_000));
        assert_eq!(s.end_ms, Some(1_278_501_834_500));
        assert_eq!(s.ids, ["a", "b"]);
        assert_eq!(s.page, Page::Last);
        assert_eq!(s.max, MAX_PAGE);
        let q = query(&format!(
            "{Q}<set xmlns='http://jabber.org/protocol/rsm'><after>x</after></set></query>"
        ))
        .unwrap();
        assert_eq!(
            (q.search.page, q.search.max),
            (Page::After("x".into()), DEFAULT_PAGE)
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_right_condition() {
        for (xml, want) in [
            (format!("{Q}{FORM}<field var='colour'><value>red</value></field></x></query>"), "feature-not-implemented"),
            (format!("{Q}{FORM}<field var='start'><value>yesterday</value></field></x></query>"), "bad-request"),
            (format!("{Q}{FORM}<field var='with'><value>@@</value></field></x></query>"), "bad-request"),
            (format!("{Q}<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>other</value></field></x></query>"), "bad-request"),
            (format!("{Q}<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set></query>"), "bad-request"),
            (format!("{Q}<set xmlns='http://jabber.org/protocol/rsm'><after>a</after><before/></set></query>"), "bad-request"),
            (format!("{Q}<flip-page/></query>"), "feature-not-implemented"),
            (format!("{Q}<other xmlns='x'/></query>"), "bad-request"),
        ] {
            let got = parse(StanzaType::Set, &xml).map(|_| ()).map_err(condition);
            assert_eq!(got, Err(want), "{xml}");
        }
    }

    #[test]
    fn prefs_and_other_requests() {
        let p = parse(
            StanzaType::Set,
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>A@x/r</jid></always><never/></prefs>",
        )
        .unwrap();
        let MamRequest::PrefsSet(p) = p else { panic!() };
        assert_eq!(p.default, ArchiveDefault::Roster);
        assert_eq!(p.always, ["a@x"]);
        assert!(parse(
            StanzaType::Set,
            "<prefs xmlns='urn:xmpp:mam:2' default='x'/>"
        )
        .is_err());
        assert_eq!(
            parse(StanzaType::Get, "<metadata xmlns='urn:xmpp:mam:2'/>").unwrap(),
            MamRequest::Metadata
        );
        assert_eq!(
            parse(StanzaType::Get, "<query xmlns='urn:xmpp:mam:2'/>").unwrap(),
            MamRequest::Form
        );
        assert_eq!(
            condition(parse(StanzaType::Get, "<other xmlns='urn:xmpp:mam:2'/>").unwrap_err()),
            "feature-not-implemented"
        );
    }
}
