//! The one mio event loop: accepts client connections, reads whole frames
//! from every socket (client and upstream), flushes queued writes, and hands
//! frames to the worker that owns the connection.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use super::admission::Admission;
use super::limits::{self, Activity, Clocks, ConnectionLimits, RequestBudget};
use super::socket::{Handshake, SharedSocket};
use super::tls::{ServerTls, TlsSession, TLS_HANDSHAKE_TIMEOUT};
use super::{LoopHandle, Shared, ToLoop, ToWorker, LISTENER, WAKER};
use crate::config::PerIpLimits;
use crate::frame::{Filled, FrameReader, MIN_REQUEST_FRAME};
use crate::log_summary::SUMMARY_INTERVAL;
use crate::metrics::CloseReason;
use crate::upstream::misbehaviour::{bad_size_prefix, closed_mid_response};

/// Upstream responses are bounded by what the client asked for (fetch max
/// bytes), not by the request limit; this only stops a corrupt size prefix
/// from allocating gigabytes.
const MAX_RESPONSE_FRAME: usize = 1 << 30;
const PEER_CLOSED: &str = "closed by peer";
/// Why an upstream connection ended when its broker closed it between
/// answers (the session words it by what was waiting).
pub const UPSTREAM_CLOSED: &str = "closed the connection";

pub struct LoopSettings {
    pub max_connections: usize,
    /// `listen.max_connections_per_ip` and its overrides.
    pub per_ip: PerIpLimits,
    pub max_frame_bytes: usize,
    /// Unanswered requests per client connection before the loop stops
    /// reading from it.
    pub max_in_flight_per_client: usize,
    /// How long a shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// `listen.security` TLS at start: clients must handshake first. Only
    /// whether it is on is read here (a reload cannot change that); the
    /// certificate new clients get is `Shared::live`'s, which a reload may
    /// replace.
    pub client_tls: Option<Arc<ServerTls>>,
    /// `listen.security` SASL: clients must log in first.
    pub client_sasl: bool,
    pub limits: ConnectionLimits,
}

/// How often client connections' deadlines are checked.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

enum ReadOutcome {
    /// The socket has nothing more for now.
    Drained,
    /// The reader holds complete frames to hand over before it reads on.
    FramesWaiting,
    Closed(String),
}

enum Kind {
    Client,
    Upstream { owner: Token },
}

struct Entry {
    socket: Arc<SharedSocket>,
    reader: FrameReader,
    worker: usize,
    kind: Kind,
    /// An upstream connection being closed gracefully: since when, and
    /// whether its write side is shut yet.
    closing: Option<(Instant, bool)>,
    /// What this (client) connection's reader is charged in the request budget.
    charged: usize,
    clocks: Clocks,
}

impl Entry {
    fn new(socket: Arc<SharedSocket>, reader: FrameReader, worker: usize, kind: Kind, clocks: Clocks) -> Entry {
        Entry { socket, reader, worker, kind, closing: None, charged: 0, clocks }
    }
}

/// Why a connection the peer closed (or reset) ended: for a broker, how
/// much of a response it left unfinished, if any.
fn peer_closed(entry: &Entry) -> String {
    match (&entry.kind, entry.reader.partial_frame()) {
        (Kind::Client, _) => PEER_CLOSED.to_string(),
        (Kind::Upstream { .. }, Some((got, size))) => closed_mid_response(got, size),
        (Kind::Upstream { .. }, None) => UPSTREAM_CLOSED.to_string(),
    }
}

/// How long a gracefully closing upstream connection may take to deliver
/// what was written to it and see the broker close.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(10);

pub struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    entries: HashMap<Token, Entry>,
    commands: Receiver<ToLoop>,
    workers: Vec<Sender<ToWorker>>,
    handle: LoopHandle,
    settings: LoopSettings,
    shared: Arc<Shared>,
    /// Client connection limits, and the logging of refusals and churn.
    admission: Admission,
    next_worker: usize,
    /// Upstream TLS connections by when their handshake must be done,
    /// earliest first (one timeout for all, so in the order they started).
    /// Clients' deadlines are in their `Clocks`.
    handshake_deadlines: VecDeque<(Instant, Token)>,
    request_budget: RequestBudget,
    /// Upstream connections not read because the clients they answer have
    /// responses queued and the response budget is spent.
    response_waiting: Vec<Token>,
    next_sweep: Instant,
}

