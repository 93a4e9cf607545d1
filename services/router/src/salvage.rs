//! What can still be read of a stanza the router cannot parse in full (its body is not
//! well-formed here, e.g. a character this router's reader refuses): the name and attributes
//! of its start tag, enough to tell its sender with an error reply (RFC 6120 §8.3) instead of
//! dropping it without a word. Pure, total on any input (fuzz it: `head(bytes)`).

/// The start tag of a stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `message`, `presence` or `iq`.
    pub name: String,
    /// Its attributes, entity references decoded.
    pub attrs: Vec<(String, String)>,
}

impl Head {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// More attributes than a stanza's start tag has any use for: the rest is not read.
const MAX_ATTRS: usize = 16;

/// The start tag at the beginning of `body` (after whitespace), if it is a stanza's and reads
/// as XML up to its `>`; attributes with an undecodable value are left out.
pub fn head(body: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(body).ok().or_else(|| {
        // The tag may still be readable before the first bad byte.
        let valid = std::str::from_utf8(body).err()?.valid_up_to();
        std::str::from_utf8(&body[..valid]).ok()
    })?;
    let mut rest = text.trim_start().strip_prefix('<')?;
    let name_end = rest.find(|c: char| c.is_whitespace() || c == '/' || c == '>')?;
    let name = &rest[..name_end];
    if !matches!(name, "message" | "presence" | "iq") {
        return None;
    }
    rest = &rest[name_end..];
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.starts_with('>') || rest.starts_with("/>") {
            break;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim_end();
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || "<>/'\"".contains(c)) {
            return None;
        }
        rest = rest[eq + 1..].trim_start();
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        rest = &rest[1..];
        let close = rest.find(quote)?;
        let raw = &rest[..close];
        rest = &rest[close + 1..];
        if raw.contains('<') {
            return None;
        }
        if attrs.len() < MAX_ATTRS {
            if let Some(value) = unescape(raw) {
                attrs.push((key.to_owned(), value));
            }
        }
    }
    Some(Head {
        name: name.to_owned(),
        attrs,
    })
}

/// `raw` with its entity and character references decoded; `None` if one is not valid.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let entity = &after[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_tag_of_an_unreadable_stanza_is_read() {
        let h = head(
            b"  <message xmlns='jabber:client' id=\"a&amp;b\" to='bob@example.com' type='chat'><body>x\0y</body></message>",
        )
        .unwrap();
        assert_eq!(h.name, "message");
        assert_eq!(h.attr("id"), Some("a&b"));
        assert_eq!(h.attr("to"), Some("bob@example.com"));
        assert_eq!(h.attr("type"), Some("chat"));
        let h = head(b"<iq type='get' id='1'/>").unwrap();
        assert_eq!((h.name.as_str(), h.attr("id")), ("iq", Some("1")));
        // Valid up to a bad byte after the tag.
        let h = head(b"<presence id='p'>\xff\xfe").unwrap();
        assert_eq!(h.attr("id"), Some("p"));
        // A bad reference loses its attribute, not the tag.
        let h = head(b"<message id='&bogus;' to='x'>").unwrap();
        assert_eq!((h.attr("id"), h.attr("to")), (None, Some("x")));
        assert_eq!(head(b"<iq id='&#0;'/>").unwrap().attr("id"), Some("\0"));
    }

    #[test]
    fn anything_else_is_nothing() {
        for bad in [
            &b""[..],
            b"message",
            b"<route xmlns='x'/>",
            b"<message",
            b"<message id='1",
            b"<message id=1>",
            b"<message id='<'>",
            b"<message ='x'>",
            b"<message a b='x'>",
            b"<message id='&#xFFFFFFFF;'",
            b"\xff<message/>",
        ] {
            assert_eq!(head(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn attributes_are_capped() {
        let many: String = (0..100).map(|i| format!(" a{i}='{i}'")).collect();
        let h = head(format!("<message{many}/>").as_bytes()).unwrap();
        assert_eq!(h.attrs.len(), MAX_ATTRS);
    }
}
