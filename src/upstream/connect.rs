//! Opening a TCP connection to a broker, with a bounded wait and a short
//! memory of failures so that a dead broker costs one timeout, not one per
//! request.
//!
//! Two ways: `connect` blocks (the proxy's own control connections, on
//! threads that may wait), `start` does not (a client's connections, opened
//! by workers: the event loop completes them, the worker bounds them by
//! `connection_timeout_ms`). Host names are resolved by `resolve`, which
//! may block and so runs on a look-up thread; workers read its answers
//! with `cached_address`.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cluster::Cluster;

/// Kafka's reconnect.backoff.ms and reconnect.backoff.max.ms defaults
/// (CommonClientConfigs): the wait after a failed connection starts at 50
/// ms and doubles with each failure in a row up to 1 s, each wait varied
/// by +-20% (CommonClientConfigs.RECONNECT_BACKOFF_JITTER) so that many
/// clients of one broker do not come back at once.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(1000);
const RECONNECT_BACKOFF_JITTER: f64 = 0.2;

/// The wait before connecting again after `failures` failures in a row.
pub fn reconnect_backoff(failures: u32) -> Duration {
    let doubled = RECONNECT_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let base = doubled.min(RECONNECT_BACKOFF_MAX);
    // Any well-spread number will do: std's per-instance random hash keys.
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(1.0 - RECONNECT_BACKOFF_JITTER + 2.0 * RECONNECT_BACKOFF_JITTER * unit)
}

/// How long a resolved host name is used before it is resolved again.
const RESOLVED_FOR: Duration = Duration::from_secs(60);

static RESOLVED: LazyLock<Mutex<HashMap<String, (SocketAddr, Instant)>>> = LazyLock::new(Default::default);

pub fn connect(addr: &str, timeout: Duration, cluster: &Cluster) -> io::Result<TcpStream> {
    if cluster.recently_unreachable(addr) {
        return Err(in_backoff());
    }
    let result = connect_any(addr, timeout);
    if result.is_err() {
        cluster.mark_unreachable(addr);
    }
    result
}

fn in_backoff() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, "it failed moments ago and its reconnect backoff is not over")
}

fn connect_any(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
    for sock_addr in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sock_addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The address of `addr` ("host:port") without waiting: an IP address as
/// written, or a host name `resolve` resolved lately.
pub fn cached_address(addr: &str) -> Option<SocketAddr> {
    if let Ok(sock_addr) = addr.parse::<SocketAddr>() {
        return Some(sock_addr);
    }
    match RESOLVED.lock().get(addr) {
        Some((sock_addr, at)) if at.elapsed() < RESOLVED_FOR => Some(*sock_addr),
        _ => None,
    }
}

/// Resolve `addr` (may block on DNS) and remember the first address for
/// `cached_address`. A name that does not resolve marks the broker
/// unreachable for a moment, as a failed connect does.
pub fn resolve(addr: &str, cluster: &Cluster) -> io::Result<SocketAddr> {
    if let Some(sock_addr) = cached_address(addr) {
        return Ok(sock_addr);
    }
    let first = addr
        .to_socket_addrs()
        .and_then(|mut all| all.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"))));
    match first {
        Ok(sock_addr) => {
            RESOLVED.lock().insert(addr.to_string(), (sock_addr, Instant::now()));
            Ok(sock_addr)
        }
        Err(e) => {
            cluster.mark_unreachable(addr);
            Err(e)
        }
    }
}

/// Begin connecting to `addr` without waiting: the socket is returned at
/// once and becomes writable (or reports its error) when the connection is
/// made. A broker that failed moments ago is not tried again yet.
pub fn start(addr: &str, sock_addr: SocketAddr, cluster: &Cluster) -> io::Result<mio::net::TcpStream> {
    if cluster.recently_unreachable(addr) {
        return Err(in_backoff());
    }
    let stream = mio::net::TcpStream::connect(sock_addr).inspect_err(|_| cluster.mark_unreachable(addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_maximum_with_jitter() {
        let within = |d: Duration, base: u64| {
            let ms = d.as_secs_f64() * 1000.0;
            assert!(ms >= base as f64 * 0.8 - 0.001 && ms <= base as f64 * 1.2 + 0.001, "{ms} ms for base {base}");
        };
        for (failures, base) in [(1, 50), (2, 100), (3, 200), (4, 400), (5, 800), (6, 1000), (40, 1000)] {
            for _ in 0..50 {
                within(reconnect_backoff(failures), base);
            }
        }
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| reconnect_backoff(3)).collect();
        assert!(waits.len() > 10, "jittered: {waits:?}");
    }

    #[test]
    fn failures_in_a_row_lengthen_the_wait_and_an_answer_resets_it() {
        let cluster = Cluster::new(Vec::new());
        let addr = "127.0.0.1:1";
        assert!(!cluster.recently_unreachable(addr));
        for _ in 0..6 {
            cluster.mark_unreachable(addr);
        }
        assert!(cluster.recently_unreachable(addr));
        std::thread::sleep(Duration::from_millis(150));
        assert!(cluster.recently_unreachable(addr), "six failures wait 800 ms or more");
        cluster.mark_reachable(addr);
        assert!(!cluster.recently_unreachable(addr));
        cluster.mark_unreachable(addr);
        std::thread::sleep(Duration::from_millis(70));
        assert!(!cluster.recently_unreachable(addr), "one failure waits at most 60 ms");
    }

    #[test]
    fn ip_addresses_need_no_look_up() {
        assert_eq!(cached_address("127.0.0.1:9092"), Some("127.0.0.1:9092".parse().unwrap()));
        assert_eq!(cached_address("[::1]:9092"), Some("[::1]:9092".parse().unwrap()));
        assert_eq!(cached_address("broker-7.invalid:9092"), None);
    }

    #[test]
    fn a_resolved_name_is_remembered() {
        let cluster = Cluster::new(Vec::new());
        let addr = resolve("localhost:9092", &cluster).expect("localhost resolves");
        assert_eq!(addr.port(), 9092);
        assert_eq!(cached_address("localhost:9092"), Some(addr));
    }
}
