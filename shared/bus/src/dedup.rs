//! Remembers the last N envelope ids seen, to drop redeliveries (at-least-once in,
//! effectively-once out).

use std::collections::{HashSet, VecDeque};

pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Dedup {
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            seen: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// True the first time an id is seen, false for a duplicate.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
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
}
