//! Sockets and the event loop. Only this module and the upstream writers
//! touch sockets; everything they carry crosses threads as owned messages.

mod admission;
pub mod event_loop;
pub mod limits;
pub mod socket;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::{Token, Waker};

use crate::metrics::Metrics;
use socket::SharedSocket;

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_CONNECTION_TOKEN: usize = 2;

/// Events for a worker, all about connections it owns.
pub enum ToWorker {
    ClientOpened { conn: Token, socket: Arc<SharedSocket> },
    /// Requests read from a client, in the order it sent them.
    ClientFrames { conn: Token, frames: Vec<Vec<u8>> },
    ClientClosed { conn: Token },
    /// Answers read from an upstream connection, in the order they came.
    UpstreamFrames { conn: Token, upstream: Token, frames: Vec<Vec<u8>> },
    /// `connected`: the broker was reached (a connect that failed is not).
    UpstreamClosed { conn: Token, upstream: Token, reason: String, connected: bool },
    Shutdown,
}

/// Requests from workers to the event loop.
pub enum ToLoop {
    /// Start reading responses from a new upstream connection of `owner`,
    /// a client of worker `worker`.
    AddUpstream { owner: Token, worker: usize, socket: Arc<SharedSocket> },
    /// Close an upstream connection once what was written to it has gone
    /// out: requests a client sent whole are delivered even when the client
    /// has left (Kafka processes them too).
    CloseUpstream(Token),
    CloseClient(Token),
    /// The client's in-flight count dropped: read from it again.
    ResumeClient(Token),
}

/// State every thread sees.
pub struct Shared {
    pub shutdown: AtomicBool,
    /// Client requests read and not yet answered, over all connections.
    pub in_flight: AtomicUsize,
    /// Response bytes queued toward clients, over all connections
    /// (bounded by `listen.max_buffered_response_bytes`).
    pub queued_response_bytes: Arc<AtomicUsize>,
    pub metrics: Metrics,
    /// What a configuration reload replaces (TLS, SASL).
    pub live: crate::live::Live,
    /// What `/livez` and `/readyz` answer from.
    pub health: crate::live::Health,
    /// The proxy's control connections, closed at shutdown so that no
    /// thread waits out a silent broker's request timeout.
    pub control_sockets: Arc<crate::upstream::stop::ControlSockets>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            shutdown: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            queued_response_bytes: Arc::new(AtomicUsize::new(0)),
            metrics: Metrics::default(),
            live: Default::default(),
            health: Default::default(),
            control_sockets: Default::default(),
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// How a worker reaches the event loop.
#[derive(Clone)]
pub struct LoopHandle {
    tx: Sender<ToLoop>,
    waker: Arc<Waker>,
    tokens: Arc<AtomicUsize>,
}

impl LoopHandle {
    pub fn new(tx: Sender<ToLoop>, waker: Arc<Waker>) -> LoopHandle {
        LoopHandle { tx, waker, tokens: Arc::new(AtomicUsize::new(FIRST_CONNECTION_TOKEN)) }
    }

    pub fn send(&self, cmd: ToLoop) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// A token no other connection has.
    pub fn next_token(&self) -> Token {
        Token(self.tokens.fetch_add(1, Ordering::Relaxed))
    }
}
