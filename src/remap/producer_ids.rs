//! Derived producer ids, as every proxy instance sees them: the replay of
//! the proxy's own compacted topic (`__kpr_producer_ids`).
//!
//! A k ≥ 1 virtual partition writes under a producer id of its own, so that
//! a client's sequences for sibling virtual partitions never collide on the
//! physical partition. A batch retried after a proxy restart, or through
//! another instance behind the same address, must reach the same derived id
//! and the same sequence, or the broker stores it twice. So the mapping is
//! kept in the cluster, and this table is its replay. Two kinds of entries:
//!
//! - `pid/<client id>/<client epoch>/<k>` → `<derived id>/<derived epoch>`
//! - `seq/<derived id>/<partition>/<topic>` → the client sequence that is the
//!   derived id's sequence 0 on that physical partition (0 for a producer
//!   that starts with its mapping; not 0 for one older than its mapping).
//!
//! **The first record of a key wins.** Instances that race for one key each
//! write a candidate; each reads the log up to its own write and takes the
//! first one, so all agree, and a loser's allocated id is never used. A
//! tombstone ends a key; the next record starts it again. Compaction keeps a
//! key's *last* record, so whoever sees a later candidate that lost writes
//! the winner again (`Apply::Conflict`): the last record then agrees with
//! the first.
//!
//! Entries nobody uses are tombstoned after an idle time; an instance that
//! uses one writes it again before that, so the log's timestamp of a key is
//! its last use by any instance.
//!
//! This module holds the state and its rules only; `upstream::producer_log`
//! reads and writes the topic.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdKey {
    /// A client's (producer id, epoch) at sibling index k.
    Derived { client_id: i64, client_epoch: i16, k: i32 },
    /// A derived id's sequence base on one physical partition.
    SequenceBase { derived_id: i64, topic: String, partition: i32 },
}

/// What a key maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdValue {
    Derived { id: i64, epoch: i16 },
    SequenceBase(i32),
}

impl IdKey {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            IdKey::Derived { client_id, client_epoch, k } => format!("pid/{client_id}/{client_epoch}/{k}"),
            IdKey::SequenceBase { derived_id, topic, partition } => format!("seq/{derived_id}/{partition}/{topic}"),
        }
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<IdKey> {
        let s = std::str::from_utf8(bytes).ok()?;
        let mut parts = s.splitn(4, '/');
        match parts.next()? {
            "pid" => {
                let client_id = parts.next()?.parse().ok()?;
                let client_epoch = parts.next()?.parse().ok()?;
                let k = parts.next()?.parse().ok()?;
                Some(IdKey::Derived { client_id, client_epoch, k })
            }
            "seq" => {
                let derived_id = parts.next()?.parse().ok()?;
                let partition = parts.next()?.parse().ok()?;
                let topic = parts.next().filter(|t| !t.is_empty())?.to_string();
                Some(IdKey::SequenceBase { derived_id, topic, partition })
            }
            _ => None,
        }
    }

    /// Whether `value` is the kind of value this key takes.
    fn fits(&self, value: &IdValue) -> bool {
        matches!(
            (self, value),
            (IdKey::Derived { .. }, IdValue::Derived { .. }) | (IdKey::SequenceBase { .. }, IdValue::SequenceBase(_))
        )
    }
}

impl IdValue {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            IdValue::Derived { id, epoch } => format!("{id}/{epoch}"),
            IdValue::SequenceBase(base) => base.to_string(),
        }
        .into_bytes()
    }

    /// The value of `key`'s record.
    pub fn decode(key: &IdKey, bytes: &[u8]) -> Option<IdValue> {
        let s = std::str::from_utf8(bytes).ok()?;
        match key {
            IdKey::Derived { .. } => {
                let (id, epoch) = s.split_once('/')?;
                let (id, epoch) = (id.parse().ok()?, epoch.parse().ok()?);
                (id >= 0).then_some(IdValue::Derived { id, epoch })
            }
            IdKey::SequenceBase { .. } => Some(IdValue::SequenceBase(s.parse().ok().filter(|b: &i32| *b >= 0)?)),
        }
    }
}

/// One record of the topic, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: i64,
    /// The record's timestamp (ms since the epoch): its writer's last use.
    pub timestamp: i64,
    pub key: IdKey,
    /// `None`: a tombstone.
    pub value: Option<IdValue>,
}

/// What applying one record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// Already applied (an offset below the table's position).
    Seen,
    /// A new key, or the same value again (a refresh), or a tombstone.
    Applied,
    /// A later candidate for a key that has another value: ignored, and the
    /// winner should be written again so that compaction keeps it.
    Conflict { key: IdKey, winner: IdValue },
}

struct Entry {
    value: IdValue,
    /// Timestamp of the key's latest record (ms): the last use any instance
    /// wrote down.
    logged_at: i64,
    /// When this instance last used the entry.
    used: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: HashMap<IdKey, Entry>,
    /// The next offset to apply: every record below it has been applied.
    position: i64,
    /// Whether the topic has been read to its end at least once.
    loaded: bool,
    /// Keys being allocated by some thread of this process, so that two
    /// workers never allocate two ids for one key.
    allocating: HashSet<IdKey>,
}

