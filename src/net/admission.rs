//! Who may connect: `listen.max_connections` and
//! `listen.max_connections_per_ip` (Kafka's `max.connections.per.ip` and
//! its overrides) checked at accept, and the client connection events that
//! repeat (refusals, connections closed on errors, connects and
//! disconnects) logged as summaries rather than one line each.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::config::PerIpLimits;
use crate::log_summary::{thousands, Churn, RepeatedEvent, Summary, FULL_LINES_PER_INTERVAL};
use crate::metrics::{Metrics, RefusalReason};

pub struct Admission {
    max_connections: usize,
    per_ip: PerIpLimits,
    open: usize,
    /// Open client connections per address; addresses with none are removed.
    open_per_ip: HashMap<IpAddr, usize>,
    refused_max: RepeatedEvent<IpAddr>,
    refused_per_ip: RepeatedEvent<IpAddr>,
    close_errors: RepeatedEvent<PeerError>,
    churn: Churn,
}

impl Admission {
    pub fn new(max_connections: usize, per_ip: PerIpLimits, summary_interval: Duration, now: Instant) -> Admission {
        Admission {
            max_connections,
            per_ip,
            open: 0,
            open_per_ip: HashMap::new(),
            refused_max: RepeatedEvent::new(summary_interval, FULL_LINES_PER_INTERVAL),
            refused_per_ip: RepeatedEvent::new(summary_interval, FULL_LINES_PER_INTERVAL),
            close_errors: RepeatedEvent::new(summary_interval, FULL_LINES_PER_INTERVAL),
            churn: Churn::new(summary_interval, now),
        }
    }

    /// Takes a connection from `peer` in if the limits allow, counting it;
    /// else counts and logs the refusal (the caller closes the socket).
    /// The global limit is checked first, as Kafka's ConnectionQuotas does.
    pub fn admit(&mut self, peer: SocketAddr, now: Instant, metrics: &Metrics) -> Result<(), RefusalReason> {
        let ip = peer.ip().to_canonical();
        let from_ip = self.open_per_ip.get(&ip).copied().unwrap_or(0);
        let limit = self.per_ip.limit_for(ip);
        let refusal = if self.open >= self.max_connections {
            Some(RefusalReason::MaxConnections)
        } else if from_ip >= limit {
            Some(RefusalReason::PerIpLimit)
        } else {
            None
        };
        if let Some(reason) = refusal {
            metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
            metrics.connections_refused.count(reason);
            match reason {
                RefusalReason::MaxConnections if self.refused_max.record(now, ip) => warn!(
                    "Refusing connection from {peer}: max_connections ({}) reached",
                    self.max_connections
                ),
                RefusalReason::PerIpLimit if self.refused_per_ip.record(now, ip) => warn!(
                    "Refusing connection from {peer}: max_connections_per_ip ({limit}) reached for {ip}"
                ),
                _ => {}
            }
            return Err(reason);
        }
        self.open += 1;
        *self.open_per_ip.entry(ip).or_default() += 1;
        self.churn.connected();
        Ok(())
    }

    /// A connection that `admit` took in is gone.
    pub fn release(&mut self, peer: SocketAddr) {
        let ip = peer.ip().to_canonical();
        if let Some(n) = self.open_per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.open_per_ip.remove(&ip);
            }
        }
        self.open -= 1;
        self.churn.disconnected();
    }

    /// A client connection closed because of what it sent or did (a
    /// malformed frame, a failed read or handshake): logged in full the
    /// first time in an interval a peer has that problem (for a few), then
    /// counted. Keyed by the problem too, so that one peer's repeated error
    /// does not hide another error of that peer.
    pub fn log_close_error(&mut self, peer: SocketAddr, why: &str, now: Instant) {
        let problem = PeerError { ip: peer.ip().to_canonical(), why: why.to_string() };
        if self.close_errors.record(now, problem) {
            warn!("Closing connection from {peer}: {why}");
        }
    }

    /// The summaries of intervals that are over. Called every event-loop turn.
    pub fn log_summaries(&mut self, now: Instant) {
        if let Some(s) = self.refused_max.summary_due(now) {
            warn!("{} (max_connections {}; {})", refused(&s), self.max_connections, s.sources());
        }
        if let Some(s) = self.refused_per_ip.summary_due(now) {
            warn!("{} (max_connections_per_ip; {})", refused(&s), s.sources());
        }
        if let Some(s) = self.close_errors.summary_due(now) {
            let connections = if s.suppressed == 1 { "connection" } else { "connections" };
            warn!(
                "Closed {} more client {connections} on errors in the last {} s ({})",
                thousands(s.suppressed),
                s.seconds(),
                s.sources()
            );
        }
        if let Some(c) = self.churn.summary_due(now) {
            info!(
                "Clients: {} connected, {} disconnected in the last {} s, {} open",
                thousands(c.connected),
                thousands(c.disconnected),
                c.seconds,
                thousands(self.open as u64)
            );
        }
    }
}

