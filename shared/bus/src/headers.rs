//! Reading and writing AMQP headers without matching on `AMQPValue` everywhere.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Builder for a header table.
#[derive(Default)]
pub struct Headers(FieldTable);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub fn str(mut self, key: &str, value: &str) -> Headers {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
        self
    }

    pub fn u64(mut self, key: &str, value: u64) -> Headers {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongLongInt(i64::try_from(value).unwrap_or(i64::MAX)),
        );
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Headers {
        self.0
            .insert(ShortString::from(key), AMQPValue::Boolean(value));
        self
    }

    pub fn table(&mut self) -> &mut FieldTable {
        &mut self.0
    }

    pub fn build(self) -> FieldTable {
        self.0
    }
}

/// Typed reads from a header table.
pub trait HeaderExt {
    fn get_str(&self, key: &str) -> Option<String>;
    fn get_u64(&self, key: &str) -> Option<u64>;
    fn get_bool(&self, key: &str) -> bool;
}

impl HeaderExt for FieldTable {
    fn get_str(&self, key: &str) -> Option<String> {
        match self.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
            _ => None,
        }
    }

    fn get_u64(&self, key: &str) -> Option<u64> {
        match self.inner().get(key)? {
            AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(u64::from(*n)),
            AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
            AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
            AMQPValue::Timestamp(n) => Some(*n),
            _ => None,
        }
    }

    fn get_bool(&self, key: &str) -> bool {
        matches!(self.inner().get(key), Some(AMQPValue::Boolean(true)))
    }
}

impl HeaderExt for Option<&FieldTable> {
    fn get_str(&self, key: &str) -> Option<String> {
        self.and_then(|t| t.get_str(key))
    }
    fn get_u64(&self, key: &str) -> Option<u64> {
        self.and_then(|t| t.get_u64(key))
    }
    fn get_bool(&self, key: &str) -> bool {
        self.is_some_and(|t| t.get_bool(key))
    }
}