/// The replay of the producer-id topic, shared by every thread.
#[derive(Default)]
pub struct ProducerIdTable {
    state: Mutex<State>,
    /// Signalled when the position moves or an allocation ends.
    changed: Condvar,
}

/// Idle entries to tombstone and used entries to write again, from a sweep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    pub tombstone: Vec<IdKey>,
    pub refresh: Vec<(IdKey, IdValue)>,
}

impl ProducerIdTable {
    /// The value of `key`, marked as used now, once the table is loaded.
    pub fn get(&self, key: &IdKey) -> Option<IdValue> {
        let mut st = self.state.lock();
        let e = st.entries.get_mut(key)?;
        e.used = Some(Instant::now());
        Some(e.value)
    }

    pub fn position(&self) -> i64 {
        self.state.lock().position
    }

    pub fn is_loaded(&self) -> bool {
        self.state.lock().loaded
    }

    pub fn len(&self) -> usize {
        self.state.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The topic has been read to its end once.
    pub fn mark_loaded(&self) {
        self.state.lock().loaded = true;
        self.changed.notify_all();
    }

    /// Apply records in log order. Records below the position were applied
    /// already (another thread read the same part of the log); a fetch may
    /// skip offsets (compaction, transaction markers), never reorder them.
    pub fn apply(&self, records: &[LogRecord], next_offset: i64) -> Vec<Apply> {
        let mut st = self.state.lock();
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if r.offset < st.position {
                out.push(Apply::Seen);
                continue;
            }
            st.position = r.offset + 1;
            out.push(Self::apply_one(&mut st, r));
        }
        // The fetch's last batch may end past its last record (compaction
        // keeps a batch's offsets).
        if next_offset > st.position {
            st.position = next_offset;
        }
        drop(st);
        self.changed.notify_all();
        out
    }

    fn apply_one(st: &mut State, r: &LogRecord) -> Apply {
        let Some(value) = r.value else {
            st.entries.remove(&r.key);
            return Apply::Applied;
        };
        if !r.key.fits(&value) {
            return Apply::Applied;
        }
        match st.entries.get_mut(&r.key) {
            None => {
                st.entries.insert(r.key.clone(), Entry { value, logged_at: r.timestamp, used: None });
                Apply::Applied
            }
            Some(e) if e.value == value => {
                e.logged_at = e.logged_at.max(r.timestamp);
                Apply::Applied
            }
            Some(e) => Apply::Conflict { key: r.key.clone(), winner: e.value },
        }
    }

    /// Claim `key` for allocation by this thread. `Err(value)` when it has a
    /// value already; `Ok(false)` when another thread holds the claim (wait
    /// with `wait_for_claim`, then look again); `Ok(true)`: claimed, end it
    /// with `release`.
    pub fn claim(&self, key: &IdKey) -> Result<bool, IdValue> {
        let mut st = self.state.lock();
        if let Some(e) = st.entries.get_mut(key) {
            e.used = Some(Instant::now());
            return Err(e.value);
        }
        Ok(st.allocating.insert(key.clone()))
    }

