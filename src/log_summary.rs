//! Repeated log lines, summarised. A flood (refused connections, malformed
//! frames) must not write a line per event: in each interval the first
//! occurrence from each source is logged in full, up to a few sources, the
//! rest are only counted, and when the interval is over one line says how
//! many there were and where most came from. A source is what the caller
//! keys by: a peer address, or a peer and what it did wrong.
//!
//! The clock is the caller's: every call takes `now`, so the tests drive
//! time without sleeping.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often repeated lines and client churn are summarised.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Sources logged in full per interval: a few distinct peers (or problems)
/// are worth seeing by name; beyond that the summary names the worst one.
pub const FULL_LINES_PER_INTERVAL: usize = 5;

/// Sources counted one by one per interval; the rest are counted together,
/// so a flood from many addresses costs bounded memory.
const TRACKED_SOURCES: usize = 1024;

/// One kind of event that may repeat, keyed by its source (a peer address).
pub struct RepeatedEvent<K> {
    interval: Duration,
    full_lines: usize,
    window: Option<Window<K>>,
}

struct Window<K> {
    started: Instant,
    logged: HashSet<K>,
    suppressed: u64,
    by_source: HashMap<K, u64>,
    untracked: u64,
}

/// What an interval held beyond the lines logged in full.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary<K> {
    /// Occurrences not logged in full.
    pub suppressed: u64,
    /// Since the interval's first occurrence.
    pub elapsed: Duration,
    /// The source of most suppressed occurrences, and how many.
    pub top: Option<(K, u64)>,
    /// Suppressed occurrences from other sources than `top`.
    pub others: u64,
    /// How many other sources those came from (at least; beyond the tracked
    /// sources they are not told apart).
    pub other_sources: usize,
}

impl<K: Hash + Eq + Clone> RepeatedEvent<K> {
    pub fn new(interval: Duration, full_lines: usize) -> RepeatedEvent<K> {
        RepeatedEvent { interval, full_lines, window: None }
    }

    /// Counts one occurrence from `source`; true when the caller should
    /// log it in full.
    pub fn record(&mut self, now: Instant, source: K) -> bool {
        let interval = self.interval;
        let window = match &mut self.window {
            // An interval that ended with nothing suppressed owes no summary:
            // start afresh. One with a summary due keeps counting until the
            // caller takes it.
            Some(w) if w.suppressed > 0 || now.duration_since(w.started) < interval => w,
            slot => slot.insert(Window {
                started: now,
                logged: HashSet::new(),
                suppressed: 0,
                by_source: HashMap::new(),
                untracked: 0,
            }),
        };
        if window.logged.len() < self.full_lines && !window.logged.contains(&source) {
            window.logged.insert(source);
            return true;
        }
        window.suppressed += 1;
        let tracked = window.by_source.len();
        match window.by_source.get_mut(&source) {
            Some(n) => *n += 1,
            None if tracked < TRACKED_SOURCES => {
                window.by_source.insert(source, 1);
            }
            None => window.untracked += 1,
        }
        false
    }

    /// The summary of an interval that is over, if it suppressed anything.
    /// Call it regularly (each event-loop turn); the next occurrence after
    /// it is logged in full again.
    pub fn summary_due(&mut self, now: Instant) -> Option<Summary<K>> {
        let started = self.window.as_ref()?.started;
        let elapsed = now.duration_since(started);
        if elapsed < self.interval {
            return None;
        }
        let window = self.window.take()?;
        if window.suppressed == 0 {
            return None;
        }
        let other_sources = window.by_source.len().saturating_sub(1) + usize::from(window.untracked > 0);
        let top = window.by_source.into_iter().max_by_key(|(_, n)| *n);
        let others = window.suppressed - top.as_ref().map_or(0, |(_, n)| *n);
        Some(Summary { suppressed: window.suppressed, elapsed, top, others, other_sources })
    }
}

impl<K: Display> Summary<K> {
    /// `2,300 from 127.0.0.1`, then `, 62 from 3 other sources` when
    /// there were others.
    pub fn sources(&self) -> String {
        let mut text = match &self.top {
            Some((source, n)) => format!("{} from {source}", thousands(*n)),
            None => String::new(),
        };
        if self.others > 0 {
            let plural = if self.other_sources == 1 { "" } else { "s" };
            let sep = if text.is_empty() { "" } else { ", " };
            text += &format!("{sep}{} from {} other source{plural}", thousands(self.others), self.other_sources);
        }
        text
    }

    /// Whole seconds, at least 1, for "in the last N s".
    pub fn seconds(&self) -> u64 {
        seconds(self.elapsed)
    }
}

fn seconds(elapsed: Duration) -> u64 {
    elapsed.as_secs_f64().round().max(1.0) as u64
}

/// `2362` as `2,362`: counts in summaries are read by people.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Client connections opened and closed, told once per interval in which
/// anything changed.
pub struct Churn {
    interval: Duration,
    since: Instant,
    connected: u64,
    disconnected: u64,
}

