//! Remembers the last N envelope ids seen, to drop redeliveries (at-least-once in,
//! effectively-once out).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The last `capacity` ids, oldest forgotten first. It grows with what it holds (a bound, not
/// an allocation made up front: a quiet process keeps little).
pub struct Dedup {
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Remembers `id` (for a consumer that records an id only once its work succeeded).
    pub fn insert(&mut self, id: &str) {
        self.first_time(id);
    }

    /// True the first time an id is seen (and remembers it), false for a duplicate.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Dedup;

    #[test]
    fn drops_duplicates_and_forgets_old_ids() {
        let mut d = Dedup::new(2);
        assert!(d.first_time("a"));
        assert!(!d.first_time("a"));
        assert!(d.first_time("b"));
        assert!(d.first_time("c"));
        assert!(d.first_time("a"));
    }

    #[test]
    fn an_id_recorded_after_its_work_is_seen_and_forgotten_in_order() {
        let mut d = Dedup::new(2);
        assert!(!d.contains("a"));
        d.insert("a");
        d.insert("a");
        d.insert("b");
        assert!(d.contains("a") && d.contains("b"));
        d.insert("c");
        assert!(!d.contains("a"));
        assert!(d.contains("b") && d.contains("c"));
    }
}
