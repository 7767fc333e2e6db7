//! What bounds the memory and time a client connection may take (issue
//! 11): budgets for buffered request and response bytes, shared by all
//! connections, and the deadlines the event loop sweeps once a second.

use std::time::{Duration, Instant};

use mio::Token;

use crate::config::{
    ListenConfig, DEFAULT_CONNECTIONS_MAX_IDLE_MS, DEFAULT_FRAME_TIMEOUT_MS, DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_MAX_BUFFERED_RESPONSE_BYTES, DEFAULT_QUEUED_MAX_REQUEST_BYTES,
};
use crate::metrics::CloseReason;

/// The `listen` limits the event loop enforces.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Bytes of partial (and complete, not yet handed over) request frames
    /// held over all client connections beyond each one's fixed read
    /// buffer (Kafka's `queued.max.request.bytes`).
    pub queued_max_request_bytes: usize,
    /// Bytes of responses queued toward clients, over all connections.
    pub max_buffered_response_bytes: usize,
    /// Kafka's `connections.max.idle.ms`.
    pub connections_max_idle: Duration,
    pub frame_timeout: Duration,
    /// TLS handshake and SASL login, from accepting the connection.
    pub handshake_timeout: Duration,
}

impl ConnectionLimits {
    pub fn from_config(listen: &ListenConfig) -> Self {
        ConnectionLimits {
            queued_max_request_bytes: listen.queued_max_request_bytes,
            max_buffered_response_bytes: listen.max_buffered_response_bytes,
            connections_max_idle: Duration::from_millis(listen.connections_max_idle_ms),
            frame_timeout: Duration::from_millis(listen.frame_timeout_ms),
            handshake_timeout: Duration::from_millis(listen.handshake_timeout_ms),
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            queued_max_request_bytes: DEFAULT_QUEUED_MAX_REQUEST_BYTES,
            max_buffered_response_bytes: DEFAULT_MAX_BUFFERED_RESPONSE_BYTES,
            connections_max_idle: Duration::from_millis(DEFAULT_CONNECTIONS_MAX_IDLE_MS),
            frame_timeout: Duration::from_millis(DEFAULT_FRAME_TIMEOUT_MS),
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
        }
    }
}

/// The request-bytes budget: what client frame readers hold, and the
/// connections that stopped reading because it was spent (to read again
/// once bytes are released).
pub struct RequestBudget {
    limit: usize,
    held: usize,
    waiting: Vec<Token>,
}

impl RequestBudget {
    pub fn new(limit: usize) -> Self {
        RequestBudget { limit, held: 0, waiting: Vec::new() }
    }

    /// How many more bytes readers may allocate.
    pub fn allowance(&self) -> usize {
        self.limit.saturating_sub(self.held)
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// A connection's holding went from `*charged` to `now`.
    pub fn recharge(&mut self, charged: &mut usize, now: usize) {
        self.held = self.held + now - *charged;
        *charged = now;
    }

    /// `token` stopped reading for want of budget.
    pub fn wait(&mut self, token: Token) {
        if !self.waiting.contains(&token) {
            self.waiting.push(token);
        }
    }

    /// The connections to read again now that budget is free (none while
    /// it is spent).
    pub fn take_resumable(&mut self) -> Vec<Token> {
        if self.allowance() == 0 {
            return Vec::new();
        }
        std::mem::take(&mut self.waiting)
    }
}

/// The timestamps a client connection's deadlines are measured from.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// Last time request bytes arrived or the connection was busy.
    pub last_active: Instant,
    /// When the frame now being received started (None: between frames).
    pub frame_started: Option<Instant>,
    /// When a TLS handshake or SASL login must be done by (None: done, or
    /// not asked for).
    pub handshake_deadline: Option<Instant>,
}

impl Clocks {
    pub fn new(now: Instant, handshake_deadline: Option<Instant>) -> Self {
        Clocks { last_active: now, frame_started: None, handshake_deadline }
    }

    /// After a read: `arrived` bytes came, `took_frames` says whether a
    /// frame completed, `buffered` is what the reader holds now.
    pub fn after_read(&mut self, now: Instant, arrived: bool, took_frames: bool, buffered: usize) {
        if arrived {
            self.last_active = now;
        }
        if buffered == 0 {
            self.frame_started = None;
        } else if took_frames || self.frame_started.is_none() {
            self.frame_started = Some(now);
        }
    }
}

