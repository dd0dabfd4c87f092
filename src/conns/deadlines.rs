//! The live connections' expiry deadlines in one timer: a sorted set of (when, connection)
//! and one task that sleeps until the earliest, instead of a timer per connection or a
//! periodic sweep.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Registry;
use crate::revocation::now_secs;

/// (Unix seconds, connection id), earliest first.
#[derive(Debug, Default)]
pub(super) struct Deadlines(BTreeSet<(i64, u64)>);

impl Deadlines {
    /// Adds one; true when it is now the earliest (the timer task must wake up for it).
    pub fn insert(&mut self, at: i64, id: u64) -> bool {
        self.0.insert((at, id));
        self.0.first() == Some(&(at, id))
    }

    pub fn remove(&mut self, at: i64, id: u64) {
        self.0.remove(&(at, id));
    }

    pub fn first(&self) -> Option<i64> {
        self.0.first().map(|(at, _)| *at)
    }

    /// Removes and returns the connections due at `now`.
    pub fn take_due(&mut self, now: i64) -> Vec<u64> {
        let later = self.0.split_off(&(now.saturating_add(1), 0));
        std::mem::replace(&mut self.0, later).into_iter().map(|(_, id)| id).collect()
    }
}

/// Closes connections as their deadlines pass; runs for the life of the proxy.
pub async fn run_deadlines(registry: Arc<Registry>) {
    loop {
        // Registered before the deadlines are read, so an earlier one added meanwhile wakes it.
        let earlier = registry.earlier_deadline.notified();
        let next = registry.expire(now_secs());
        match next {
            Some(at) => {
                // To the very second `at` begins, so that `expire` then finds it due.
                let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
                let wait = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = earlier => {}
                }
            }
            None => earlier.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Deadlines;

    #[test]
    fn the_earliest_is_reported_and_due_ones_are_taken_in_order() {
        let mut d = Deadlines::default();
        assert!(d.insert(100, 1));
        assert!(!d.insert(200, 2), "a later deadline does not wake the timer");
        assert!(d.insert(50, 3));
        assert!(!d.insert(50, 4), "same second, later id: not before the first");
        d.remove(50, 3);
        assert_eq!(d.first(), Some(50));
        assert_eq!(d.take_due(49), Vec::<u64>::new());
        assert_eq!(d.take_due(100), vec![4, 1]);
        assert_eq!(d.first(), Some(200));
        assert_eq!(d.take_due(i64::MAX), vec![2]);
        assert_eq!(d.first(), None);
    }
}
