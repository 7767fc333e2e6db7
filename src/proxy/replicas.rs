//! Follower fetching (KIP-392). A leader asked by a client in rack R may
//! answer a fetch with a preferred read replica and no records; the fetcher
//! must then ask that replica. Every broker is advertised at the proxy's own
//! address, so a client that follows the preference reaches the proxy
//! again: the proxy must do the following itself, or the fetch goes back to
//! the leader and gets the same answer forever.
//!
//! As the Java consumer does (`FetchCollector`:
//! `subscriptions.updatePreferredReadReplica` with an expiry of
//! `metadata.max.age.ms`, cleared on any partition error), a preference is
//! kept per (rack, topic, partition) until it expires after
//! `kafka.metadata_refresh_interval_ms` or the replica answers the partition
//! with an error; then fetches go to the leader again, which may name a
//! replica anew.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Beyond this many preferences the map is emptied rather than grown: a
/// forgotten preference costs one extra round trip to the leader.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    rack: String,
    topic: String,
    partition: i32,
}

pub struct PreferredReplicas {
    lease: Duration,
    entries: Mutex<HashMap<Key, (i32, Instant)>>,
}

impl PreferredReplicas {
    pub fn new(lease: Duration) -> PreferredReplicas {
        PreferredReplicas { lease, entries: Mutex::new(HashMap::new()) }
    }

    /// The replica fetches of `topic`/`partition` from `rack` should go to,
    /// while the leader's preference lasts.
    pub fn replica(&self, rack: &str, topic: &str, partition: i32) -> Option<i32> {
        self.replica_at(rack, topic, partition, Instant::now())
    }

    fn replica_at(&self, rack: &str, topic: &str, partition: i32, now: Instant) -> Option<i32> {
        let mut entries = self.entries.lock();
        let key = Key { rack: rack.to_string(), topic: topic.to_string(), partition };
        match entries.get(&key) {
            Some(&(node, until)) if now < until => Some(node),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Take in what a fetch answer says of one partition: a preferred read
    /// replica (`>= 0`) starts a lease; an error ends any preference, so the
    /// next fetch goes to the leader. Returns whether the preference changed
    /// (worth a log line).
    pub fn note(&self, rack: &str, topic: &str, partition: i32, preferred: i32, error_code: i16) -> bool {
        self.note_at(rack, topic, partition, preferred, error_code, Instant::now())
    }

    fn note_at(&self, rack: &str, topic: &str, partition: i32, preferred: i32, error_code: i16, now: Instant) -> bool {
        if error_code == crate::kafka::api::error::NONE && preferred < 0 {
            // The common answer (a follower's, or a leader's without a
            // preference): nothing to change, and no allocation.
            return false;
        }
        let key = Key { rack: rack.to_string(), topic: topic.to_string(), partition };
        let mut entries = self.entries.lock();
        if error_code != crate::kafka::api::error::NONE {
            return entries.remove(&key).is_some();
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let previous = entries.insert(key, (preferred, now + self.lease));
        previous.map(|(node, _)| node) != Some(preferred)
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::api::error;

    #[test]
    fn a_preference_lasts_its_lease() {
        let r = PreferredReplicas::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(r.replica_at("az1", "t", 0, t0), None);
        assert!(r.note_at("az1", "t", 0, 2, error::NONE, t0));
        assert!(!r.note_at("az1", "t", 0, 2, error::NONE, t0), "the same preference again is no change");
        assert_eq!(r.replica_at("az1", "t", 0, t0 + Duration::from_secs(29)), Some(2));
        // Per rack and per partition.
        assert_eq!(r.replica_at("az2", "t", 0, t0), None);
        assert_eq!(r.replica_at("az1", "t", 1, t0), None);
        // An answer without a preference (the replica's own) keeps it.
        assert!(!r.note_at("az1", "t", 0, -1, error::NONE, t0));
        assert_eq!(r.replica_at("az1", "t", 0, t0), Some(2));
        assert_eq!(r.replica_at("az1", "t", 0, t0 + Duration::from_secs(30)), None, "expired");
        assert_eq!(r.replica_at("az1", "t", 0, t0), None, "an expired lease is gone");
    }

    #[test]
    fn any_error_ends_a_preference() {
        let r = PreferredReplicas::new(Duration::from_secs(30));
        let t0 = Instant::now();
        r.note_at("az1", "t", 0, 2, error::NONE, t0);
        assert!(r.note_at("az1", "t", 0, -1, error::OFFSET_OUT_OF_RANGE, t0));
        assert_eq!(r.replica_at("az1", "t", 0, t0), None);
        assert!(!r.note_at("az1", "t", 0, -1, error::NOT_LEADER_OR_FOLLOWER, t0), "nothing left to end");
    }
}