impl EventLoop {
    pub fn new(
        poll: Poll,
        mut listener: TcpListener,
        commands: Receiver<ToLoop>,
        workers: Vec<Sender<ToWorker>>,
        handle: LoopHandle,
        settings: LoopSettings,
        shared: Arc<Shared>,
    ) -> io::Result<EventLoop> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let admission =
            Admission::new(settings.max_connections, settings.per_ip.clone(), SUMMARY_INTERVAL, Instant::now());
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            entries: HashMap::new(),
            commands,
            workers,
            handle,
            shared,
            admission,
            next_worker: 0,
            handshake_deadlines: VecDeque::new(),
            request_budget: RequestBudget::new(settings.limits.queued_max_request_bytes),
            response_waiting: Vec::new(),
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            settings,
        })
    }

    /// Run until a shutdown is requested and in-flight requests are done (or
    /// the grace period is over).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            self.shared.health.beat(Instant::now());
            match self.poll.poll(&mut events, Some(Duration::from_millis(200))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    token if self.entries.get(&token).is_some_and(|e| e.socket.is_tls()) => self.tls_ready(token),
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(token);
                        }
                    }
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd);
            }
            self.resume_waiting();
            self.expire_closing();
            self.expire_handshakes();
            // One clock reading for the once-a-second chores of this turn.
            let now = Instant::now();
            self.sweep_deadlines(now);
            self.admission.log_summaries(now);
            if drain_deadline.is_none() && self.shared.shutdown.load(Ordering::SeqCst) {
                info!("Shutting down: no longer accepting connections, finishing in-flight requests");
                if let Some(mut l) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut l);
                }
                drain_deadline = Some(Instant::now() + self.settings.shutdown_grace);
            }
            if let Some(deadline) = drain_deadline {
                let left = self.shared.in_flight.load(Ordering::SeqCst);
                let flushed = self.entries.values().all(|e| e.socket.queued_bytes() == 0);
                if left == 0 && flushed {
                    info!("All in-flight requests finished");
                    break;
                }
                if Instant::now() >= deadline {
                    warn!("Shutdown grace period over with {left} requests in flight; closing connections");
                    break;
                }
            }
        }
        let tokens: Vec<Token> = self.entries.keys().copied().collect();
        for t in tokens {
            self.close(t, None);
        }
        for w in &self.workers {
            let _ = w.send(ToWorker::Shutdown);
        }
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Typically EMFILE: leave the connection in the backlog and
                    // try again on the next readiness.
                    warn!("Cannot accept a connection: {e}");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        if self.admission.admit(peer, Instant::now(), &self.shared.metrics).is_err() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        let _ = stream.set_nodelay(true);
        let token = self.handle.next_token();
        if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            warn!("Cannot register connection from {peer}: {e}");
            self.admission.release(peer);
            return;
        }
        // `listen.security` TLS (clients handshake first), as last reloaded.
        let socket = match &self.shared.live.client_tls.get() {
            None => SharedSocket::new(stream, token, peer),
            Some(tls) => match SharedSocket::with_tls(stream, token, peer, |wire| TlsSession::accepted(tls.session()?, wire)) {
                Ok(s) => s,
                Err(e) => {
                    warn!("Cannot start TLS with {peer}: {e}");
                    self.admission.release(peer);
                    return;
                }
            },
        };
        let socket = Arc::new(socket.tally_queued_in(self.shared.queued_response_bytes.clone()));
        let worker = self.next_worker % self.workers.len();
        self.next_worker = self.next_worker.wrapping_add(1);
        let now = Instant::now();
        let must_handshake = self.settings.client_tls.is_some() || self.settings.client_sasl;
        let clocks = Clocks::new(now, must_handshake.then(|| now + self.settings.limits.handshake_timeout));
        let reader = FrameReader::new(self.settings.max_frame_bytes, MIN_REQUEST_FRAME);
        self.entries.insert(token, Entry::new(socket.clone(), reader, worker, Kind::Client, clocks));
        self.shared.metrics.connections_active.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        // Each connect and disconnect at debug; info gets a summary per interval.
        debug!("Client connected from {peer}");
        let _ = self.workers[worker].send(ToWorker::ClientOpened { conn: token, socket });
    }

    fn command(&mut self, cmd: ToLoop) {
        match cmd {
            ToLoop::AddUpstream { owner, worker, socket } => {
                let token = socket.token;
                // The socket is shared with the worker that writes to it, so
                // it is registered by file descriptor rather than by `&mut`.
                let mut source = mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&socket.stream));
                if let Err(e) = self.poll.registry().register(&mut source, token, Interest::READABLE | Interest::WRITABLE) {
                    warn!("Cannot register upstream connection to {}: {e}", socket.peer);
                    socket.shutdown();
                    let _ = self.workers[worker].send(ToWorker::UpstreamClosed {
                        conn: owner,
                        upstream: token,
                        reason: e.to_string(),
                        connected: false,
                    });
                    return;
                }
                if socket.is_tls() {
                    self.handshake_deadlines.push_back((Instant::now() + TLS_HANDSHAKE_TIMEOUT, token));
                }
                let reader = FrameReader::new(MAX_RESPONSE_FRAME, 4);
                let clocks = Clocks::new(Instant::now(), None);
                self.entries.insert(token, Entry::new(socket, reader, worker, Kind::Upstream { owner }, clocks));
                // Even if the client has left, its worker may still be
                // writing requests it received whole; its CloseUpstream,
                // sent after them on this same channel, closes the
                // connection once they are delivered.
                // Bytes may already be waiting: read them now, since the
                // edge that announced them came before registration.
                self.tls_ready(token);
            }
            ToLoop::CloseUpstream(token) => self.close_gracefully(token),
            ToLoop::CloseClient(token) => self.close(token, None),
            ToLoop::ResumeClient(token) => {
                if let Some(e) = self.entries.get(&token) {
                    e.socket.flow.resume();
                    self.read(token);
                }
            }
        }
    }

    /// Readiness of a TLS socket (or a new one): a handshake step until it
    /// is done, then both flush and read whatever the event was, since
    /// OpenSSL may need to write to read on (or the reverse). A plain
    /// socket is flushed and read.
    fn tls_ready(&mut self, token: Token) {
        let Some(entry) = self.entries.get(&token) else { return };
        match entry.socket.advance_handshake() {
            Err(reason) => return self.close(token, Some(reason)),
            Ok(Handshake::Waiting) => return,
            Ok(Handshake::JustDone) => {
                let (peer, principal) = (entry.socket.peer, entry.socket.principal());
                match (&entry.kind, principal) {
                    (Kind::Client, Some(p)) => debug!("TLS handshake with client {peer} done, principal {p}"),
                    (Kind::Client, None) => debug!("TLS handshake with client {peer} done"),
                    (Kind::Upstream { .. }, _) => debug!("TLS handshake with Kafka broker at {peer} done"),
                }
            }
            Ok(Handshake::Done) => {}
        }
        self.flush(token);
        self.read(token);
    }

    /// Close upstream TLS connections whose handshake is overdue.
    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, token)) = self.handshake_deadlines.front() {
            if deadline > now {
                return;
            }
            self.handshake_deadlines.pop_front();
            if self.entries.get(&token).is_some_and(|e| e.socket.is_handshaking()) {
                let why = format!("TLS handshake not done within {} s", TLS_HANDSHAKE_TIMEOUT.as_secs());
                self.close(token, Some(why));
            }
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(entry) = self.entries.get_mut(&token) else { return };
        match entry.socket.flush() {
            Err(e) => {
                let reason = format!("write failed: {e}");
                self.close(token, Some(reason));
            }
            // All written: a closing connection now tells the broker it is
            // done, and waits for the broker to close in turn.
            Ok(true) => {
                if let Some((_, shut @ false)) = &mut entry.closing {
                    *shut = true;
                    entry.socket.mark_closed();
                    let _ = entry.socket.stream.shutdown(std::net::Shutdown::Write);
                }
            }
            Ok(false) => {}
        }
    }

    /// Start closing an upstream connection without losing what was
    /// written to it.
    fn close_gracefully(&mut self, token: Token) {
        let Some(entry) = self.entries.get_mut(&token) else { return };
        if entry.closing.is_none() {
            entry.closing = Some((Instant::now(), false));
        }
        self.flush(token);
    }

    /// Force-close upstream connections whose graceful close takes too long.
    fn expire_closing(&mut self) {
        let now = Instant::now();
        let late: Vec<Token> = self
            .entries
            .iter()
            .filter(|(_, e)| e.closing.is_some_and(|(since, _)| now.duration_since(since) > GRACEFUL_CLOSE))
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.close(t, None);
        }
    }

    fn read(&mut self, token: Token) {
        loop {
            match self.read_some(token) {
                ReadOutcome::Drained => return,
                // The reader was full: its frames have been handed over, so
                // read on (the socket will not signal readiness again for
                // bytes already there).
                ReadOutcome::FramesWaiting => {}
                ReadOutcome::Closed(reason) => {
                    self.close(token, Some(reason));
                    return;
                }
            }
            let Some(entry) = self.entries.get(&token) else { return };
            if entry.socket.flow.is_paused() {
                return;
            }
        }
    }

    /// Read what the socket holds into the connection's reader (which
    /// bounds what it buffers), dispatching the frames that completed.
    fn read_some(&mut self, token: Token) -> ReadOutcome {
        let draining = self.listener.is_none();
        if let Some(Kind::Upstream { owner }) = self.entries.get(&token).map(|e| &e.kind) {
            if self.responses_backed_up(*owner) {
                if !self.response_waiting.contains(&token) {
                    self.response_waiting.push(token);
                }
                return ReadOutcome::Drained;
            }
        }
        let Some(entry) = self.entries.get_mut(&token) else { return ReadOutcome::Drained };
        let is_client = matches!(entry.kind, Kind::Client);
        // During shutdown clients get no new requests in; upstream answers
        // still flow so in-flight requests can finish.
        if is_client && (draining || entry.socket.flow.is_paused()) {
            return ReadOutcome::Drained;
        }
        let mut outcome = ReadOutcome::Drained;
        let mut arrived = false;
        loop {
            let mut source: &SharedSocket = &entry.socket;
            // Only client readers are charged: upstream answers are bounded
            // by what the clients asked for.
            let may_grow = if is_client { self.request_budget.allowance() } else { usize::MAX };
            let filled = entry.reader.fill_within(&mut source, may_grow);
            if is_client {
                self.request_budget.recharge(&mut entry.charged, entry.reader.allocated());
            }
            match filled {
                Ok(Filled::Bytes(_)) => arrived = true,
                Ok(Filled::OverBudget) => {
                    // Backpressure: read again once frames or connections
                    // release budget (`resume_waiting`).
                    self.request_budget.wait(token);
                    break;
                }
                Ok(Filled::FrameReady) => {
                    outcome = ReadOutcome::FramesWaiting;
                    break;
                }
                Ok(Filled::Eof) => {
                    outcome = ReadOutcome::Closed(peer_closed(entry));
                    break;
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    // A peer that resets is gone, like one that closes.
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        outcome = ReadOutcome::Closed(peer_closed(entry));
                        break;
                    }
                    _ => {
                        outcome = ReadOutcome::Closed(format!("read failed: {e}"));
                        break;
                    }
                },
            }
        }
        // Frames that arrived before a close still count.
        let (took_frames, failure) = self.dispatch_frames(token);
        if let Some(entry) = self.entries.get_mut(&token).filter(|_| is_client) {
            self.request_budget.recharge(&mut entry.charged, entry.reader.allocated());
            entry.clocks.after_read(Instant::now(), arrived, took_frames, entry.reader.buffered());
        }
        if let Some(reason) = failure {
            return ReadOutcome::Closed(reason);
        }
        outcome
    }

    /// Whether the response budget is spent and `client` has responses
    /// waiting to go out: then its upstream connections are not read.
    fn responses_backed_up(&self, client: Token) -> bool {
        let queued = self.shared.queued_response_bytes.load(Ordering::SeqCst);
        queued >= self.settings.limits.max_buffered_response_bytes
            && self.entries.get(&client).is_some_and(|c| c.socket.queued_bytes() > 0)
    }

    /// Read again the connections that stopped for a budget that has room now.
    fn resume_waiting(&mut self) {
        for token in self.request_budget.take_resumable() {
            self.read(token);
        }
        if self.response_waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.response_waiting);
        for token in waiting {
            // Reading puts the ones still backed up back on the list.
            self.read(token);
        }
    }

    /// Close client connections past a deadline (`limits::expired`).
    fn sweep_deadlines(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let sasl = self.settings.client_sasl;
        let mut expired = Vec::new();
        for (token, entry) in self.entries.iter_mut().filter(|(_, e)| matches!(e.kind, Kind::Client)) {
            let socket = &entry.socket;
            let activity = Activity {
                busy: socket.flow.in_flight() > 0 || socket.queued_bytes() > 0,
                paused_by_proxy: socket.flow.is_paused(),
                handshaking: socket.is_handshaking() || (sasl && !socket.is_authenticated()),
            };
            if let Some(reason) = limits::expired(&mut entry.clocks, &activity, &self.settings.limits, now) {
                expired.push((*token, reason));
            }
            // Quiet for a sweep: its read buffer goes back (the
            // per-connection constant of an idle connection stays small).
            if now.duration_since(entry.clocks.last_active) >= SWEEP_INTERVAL {
                entry.reader.release_idle_buffer();
            }
        }
        for (token, reason) in expired {
            let Some(entry) = self.entries.get(&token) else { continue };
            let limits = &self.settings.limits;
            let why = match reason {
                CloseReason::Idle => format!("idle for {} ms (listen.connections_max_idle_ms)", limits.connections_max_idle.as_millis()),
                CloseReason::FrameTimeout => format!(
                    "a request frame was not complete within {} ms (listen.frame_timeout_ms)",
                    limits.frame_timeout.as_millis()
                ),
                CloseReason::HandshakeTimeout => format!(
                    "TLS handshake or SASL authentication not done within {} ms (listen.handshake_timeout_ms)",
                    limits.handshake_timeout.as_millis()
                ),
            };
            debug!("Closing connection from {}: {why}", entry.socket.peer);
            self.shared.metrics.connections_closed.count(reason);
            self.close(token, None);
        }
    }

    /// Hand every complete buffered frame to the owning worker, all of them
    /// in one message: a worker that sees a burst whole can answer it with
    /// one write and send its produce requests upstream together. Returns
    /// why the connection must close, if it must.
    fn dispatch_frames(&mut self, token: Token) -> (bool, Option<String>) {
        let Some(entry) = self.entries.get_mut(&token) else { return (false, None) };
        let mut frames = Vec::new();
        let mut failure = None;
        loop {
            let is_client = matches!(entry.kind, Kind::Client);
            if is_client && entry.socket.flow.is_full(self.settings.max_in_flight_per_client) {
                break;
            }
            if !is_client {
                // A broker's answer must start with a plausible size: say
                // what came instead before it is taken for one.
                if let Some(why) = bad_size_prefix(entry.reader.unread(), MAX_RESPONSE_FRAME) {
                    failure = Some(why);
                    break;
                }
            }
            match entry.reader.next_frame() {
                Ok(Some(frame)) => {
                    if is_client {
                        entry.socket.flow.admit();
                        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
                    }
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    if let Kind::Client = entry.kind {
                        self.shared.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    // Frames that arrived before the bad one still count.
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if frames.is_empty() {
            return (false, failure);
        }
        let msg = match entry.kind {
            Kind::Client => ToWorker::ClientFrames { conn: token, frames },
            // Answers to a client that has left go nowhere.
            Kind::Upstream { .. } if entry.closing.is_some() => return (true, failure),
            Kind::Upstream { owner } => ToWorker::UpstreamFrames { conn: owner, upstream: token, frames },
        };
        if self.workers[entry.worker].send(msg).is_err() {
            return (true, Some("worker stopped".into()));
        }
        (true, failure)
    }

    /// Close a connection and tell its worker. `reason` is None when the
    /// close was asked for (by a worker or at shutdown).
    fn close(&mut self, token: Token, reason: Option<String>) {
        let Some(mut entry) = self.entries.remove(&token) else { return };
        self.request_budget.recharge(&mut entry.charged, 0);
        // Try to get already-queued responses out before the socket goes.
        let _ = entry.socket.flush();
        // Asked before the shutdown below, after which no socket has a
        // peer; a peer that sent bytes or closed was reached in any case.
        let connected = entry.socket.is_established() || entry.reader.buffered() > 0 || reason.as_deref() == Some(UPSTREAM_CLOSED);
        let mut source = mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&entry.socket.stream));
        let _ = self.poll.registry().deregister(&mut source);
        entry.socket.shutdown();
        let peer = entry.socket.peer;
        match entry.kind {
            Kind::Client => {
                self.admission.release(peer);
                self.shared.metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
                match &reason {
                    Some(r) if r == PEER_CLOSED => debug!("Client {peer} disconnected"),
                    Some(r) => self.admission.log_close_error(peer, r, Instant::now()),
                    None => debug!("Closed connection from {peer}"),
                }
                let _ = self.workers[entry.worker].send(ToWorker::ClientClosed { conn: token });
            }
            Kind::Upstream { owner } => {
                if let (Some(reason), None) = (reason, entry.closing) {
                    let _ = self.workers[entry.worker].send(ToWorker::UpstreamClosed {
                        conn: owner,
                        upstream: token,
                        reason,
                        connected,
                    });
                }
            }
        }
    }
}
