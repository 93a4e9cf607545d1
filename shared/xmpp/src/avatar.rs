//! XEP-0153 vCard-based avatars: the photo hash a server puts in an account's available
//! presence, `<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>`, computed from the stored
//! vCard (XEP-0153 §4.1: the SHA-1 of the decoded `PHOTO/BINVAL`, lowercase hex).

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use crate::{ns, Element};

/// Standard base64, padded or not (clients differ).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The photo hash of a `<vCard xmlns='vcard-temp'/>`: the SHA-1 (lowercase hex) of its first
/// `PHOTO`'s decoded `BINVAL`, or the empty string when it has no photo, an empty or
/// undecodable `BINVAL` (whitespace and line breaks inside it, which clients send, are
/// ignored), or only an `EXTVAL`.
pub fn photo_hash(vcard: &Element) -> String {
    let Some(binval) = vcard
        .get_child("PHOTO", ns::VCARD)
        .and_then(|p| p.get_child("BINVAL", ns::VCARD))
    else {
        return String::new();
    };
    let text: Vec<u8> = binval
        .text()
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match LENIENT.decode(text) {
        Ok(bytes) if !bytes.is_empty() => hex(&Sha1::digest(&bytes)),
        _ => String::new(),
    }
}

/// [`photo_hash`] of a stored vCard's XML; the empty string when it does not parse.
pub fn photo_hash_of_xml(xml: &str) -> String {
    Element::parse(xml)
        .map(|v| photo_hash(&v))
        .unwrap_or_default()
}

/// `<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x>`, an empty `<photo/>` for "".
pub fn update_element(hash: &str) -> Element {
    let mut photo = Element::new("photo", ns::VCARD_UPDATE);
    if !hash.is_empty() {
        photo.push_text(hash);
    }
    Element::new("x", ns::VCARD_UPDATE).with_child(photo)
}

/// Replaces every `vcard-temp:x:update` child of `presence` with the server's for `hash`.
pub fn set_update(presence: &mut Element, hash: &str) {
    presence.remove_children(|c| c.is("x", ns::VCARD_UPDATE));
    presence.push_child(update_element(hash));
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(40), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(inner: &str) -> String {
        photo_hash_of_xml(&format!("<vCard xmlns='vcard-temp'>{inner}</vCard>"))
    }

    // "hello" in base64 is aGVsbG8=; SHA-1("hello").
    const HELLO: &str = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";

    #[test]
    fn the_hash_is_the_sha1_hex_of_the_decoded_binval() {
        let photo = "<PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO>";
        assert_eq!(hash(photo), HELLO);
        assert_eq!(hash(&format!("<FN>Alice</FN>{photo}")), HELLO);
    }

    #[test]
    fn whitespace_and_line_breaks_inside_binval_are_ignored() {
        assert_eq!(
            hash("<PHOTO><BINVAL>\n  aGVs\r\n\tbG8=\n</BINVAL></PHOTO>"),
            HELLO
        );
        assert_eq!(
            hash("<PHOTO><BINVAL>aGVsbG8</BINVAL></PHOTO>"),
            HELLO,
            "unpadded"
        );
    }

    #[test]
    fn no_photo_or_a_bad_one_has_the_empty_hash() {
        assert_eq!(hash(""), "");
        assert_eq!(hash("<FN>Alice</FN>"), "");
        assert_eq!(hash("<PHOTO><TYPE>image/png</TYPE></PHOTO>"), "");
        assert_eq!(
            hash("<PHOTO><EXTVAL>https://example.org/a.png</EXTVAL></PHOTO>"),
            ""
        );
        assert_eq!(hash("<PHOTO><BINVAL></BINVAL></PHOTO>"), "");
        assert_eq!(hash("<PHOTO><BINVAL>not base64!</BINVAL></PHOTO>"), "");
        assert_eq!(hash("<PHOTO><BINVAL>aGVsbG8=aGVs</BINVAL></PHOTO>"), "");
        assert_eq!(photo_hash_of_xml("<vCard xmlns='vcard-temp'"), "");
        // A PHOTO of another namespace is not the vCard's.
        assert_eq!(
            hash("<PHOTO xmlns='other'><BINVAL>aGVsbG8=</BINVAL></PHOTO>"),
            ""
        );
    }

    #[test]
    fn the_update_element_replaces_the_clients() {
        let mut p = Element::parse(
            "<presence xmlns='jabber:client'><show>away</show>\
             <x xmlns='vcard-temp:x:update'><photo>deadbeef</photo></x></presence>",
        )
        .expect("xml");
        set_update(&mut p, HELLO);
        let xs: Vec<&Element> = p
            .children()
            .filter(|c| c.is("x", ns::VCARD_UPDATE))
            .collect();
        assert_eq!(xs.len(), 1);
        assert_eq!(
            xs[0].child_text("photo", ns::VCARD_UPDATE).as_deref(),
            Some(HELLO)
        );
        assert!(p.has_child("show", ns::CLIENT));
        set_update(&mut p, "");
        let x = p.get_child("x", ns::VCARD_UPDATE).expect("x");
        let photo = x.get_child("photo", ns::VCARD_UPDATE).expect("photo");
        assert_eq!(photo.text(), "");
        assert!(photo.nodes().is_empty());
    }
}