    /// Wait until no thread of this process is allocating `key`.
    pub fn wait_for_claim(&self, key: &IdKey, deadline: Instant) {
        let mut st = self.state.lock();
        while st.allocating.contains(key) {
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return;
            }
        }
    }

    pub fn release(&self, key: &IdKey) {
        self.state.lock().allocating.remove(key);
        self.changed.notify_all();
    }

    /// Which entries to tombstone (no record for `idle` and unused here for
    /// as long) and which to write again (used here since their record, and
    /// the record older than half of `idle`), at wall-clock `now_ms`.
    pub fn sweep(&self, now_ms: i64, idle: Duration) -> Sweep {
        let idle_ms = idle.as_millis().min(i64::MAX as u128) as i64;
        let now = Instant::now();
        let st = self.state.lock();
        let mut out = Sweep::default();
        for (key, e) in &st.entries {
            let age_ms = now_ms.saturating_sub(e.logged_at);
            let used_since_record = e.used.is_some_and(|u| {
                let ago = now.saturating_duration_since(u).as_millis().min(i64::MAX as u128) as i64;
                ago < age_ms
            });
            if used_since_record && age_ms >= idle_ms / 2 {
                out.refresh.push((key.clone(), e.value));
            } else if !used_since_record && age_ms >= idle_ms {
                out.tombstone.push(key.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(client_id: i64, k: i32) -> IdKey {
        IdKey::Derived { client_id, client_epoch: 0, k }
    }

    fn rec(offset: i64, key: IdKey, value: Option<IdValue>) -> LogRecord {
        LogRecord { offset, timestamp: 1_000, key, value }
    }

    const D1: IdValue = IdValue::Derived { id: 101, epoch: 0 };
    const D2: IdValue = IdValue::Derived { id: 102, epoch: 0 };

    #[test]
    fn keys_and_values_round_trip_and_junk_is_refused() {
        let keys = [
            pid(7, 1),
            IdKey::Derived { client_id: i64::MAX, client_epoch: -1, k: 99 },
            IdKey::SequenceBase { derived_id: 5, topic: "orders.v1-eu".into(), partition: 3 },
        ];
        for k in &keys {
            assert_eq!(IdKey::decode(&k.encode()).as_ref(), Some(k));
        }
        assert_eq!(IdValue::decode(&keys[0], &D1.encode()), Some(D1));
        assert_eq!(IdValue::decode(&keys[2], b"17"), Some(IdValue::SequenceBase(17)));
        for junk in [&b"pid/1/2"[..], b"seq/1/2/", b"xyz/1/2/3", b"pid/a/0/1", b"\xff"] {
            assert_eq!(IdKey::decode(junk), None, "{junk:?}");
        }
        assert_eq!(IdValue::decode(&keys[0], b"-1/0"), None, "a negative producer id is no id");
        assert_eq!(IdValue::decode(&keys[2], b"-3"), None);
        assert_eq!(IdValue::decode(&keys[0], b"17"), None);
    }

    #[test]
    fn the_first_record_of_a_key_wins_and_a_later_candidate_is_a_conflict() {
        let t = ProducerIdTable::default();
        let out = t.apply(&[rec(0, pid(1, 1), Some(D1)), rec(1, pid(1, 1), Some(D2))], 2);
        assert_eq!(out, vec![Apply::Applied, Apply::Conflict { key: pid(1, 1), winner: D1 }]);
        assert_eq!(t.get(&pid(1, 1)), Some(D1));
        // The winner written again is a refresh, not a conflict.
        assert_eq!(t.apply(&[rec(2, pid(1, 1), Some(D1))], 3), vec![Apply::Applied]);
        assert_eq!(t.position(), 3);
    }

    #[test]
    fn records_read_twice_apply_once() {
        let t = ProducerIdTable::default();
        t.apply(&[rec(0, pid(1, 1), Some(D1)), rec(1, pid(1, 1), None)], 2);
        // A slower reader's fetch of the same offsets changes nothing.
        assert_eq!(t.apply(&[rec(0, pid(1, 1), Some(D1))], 1), vec![Apply::Seen]);
        assert_eq!(t.get(&pid(1, 1)), None);
        assert_eq!(t.position(), 2);
    }

    #[test]
    fn a_tombstone_ends_a_key_and_the_next_record_starts_it_again() {
        let t = ProducerIdTable::default();
        t.apply(&[rec(0, pid(1, 1), Some(D1)), rec(5, pid(1, 1), None), rec(9, pid(1, 1), Some(D2))], 10);
        assert_eq!(t.get(&pid(1, 1)), Some(D2));
        assert_eq!(t.position(), 10, "compaction gaps are skipped");
    }

    #[test]
    fn a_fetch_end_past_its_records_moves_the_position() {
        let t = ProducerIdTable::default();
        t.apply(&[], 7);
        assert_eq!(t.position(), 7);
        t.apply(&[], 3);
        assert_eq!(t.position(), 7, "a stale read never moves the position back");
    }

    #[test]
    fn one_claim_per_key_until_released() {
        let t = ProducerIdTable::default();
        assert_eq!(t.claim(&pid(1, 1)), Ok(true));
        assert_eq!(t.claim(&pid(1, 1)), Ok(false), "a second worker must wait, not allocate");
        assert_eq!(t.claim(&pid(1, 2)), Ok(true), "other keys are not held up");
        t.apply(&[rec(0, pid(1, 1), Some(D1))], 1);
        t.release(&pid(1, 1));
        assert_eq!(t.claim(&pid(1, 1)), Err(D1));
    }

    #[test]
    fn a_waiting_worker_wakes_when_the_claim_ends() {
        let t = std::sync::Arc::new(ProducerIdTable::default());
        assert_eq!(t.claim(&pid(1, 1)), Ok(true));
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || {
            t2.wait_for_claim(&pid(1, 1), Instant::now() + Duration::from_secs(10));
            t2.claim(&pid(1, 1))
        });
        std::thread::sleep(Duration::from_millis(50));
        t.apply(&[rec(0, pid(1, 1), Some(D1))], 1);
        t.release(&pid(1, 1));
        assert_eq!(waiter.join().unwrap(), Err(D1));
    }

    #[test]
    fn sweeps_tombstone_idle_entries_and_refresh_used_ones() {
        let idle = Duration::from_secs(100);
        let t = ProducerIdTable::default();
        let at = |offset, key, ts| LogRecord { offset, timestamp: ts, key, value: Some(D1) };
        t.apply(&[at(0, pid(1, 1), 0), at(1, pid(2, 1), 0), at(2, pid(3, 1), 90_000)], 3);
        t.get(&pid(2, 1)); // used here since its record
        let s = t.sweep(100_000, idle);
        assert_eq!(s.tombstone, vec![pid(1, 1)], "unused for the idle time");
        assert_eq!(s.refresh, vec![(pid(2, 1), D1)], "in use: written again before it looks idle");
        // Recently written by another instance: left alone.
        assert!(!s.tombstone.contains(&pid(3, 1)) && !s.refresh.iter().any(|(k, _)| *k == pid(3, 1)));
    }
}
