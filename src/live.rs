//! What a configuration reload (SIGHUP) may replace while the proxy runs,
//! and what the health endpoints read.
//!
//! Readers take the current value when they start something new (a client
//! connection's TLS handshake, an upstream connection, a SASL login) and
//! keep it for that thing's life: a reload never disturbs a connection
//! that is open.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::auth::server::SaslServer;
use crate::net::tls::{ServerTls, UpstreamTls};

/// A value a reload may replace; readers get a clone of the current one.
#[derive(Debug, Default)]
pub struct Swap<T: Clone>(RwLock<T>);

impl<T: Clone> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap(RwLock::new(value))
    }

    pub fn get(&self) -> T {
        self.0.read().clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write() = value;
    }
}

/// The parts of the configuration a reload applies to new connections.
#[derive(Default)]
pub struct Live {
    /// `listen.security.tls`, loaded: the certificate new clients see.
    pub client_tls: Swap<Option<Arc<ServerTls>>>,
    /// `kafka.tls`, loaded: shared with every control client, so their
    /// next connection uses a reloaded one too.
    pub upstream_tls: Arc<Swap<Option<Arc<UpstreamTls>>>>,
    /// `listen.security.sasl`: users, mechanisms, OAUTHBEARER validation.
    pub client_sasl: Swap<Option<Arc<SaslServer>>>,
}

/// How long the event loop may go without a turn before `/livez` says it
/// is stuck. Its poll wakes at least every 200 ms, and no turn blocks.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(10);

/// Metadata older than this many refresh intervals is stale for `/readyz`.
pub const READINESS_REFRESHES: u32 = 3;

/// What `/livez` and `/readyz` answer from: the event loop's heartbeat and
/// the outcome of the metadata refreshes. Times are milliseconds since
/// `epoch` (0: never).
pub struct Health {
    epoch: Instant,
    loop_beat_ms: AtomicU64,
    refreshed_ms: AtomicU64,
    /// The last refresh (or the start's bootstrap) reached the cluster.
    reachable: AtomicBool,
    /// Why the last refresh failed.
    last_failure: Mutex<String>,
    /// The readiness bound: READINESS_REFRESHES x metadata_refresh_interval_ms.
    stale_after_ms: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            epoch: Instant::now(),
            loop_beat_ms: AtomicU64::new(0),
            refreshed_ms: AtomicU64::new(0),
            reachable: AtomicBool::new(false),
            last_failure: Mutex::new(String::new()),
            stale_after_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl Health {
    fn since_epoch(&self, at: Instant) -> u64 {
        // +1 so that a beat in the epoch's first millisecond is not "never".
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// The event loop took a turn.
    pub fn beat(&self, now: Instant) {
        self.loop_beat_ms.store(self.since_epoch(now), Ordering::Relaxed);
    }

    /// Metadata was read from the cluster.
    pub fn refreshed(&self, now: Instant) {
        self.refreshed_ms.store(self.since_epoch(now), Ordering::Relaxed);
        self.reachable.store(true, Ordering::Relaxed);
    }

    /// A metadata refresh failed.
    pub fn refresh_failed(&self, why: &str) {
        *self.last_failure.lock() = why.to_string();
        self.reachable.store(false, Ordering::Relaxed);
    }

    pub fn set_refresh_interval(&self, interval: Duration) {
        let bound = interval.saturating_mul(READINESS_REFRESHES).as_millis() as u64;
        self.stale_after_ms.store(bound, Ordering::Relaxed);
    }

    /// `/livez`: (HTTP status, one-line body).
    pub fn liveness(&self, now: Instant) -> (u16, String) {
        let beat = self.loop_beat_ms.load(Ordering::Relaxed);
        if beat == 0 {
            // Still connecting to the cluster at start: bounded by
            // connection_timeout_ms, after which the process exits.
            return (200, "alive: starting\n".into());
        }
        let age = self.since_epoch(now).saturating_sub(beat);
        if age > LIVENESS_BOUND.as_millis() as u64 {
            (503, format!("not alive: the event loop has not run for {:.1}s (bound {}s)\n", secs(age), LIVENESS_BOUND.as_secs()))
        } else {
            (200, "alive\n".into())
        }
    }

    /// `/readyz`: (HTTP status, one-line body).
    pub fn readiness(&self, now: Instant) -> (u16, String) {
        let refreshed = self.refreshed_ms.load(Ordering::Relaxed);
        if refreshed == 0 {
            return (503, "not ready: not connected to the Kafka cluster yet\n".into());
        }
        let age = self.since_epoch(now).saturating_sub(refreshed);
        if !self.reachable.load(Ordering::Relaxed) {
            let why = self.last_failure.lock().replace(['\n', '\r'], " ");
            return (503, format!("not ready: cannot reach the Kafka cluster ({why}); metadata is {:.1}s old\n", secs(age)));
        }
        let bound = self.stale_after_ms.load(Ordering::Relaxed);
        if age > bound {
            return (503, format!("not ready: metadata is {:.1}s old (bound {:.1}s)\n", secs(age), secs(bound)));
        }
        (200, format!("ready: metadata refreshed {:.1}s ago\n", secs(age)))
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: &Health, ms: u64) -> Instant {
        h.epoch + Duration::from_millis(ms)
    }

    #[test]
    fn liveness_follows_the_loop_heartbeat() {
        let h = Health::default();
        assert_eq!(h.liveness(at(&h, 60_000)), (200, "alive: starting\n".into()));
        h.beat(at(&h, 1_000));
        assert_eq!(h.liveness(at(&h, 11_000)).0, 200);
        let (status, body) = h.liveness(at(&h, 11_002));
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("has not run for 10.0s"), "{body}");
        h.beat(at(&h, 11_500));
        assert_eq!(h.liveness(at(&h, 11_600)).0, 200);
    }

    #[test]
    fn readiness_needs_a_reachable_cluster_and_fresh_metadata() {
        let h = Health::default();
        h.set_refresh_interval(Duration::from_secs(1));
        let (status, body) = h.readiness(at(&h, 0));
        assert_eq!(status, 503);
        assert!(body.contains("not connected"), "{body}");
        h.refreshed(at(&h, 1_000));
        assert_eq!(h.readiness(at(&h, 1_500)), (200, "ready: metadata refreshed 0.5s ago\n".into()));
        h.refresh_failed("connection refused\nto 127.0.0.1:1");
        let (status, body) = h.readiness(at(&h, 2_000));
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: cannot reach the Kafka cluster (connection refused to 127.0.0.1:1); metadata is 1.0s old\n");
        h.refreshed(at(&h, 2_100));
        assert_eq!(h.readiness(at(&h, 5_100)).0, 200);
        let (status, body) = h.readiness(at(&h, 5_102));
        assert_eq!(status, 503, "older than 3 intervals");
        assert!(body.contains("bound 3.0s"), "{body}");
    }

    #[test]
    fn swap_hands_out_the_current_value() {
        let s = Swap::new(Some(Arc::new(1)));
        let held = s.get();
        s.set(Some(Arc::new(2)));
        assert_eq!(held.as_deref(), Some(&1), "a reader keeps what it took");
        assert_eq!(s.get().as_deref(), Some(&2));
    }
}
