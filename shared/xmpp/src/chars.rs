//! XML 1.0 character and name rules: what may appear in text and attribute values (XML 1.0
//! §2.2 `Char`) and what an element or attribute name may be (§2.3 `Name`, Namespaces in XML
//! §3 `NCName`). A character outside them (a control character, U+FFFE) or a name such as
//! `a<b` would make the stream of whoever receives the stanza ill-formed, so the reader refuses
//! them where they enter.

/// XML 1.0 `Char`: tab, newline, carriage return and everything from U+0020 except the
/// non-characters U+FFFE and U+FFFF (surrogates cannot occur in a Rust `str`).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Whether every character of `s` is an XML 1.0 `Char`.
pub fn is_xml_text(s: &str) -> bool {
    // ASCII first: most stanzas are ASCII, and there only the C0 controls are refused.
    if s.is_ascii() {
        return s
            .bytes()
            .all(|b| b >= 0x20 || b == b'\t' || b == b'\n' || b == b'\r');
    }
    s.chars().all(is_xml_char)
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// `NCName`: a name without a colon.
pub fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) if is_name_start(first) => chars.all(is_name_char),
        _ => false,
    }
}

/// `QName`: `NCName` or `prefix:NCName`.
pub fn is_qname(s: &str) -> bool {
    match s.split_once(':') {
        Some((prefix, local)) => is_ncname(prefix) && is_ncname(local),
        None => is_ncname(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_controls_and_non_characters() {
        assert!(is_xml_text("hello\tworld\r\n"));
        assert!(is_xml_text("grüße 😀 \u{E000} \u{FFFD}"));
        for bad in [
            "\u{0}",
            "a\u{1}b",
            "\u{1F}",
            "\u{FFFE}",
            "x\u{FFFF}",
            "é\u{8}",
        ] {
            assert!(!is_xml_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_name_production() {
        for good in [
            "message",
            "a-b.c_d",
            "x1",
            "é",
            "_",
            "stream:stream",
            "xml:lang",
        ] {
            assert!(is_qname(good), "{good}");
        }
        for bad in [
            "", "a<b", "1a", "-a", "a b", "a:b:c", ":a", "a:", "a\u{0}", "a'b", "a&b",
        ] {
            assert!(!is_qname(bad), "{bad:?}");
        }
        assert!(!is_ncname("a:b"));
    }
}
