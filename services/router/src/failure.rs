//! Why handling a stanza failed, and what that calls for. A *permanent* failure cannot be
//! fixed by trying again (PostgreSQL refuses the data: U+0000 in text, a value out of range, an
//! integrity rule; a row or value the code cannot read): the sender gets a stanza error at
//! once and the partition moves on. Anything else is *transient* (a connection lost, the pool
//! timing out, the broker away, a serialization conflict) and is retried in place for a
//! bounded time (`transient_retry_ms`, partition.rs).

use meerkat_store::StoreError;
use meerkat_xmpp::{ns, Element, ErrorType, StanzaError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Will fail again: answer the sender with this error, never retry.
    Permanent(StanzaError),
    /// May succeed later.
    Transient,
}

/// Looks through the error's chain for the store's or the database driver's error.
pub fn classify(e: &anyhow::Error) -> Failure {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return store_failure(s);
        }
        if let Some(s) = cause.downcast_ref::<sqlx::Error>() {
            return sqlx_failure(s);
        }
    }
    Failure::Transient
}

fn store_failure(e: &StoreError) -> Failure {
    match e {
        StoreError::Database(e) => sqlx_failure(e),
        StoreError::Corrupt(_) => Failure::Permanent(StanzaError::internal_server_error()),
        // The handlers answer these themselves; one that escapes depends on the data, not on
        // the moment.
        StoreError::Conflict | StoreError::Full | StoreError::NoSuchAccount => {
            Failure::Permanent(StanzaError::internal_server_error())
        }
        StoreError::Migrate(_) => Failure::Transient,
    }
}

fn sqlx_failure(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => sqlstate_failure(&code),
            None => Failure::Transient,
        },
        // A value that cannot be sent or a row that cannot be read: the same next time.
        sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => {
            Failure::Permanent(StanzaError::internal_server_error())
        }
        _ => Failure::Transient,
    }
}

/// By SQLSTATE (PostgreSQL appendix A). Pure: tested below.
pub fn sqlstate_failure(code: &str) -> Failure {
    match (code.get(..2).unwrap_or(""), code) {
        // unique_violation: a concurrent insert of the same key; the retry sees the row.
        (_, "23505") => Failure::Transient,
        // Data exception (22021 invalid byte sequence: U+0000 in text; 22001 too long; 22003
        // out of range; 22P02 invalid text representation): the stanza carries data the server
        // cannot take.
        ("22", _) => Failure::Permanent(StanzaError::bad_request()),
        // Integrity constraint (foreign key to a removed account, check) and program limit
        // exceeded (54000: a value too large for an index): the data breaks a rule.
        ("23" | "54", _) => Failure::Permanent(StanzaError::not_acceptable()),
        // Connection (08), insufficient resources (53), operator intervention (57: shutdown,
        // statement timeout), system error (58), transaction rollback (40: serialization,
        // deadlock), and whatever else: worth the bounded retry.
        _ => Failure::Transient,
    }
}

/// What the sender gets when a transient failure outlasted the retry budget: the stanza was
/// not handled, and the same stanza may succeed later (RFC 6120 §8.3.2: type `wait`).
pub fn gave_up() -> StanzaError {
    StanzaError::new(ErrorType::Wait, "internal-server-error")
}

/// The error reply to a stanza that could not be handled: its name, `id` and addresses
/// swapped, the error, and none of its payload (which may be what the database refused; sent
/// back, it could break the sender's own stream). An attribute holding a character XML 1.0
/// does not allow is left out for the same reason.
pub fn bare_error_reply(stanza: &Element, error: &StanzaError) -> Element {
    let mut reply = Element::new(stanza.name(), ns::CLIENT).with_attr("type", "error");
    for (from, to) in [("id", "id"), ("to", "from"), ("from", "to")] {
        if let Some(v) = stanza.attr(from).filter(|v| xml_chars(v)) {
            reply.set_attr(to, v);
        }
    }
    reply.push_child(error.to_element());
    reply
}

/// Whether every character of `s` is an XML 1.0 `Char`.
fn xml_chars(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}'
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_integrity_errors_are_permanent() {
        assert_eq!(
            sqlstate_failure("22021"),
            Failure::Permanent(StanzaError::bad_request())
        );
        assert_eq!(
            sqlstate_failure("22P02"),
            Failure::Permanent(StanzaError::bad_request())
        );
        assert_eq!(
            sqlstate_failure("23503"),
            Failure::Permanent(StanzaError::not_acceptable())
        );
        assert_eq!(
            sqlstate_failure("54000"),
            Failure::Permanent(StanzaError::not_acceptable())
        );
    }

    #[test]
    fn conflicts_outages_and_garbage_are_transient() {
        for code in [
            "23505", "40001", "40P01", "08006", "53300", "57P01", "57014", "", "2", "XX000",
        ] {
            assert_eq!(sqlstate_failure(code), Failure::Transient, "{code}");
        }
    }

    #[test]
    fn the_reply_carries_no_payload_and_no_poison() {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("id", "a\u{0}b")
            .with_attr("from", "alice@example.com/phone")
            .with_attr("to", "bob@example.com")
            .with_attr("type", "chat")
            .with_child(Element::new("body", ns::CLIENT).with_text("x\u{0}y"));
        let r = bare_error_reply(&m, &StanzaError::bad_request());
        assert_eq!(r.attr("type"), Some("error"));
        assert_eq!(r.attr("to"), Some("alice@example.com/phone"));
        assert_eq!(r.attr("from"), Some("bob@example.com"));
        assert_eq!(r.attr("id"), None);
        assert!(!r.to_xml().contains('\u{0}'));
        assert!(r.to_xml().contains("bad-request"));
        assert!(r.children().all(|c| c.name() == "error"));
    }

    #[test]
    fn the_chain_is_searched() {
        let e = anyhow::Error::from(StoreError::Corrupt("x".into())).context("roster");
        assert!(matches!(classify(&e), Failure::Permanent(_)));
        let e = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("offline");
        assert_eq!(classify(&e), Failure::Transient);
        assert_eq!(
            classify(&anyhow::anyhow!("broker away")),
            Failure::Transient
        );
    }
}