/// "N connected, M disconnected in the last S s".
#[derive(Debug, PartialEq, Eq)]
pub struct ChurnSummary {
    pub connected: u64,
    pub disconnected: u64,
    pub seconds: u64,
}

impl Churn {
    pub fn new(interval: Duration, now: Instant) -> Churn {
        Churn { interval, since: now, connected: 0, disconnected: 0 }
    }

    pub fn connected(&mut self) {
        self.connected += 1;
    }

    pub fn disconnected(&mut self) {
        self.disconnected += 1;
    }

    /// The interval's figures once it is over, if anything changed in it.
    pub fn summary_due(&mut self, now: Instant) -> Option<ChurnSummary> {
        let elapsed = now.duration_since(self.since);
        if elapsed < self.interval {
            return None;
        }
        let (connected, disconnected) = (self.connected, self.disconnected);
        *self = Churn::new(self.interval, now);
        (connected + disconnected > 0).then_some(ChurnSummary { connected, disconnected, seconds: seconds(elapsed) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn first_occurrence_logged_then_counted_and_summarised() {
        let t0 = Instant::now();
        let mut refused = RepeatedEvent::new(TEN, 1);
        assert!(refused.record(t0, "127.0.0.1"));
        for i in 0..2_362 {
            assert!(!refused.record(at(t0, i), "127.0.0.1"));
        }
        assert_eq!(refused.summary_due(at(t0, 9_999)), None, "not before the interval is over");
        let summary = refused.summary_due(at(t0, 10_000)).expect("a summary");
        assert_eq!(summary.suppressed, 2_362);
        assert_eq!(summary.seconds(), 10);
        assert_eq!(summary.sources(), "2,362 from 127.0.0.1");
        assert_eq!(refused.summary_due(at(t0, 20_000)), None, "each summary once");
        assert!(refused.record(at(t0, 20_001), "127.0.0.1"), "after a summary, logged in full again");
    }

    #[test]
    fn quiet_interval_owes_no_summary() {
        let t0 = Instant::now();
        let mut errors = RepeatedEvent::new(TEN, 1);
        assert!(errors.record(t0, "a"));
        assert_eq!(errors.summary_due(at(t0, 10_000)), None);
        assert!(errors.record(at(t0, 10_001), "a"));
        // Expired with nothing suppressed and not yet collected: a new window.
        assert!(errors.record(at(t0, 30_000), "a"));
        assert!(!errors.record(at(t0, 30_001), "a"));
    }

    #[test]
    fn a_few_sources_each_get_a_full_line_and_the_worst_is_named() {
        let t0 = Instant::now();
        let mut refused = RepeatedEvent::new(TEN, 2);
        assert!(refused.record(t0, "10.0.0.1"));
        assert!(refused.record(t0, "10.0.0.2"));
        assert!(!refused.record(t0, "10.0.0.3"), "only two full lines per interval");
        for _ in 0..5 {
            refused.record(t0, "10.0.0.1");
        }
        refused.record(t0, "10.0.0.4");
        let s = refused.summary_due(at(t0, 12_400)).unwrap();
        assert_eq!((s.suppressed, s.top, s.others, s.other_sources), (7, Some(("10.0.0.1", 5)), 2, 2));
        assert_eq!(s.sources(), "5 from 10.0.0.1, 2 from 2 other sources");
        assert_eq!(s.seconds(), 12);
    }

    #[test]
    fn many_sources_cost_bounded_memory() {
        let t0 = Instant::now();
        let mut refused = RepeatedEvent::new(TEN, 0);
        for i in 0..(TRACKED_SOURCES as u32 + 500) {
            refused.record(t0, i);
        }
        refused.record(t0, 7);
        let window = refused.window.as_ref().unwrap();
        assert_eq!(window.by_source.len(), TRACKED_SOURCES);
        let s = refused.summary_due(at(t0, 10_000)).unwrap();
        assert_eq!(s.top, Some((7, 2)));
        assert_eq!((s.suppressed, s.others), (TRACKED_SOURCES as u64 + 501, TRACKED_SOURCES as u64 + 499));
        assert_eq!(s.other_sources, TRACKED_SOURCES, "1023 tracked others and the untracked");
    }

    #[test]
    fn churn_told_only_when_something_changed() {
        let t0 = Instant::now();
        let mut churn = Churn::new(TEN, t0);
        assert_eq!(churn.summary_due(at(t0, 10_000)), None);
        churn.connected();
        churn.connected();
        churn.disconnected();
        assert_eq!(churn.summary_due(at(t0, 15_000)), None);
        assert_eq!(
            churn.summary_due(at(t0, 20_000)),
            Some(ChurnSummary { connected: 2, disconnected: 1, seconds: 10 })
        );
        assert_eq!(churn.summary_due(at(t0, 30_000)), None, "counts restart each interval");
    }

    #[test]
    fn thousands_separators() {
        for (n, text) in [(0, "0"), (999, "999"), (1_000, "1,000"), (2_362, "2,362"), (1_234_567, "1,234,567")] {
            assert_eq!(thousands(n), text);
        }
    }
}