/// A peer address and why its connection was closed.
#[derive(Clone, PartialEq, Eq, Hash)]
struct PeerError {
    ip: IpAddr,
    why: String,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.ip, self.why)
    }
}

fn refused(s: &Summary<IpAddr>) -> String {
    let connections = if s.suppressed == 1 { "connection" } else { "connections" };
    format!("Refused {} more {connections} in the last {} s", thousands(s.suppressed), s.seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn limits(default: usize, overrides: &[(&str, usize)]) -> PerIpLimits {
        PerIpLimits { default, overrides: overrides.iter().map(|(ip, n)| (ip.parse().unwrap(), *n)).collect() }
    }

    #[test]
    fn per_ip_limit_refuses_only_that_address() {
        let (now, metrics) = (Instant::now(), Metrics::default());
        let mut gate = Admission::new(10, limits(2, &[("10.0.0.9", 4)]), Duration::from_secs(10), now);
        let offender = |port| peer(&format!("10.0.0.1:{port}"));
        assert_eq!(gate.admit(offender(1), now, &metrics), Ok(()));
        assert_eq!(gate.admit(offender(2), now, &metrics), Ok(()));
        assert_eq!(gate.admit(offender(3), now, &metrics), Err(RefusalReason::PerIpLimit));
        // Another address, and the same one seen through a dual-stack listener.
        assert_eq!(gate.admit(peer("10.0.0.2:1"), now, &metrics), Ok(()));
        assert_eq!(gate.admit(peer("[::ffff:10.0.0.1]:4"), now, &metrics), Err(RefusalReason::PerIpLimit));
        for port in 1..=4 {
            assert_eq!(gate.admit(peer(&format!("10.0.0.9:{port}")), now, &metrics), Ok(()), "override");
        }
        assert_eq!(gate.admit(peer("10.0.0.9:5"), now, &metrics), Err(RefusalReason::PerIpLimit));
        // A slot freed is a slot for that address again.
        gate.release(offender(1));
        assert_eq!(gate.admit(offender(5), now, &metrics), Ok(()));
        assert_eq!(gate.open, 7);
        assert_eq!(metrics.connections_refused.get(RefusalReason::PerIpLimit), 3);
        assert_eq!(metrics.connections_rejected.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn max_connections_checked_first() {
        let (now, metrics) = (Instant::now(), Metrics::default());
        let mut gate = Admission::new(2, limits(1, &[]), Duration::from_secs(10), now);
        assert_eq!(gate.admit(peer("10.0.0.1:1"), now, &metrics), Ok(()));
        assert_eq!(gate.admit(peer("10.0.0.2:1"), now, &metrics), Ok(()));
        assert_eq!(gate.admit(peer("10.0.0.1:2"), now, &metrics), Err(RefusalReason::MaxConnections));
        assert_eq!(gate.admit(peer("10.0.0.3:1"), now, &metrics), Err(RefusalReason::MaxConnections));
        gate.release(peer("10.0.0.2:1"));
        assert_eq!(gate.admit(peer("10.0.0.1:3"), now, &metrics), Err(RefusalReason::PerIpLimit));
        assert_eq!(gate.admit(peer("10.0.0.3:2"), now, &metrics), Ok(()));
        assert_eq!(metrics.connections_refused.get(RefusalReason::MaxConnections), 2);
        assert_eq!(gate.open_per_ip.len(), 2, "an address with no connection left is forgotten");
    }
}