/// What a connection is doing now, as the sweep sees it.
pub struct Activity {
    /// Requests in flight or responses queued: busy, not idle.
    pub busy: bool,
    /// The loop stopped reading it (in-flight limit): its partial frame
    /// waits for the proxy, not for the client.
    pub paused_by_proxy: bool,
    /// TLS handshake or SASL login still to be done.
    pub handshaking: bool,
}

/// Whether a connection has outlived one of its deadlines, and which.
pub fn expired(clocks: &mut Clocks, activity: &Activity, limits: &ConnectionLimits, now: Instant) -> Option<CloseReason> {
    if activity.busy {
        clocks.last_active = now;
    }
    if activity.paused_by_proxy && clocks.frame_started.is_some() {
        clocks.frame_started = Some(now);
    }
    match clocks.handshake_deadline {
        Some(_) if !activity.handshaking => clocks.handshake_deadline = None,
        Some(deadline) if now >= deadline => return Some(CloseReason::HandshakeTimeout),
        _ => {}
    }
    if clocks.frame_started.is_some_and(|t| now.duration_since(t) >= limits.frame_timeout) {
        return Some(CloseReason::FrameTimeout);
    }
    if clocks.frame_started.is_none() && now.duration_since(clocks.last_active) >= limits.connections_max_idle {
        return Some(CloseReason::Idle);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_charges_holdings_and_resumes_waiters_only_when_bytes_free_up() {
        let mut budget = RequestBudget::new(100);
        let (mut a, mut b) = (0, 0);
        budget.recharge(&mut a, 60);
        budget.recharge(&mut b, 40);
        assert_eq!((budget.held(), budget.allowance()), (100, 0));
        budget.wait(Token(3));
        budget.wait(Token(3));
        assert!(budget.take_resumable().is_empty(), "nothing released yet");
        budget.recharge(&mut a, 70);
        assert_eq!(budget.allowance(), 0, "over the limit is not negative");
        budget.recharge(&mut a, 0);
        assert_eq!((budget.held(), a), (40, 0));
        assert_eq!(budget.take_resumable(), vec![Token(3)], "once, though it waited twice");
        assert!(budget.take_resumable().is_empty());
        budget.recharge(&mut b, 0);
        assert_eq!(budget.allowance(), 100);
    }

    fn activity(busy: bool, paused_by_proxy: bool, handshaking: bool) -> Activity {
        Activity { busy, paused_by_proxy, handshaking }
    }

    #[test]
    fn deadlines() {
        let limits = ConnectionLimits {
            connections_max_idle: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(2),
            ..ConnectionLimits::default()
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let quiet = activity(false, false, false);

        let mut c = Clocks::new(t0, Some(at(2)));
        assert_eq!(expired(&mut c, &activity(false, false, true), &limits, at(1)), None);
        assert_eq!(expired(&mut c, &activity(false, false, true), &limits, at(2)), Some(CloseReason::HandshakeTimeout));
        let mut c = Clocks::new(t0, Some(at(2)));
        assert_eq!(expired(&mut c, &quiet, &limits, at(1)), None, "logged in");
        assert_eq!(expired(&mut c, &quiet, &limits, at(5)), None, "the deadline is gone once met");

        // A frame started at 1 s and not completed by 4 s.
        let mut c = Clocks::new(t0, None);
        c.after_read(at(1), true, false, 5);
        c.after_read(at(3), true, false, 9);
        assert_eq!(c.frame_started, Some(at(1)), "more bytes of the same frame do not restart its clock");
        assert_eq!(expired(&mut c, &quiet, &limits, at(3)), None);
        assert_eq!(expired(&mut c, &quiet, &limits, at(4)), Some(CloseReason::FrameTimeout));
        // A frame completing restarts the clock for the one after it.
        let mut c = Clocks::new(t0, None);
        c.after_read(at(1), true, false, 5);
        c.after_read(at(3), true, true, 2);
        assert_eq!(expired(&mut c, &quiet, &limits, at(5)), None);
        // Paused by the proxy's in-flight limit: not the client's fault.
        assert_eq!(expired(&mut c, &activity(true, true, false), &limits, at(9)), None);
        c.after_read(at(9), false, true, 0);
        assert_eq!(c.frame_started, None);

        // Idle counts from the last bytes or the last busy moment.
        let mut c = Clocks::new(t0, None);
        assert_eq!(expired(&mut c, &activity(true, false, false), &limits, at(8)), None);
        assert_eq!(expired(&mut c, &quiet, &limits, at(17)), None);
        assert_eq!(expired(&mut c, &quiet, &limits, at(18)), Some(CloseReason::Idle));
    }
}
