//! XEP-0004 data forms as pubsub uses them: a submitted form read into its fields (the
//! `FORM_TYPE` apart), and a form built for a node's configuration. Parse, don't validate:
//! what a field means is `config.rs`'s.

use meerkat_xmpp::{ns, Element, StanzaError};

/// Fields a submitted form may carry at most: a hostile client cannot make us walk more.
pub const MAX_FIELDS: usize = 64;
/// Values one field may carry at most.
pub const MAX_VALUES: usize = 256;

/// A submitted form: its `FORM_TYPE` and the other fields, in order, each with its values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    pub form_type: Option<String>,
    pub fields: Vec<(String, Vec<String>)>,
}

impl Form {
    /// Reads `<x xmlns='jabber:x:data'/>` (type `submit`, or `form`/none as some clients send).
    /// A field without `var`, a `var` twice, or more than the caps: bad-request.
    pub fn parse(x: &Element) -> Result<Form, StanzaError> {
        if !x.is("x", ns::DATA_FORMS) {
            return Err(StanzaError::bad_request().text("expected a data form"));
        }
        if matches!(x.attr("type"), Some("cancel") | Some("result")) {
            return Err(StanzaError::bad_request().text("a form of type submit is expected"));
        }
        let mut form = Form::default();
        for field in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let Some(var) = field.attr("var") else {
                return Err(StanzaError::bad_request().text("a field without var"));
            };
            let values: Vec<String> = field
                .children()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(Element::text)
                .collect();
            if values.len() > MAX_VALUES {
                return Err(StanzaError::bad_request().text("too many values"));
            }
            if var == "FORM_TYPE" {
                if form.form_type.is_some() {
                    return Err(StanzaError::bad_request().text("FORM_TYPE twice"));
                }
                form.form_type = Some(values.into_iter().next().unwrap_or_default());
                continue;
            }
            if form.fields.iter().any(|(v, _)| v == var) {
                return Err(StanzaError::bad_request().text(format!("{var} twice")));
            }
            if form.fields.len() >= MAX_FIELDS {
                return Err(StanzaError::bad_request().text("too many fields"));
            }
            form.fields.push((var.to_owned(), values));
        }
        Ok(form)
    }
}

/// One field of a form the server sends.
pub struct FieldOut<'a> {
    pub var: &'a str,
    pub ty: &'a str,
    pub values: Vec<String>,
    /// list-single options.
    pub options: &'a [&'a str],
}

/// A form (`type='form'`) of `form_type` with `fields`.
pub fn build(form_type: &str, fields: &[FieldOut<'_>]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "form");
    x.push_child(
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", "FORM_TYPE")
            .with_attr("type", "hidden")
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(form_type)),
    );
    for f in fields {
        let mut el = Element::new("field", ns::DATA_FORMS)
            .with_attr("var", f.var)
            .with_attr("type", f.ty);
        for o in f.options {
            el.push_child(
                Element::new("option", ns::DATA_FORMS)
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(*o)),
            );
        }
        for v in &f.values {
            el.push_child(Element::new("value", ns::DATA_FORMS).with_text(v.clone()));
        }
        x.push_child(el);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Form, &'static str> {
        Form::parse(&Element::parse(xml).expect("xml")).map_err(|e| e.condition)
    }

    #[test]
    fn reads_fields_and_form_type() {
        let f = parse(
            "<x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>urn:t</value></field>\
             <field var='a'><value>1</value><value>2</value></field><field var='b'/></x>",
        )
        .expect("form");
        assert_eq!(f.form_type.as_deref(), Some("urn:t"));
        assert_eq!(
            f.fields,
            vec![
                ("a".to_owned(), vec!["1".to_owned(), "2".to_owned()]),
                ("b".to_owned(), vec![])
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_a_submitted_form() {
        assert_eq!(parse("<x xmlns='urn:other'/>"), Err("bad-request"));
        assert_eq!(
            parse("<x xmlns='jabber:x:data' type='cancel'/>"),
            Err("bad-request")
        );
        assert_eq!(
            parse("<x xmlns='jabber:x:data'><field/></x>"),
            Err("bad-request")
        );
        assert_eq!(
            parse("<x xmlns='jabber:x:data'><field var='a'/><field var='a'/></x>"),
            Err("bad-request")
        );
        let many: String = (0..=MAX_FIELDS)
            .map(|i| format!("<field var='f{i}'/>"))
            .collect();
        assert_eq!(
            parse(&format!("<x xmlns='jabber:x:data'>{many}</x>")),
            Err("bad-request")
        );
    }
}
