//! A worker thread: owns the sessions of the client connections assigned to
//! it, so all frames of one connection are handled in order by one thread
//! with no locks on the session.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use log::warn;
use mio::Token;

use super::lookups::LookupsDone;
use super::session::{Deferred, Session, Verdict};
use super::{requests, ProxyContext};
use crate::kafka::api::ApiKey;
use crate::net::{ToLoop, ToWorker};

const DEADLINE_CHECK: Duration = Duration::from_millis(100);

/// Events handled at most before the bursts they brought are finished,
/// even when more are queued: bounds how long an answer or a held request
/// waits behind a busy worker's queue.
const EVENTS_PER_ROUND: usize = 64;

pub struct Worker {
    index: usize,
    ctx: Arc<ProxyContext>,
    sessions: HashMap<Token, Session>,
    /// Connections whose frames were handled but whose burst is not
    /// finished (`finish_burst`): finished once the queue is empty, so
    /// frames already queued behind a burst join it.
    unfinished: Vec<Token>,
    rx: Receiver<ToWorker>,
    /// Answers of the look-up threads to this worker's `LookupJob`s.
    lookups_done: Receiver<LookupsDone>,
}

impl Worker {
    pub fn new(index: usize, ctx: Arc<ProxyContext>, rx: Receiver<ToWorker>, lookups_done: Receiver<LookupsDone>) -> Worker {
        Worker { index, ctx, sessions: HashMap::new(), unfinished: Vec::new(), rx, lookups_done }
    }

    pub fn run(mut self) {
        let mut last_check = Instant::now();
        let mut handled = 0;
        loop {
            select! {
                recv(self.rx) -> event => match event {
                    Ok(ToWorker::Shutdown) | Err(_) => break,
                    Ok(event) => {
                        self.handle_guarded(event);
                        handled += 1;
                    }
                },
                recv(self.lookups_done) -> done => {
                    if let Ok(done) = done {
                        let conn = done.conn;
                        self.guarded(Some(conn), |w| w.lookups_done(done));
                        handled += 1;
                    }
                },
                default(DEADLINE_CHECK) => {}
            }
            if (self.rx.is_empty() && self.lookups_done.is_empty()) || handled >= EVENTS_PER_ROUND {
                self.finish_bursts();
                handled = 0;
            }
            if last_check.elapsed() >= DEADLINE_CHECK {
                last_check = Instant::now();
                self.check_deadlines(last_check);
            }
        }
        self.finish_bursts();
        for (_, s) in self.sessions.drain() {
            s.teardown(&self.ctx);
        }
    }

    fn finish_bursts(&mut self) {
        for conn in std::mem::take(&mut self.unfinished) {
            self.guarded(Some(conn), |w| w.finish_burst(conn));
        }
    }

    /// Run `f`; a bug that panics costs the connection it concerned, not
    /// every connection of this worker.
    fn guarded(&mut self, conn: Option<Token>, f: impl FnOnce(&mut Self)) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if result.is_err() {
            log::error!("Internal error while handling a request (see the panic message above); closing that connection");
            if let Some(conn) = conn {
                self.apply(conn, Verdict::Close("internal error".into()));
            }
        }
    }

    fn handle_guarded(&mut self, event: ToWorker) {
        let conn = match &event {
            ToWorker::ClientOpened { conn, .. }
            | ToWorker::ClientFrames { conn, .. }
            | ToWorker::ClientClosed { conn }
            | ToWorker::UpstreamFrames { conn, .. }
            | ToWorker::UpstreamClosed { conn, .. } => Some(*conn),
            ToWorker::Shutdown => None,
        };
        self.guarded(conn, |w| w.handle(event));
    }

    fn handle(&mut self, event: ToWorker) {
        match event {
            ToWorker::ClientOpened { conn, socket } => {
                self.sessions.insert(conn, Session::new(conn, self.index, socket));
            }
            ToWorker::ClientFrames { conn, frames } => {
                for frame in frames {
                    let verdict = self.client_frame(conn, frame);
                    self.apply(conn, verdict);
                }
                self.burst_unfinished(conn);
            }
            ToWorker::UpstreamFrames { conn, upstream, frames } => {
                let ctx = self.ctx.clone();
                for frame in frames {
                    let verdict = match self.sessions.get_mut(&conn) {
                        Some(s) if !s.closing => s.on_upstream_frame(&ctx, upstream, frame),
                        _ => Verdict::Continue,
                    };
                    self.apply(conn, verdict);
                }
                self.burst_unfinished(conn);
            }
            ToWorker::UpstreamClosed { conn, upstream, reason } => {
                let verdict = match self.sessions.get_mut(&conn) {
                    Some(s) => s.on_upstream_closed(&self.ctx, upstream, &reason),
                    None => Verdict::Continue,
                };
                self.apply(conn, verdict);
            }
            ToWorker::ClientClosed { conn } => match self.sessions.get_mut(&conn) {
                // Requests the client sent whole go upstream even though it
                // left, as Kafka handles them: those waiting for look-ups
                // too, so the session stays until they are sent.
                Some(s) if s.has_deferred() && !s.closing => s.client_gone = true,
                _ => self.teardown(conn),
            },
            ToWorker::Shutdown => {}
        }
    }

    fn client_frame(&mut self, conn: Token, frame: Vec<u8>) -> Verdict {
        let ctx = self.ctx.clone();
        let Some(session) = self.sessions.get_mut(&conn) else { return Verdict::Continue };
        if session.closing {
            return Verdict::Continue;
        }
        // After SaslHandshake v0 the frame is a bare SASL token, counted as
        // the SaslAuthenticate it stands for (as `requests::take` handles it).
        let api_key = if session.auth.expects_raw_token() {
            Some(ApiKey::SaslAuthenticate as i16)
        } else {
            frame.get(..2).map(|k| i16::from_be_bytes([k[0], k[1]]))
        };
        ctx.shared.metrics.requests.count(api_key);
        if session.has_deferred() {
            // Behind a request waiting for look-ups: Kafka handles a
            // connection's requests in order, and so does the proxy.
            session.defer_frame(frame);
            return Verdict::Continue;
        }
        self.plan_frame(conn, frame, 0)
    }

    /// Hand a client request (in look-up round `round`) to `requests`, which
    /// plans it and hands the plan to its session.
    fn plan_frame(&mut self, conn: Token, frame: Vec<u8>, round: u8) -> Verdict {
        let ctx = self.ctx.clone();
        let Some(session) = self.sessions.get_mut(&conn) else { return Verdict::Continue };
        requests::take(&ctx, session, frame, round)
    }

    /// Look-ups a connection waited for are answered: handle its parked
    /// work in order, until something must wait again.
    fn lookups_done(&mut self, done: LookupsDone) {
        let conn = done.conn;
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        if session.closing {
            if session.client_gone {
                self.teardown(conn);
            }
            return;
        }
        session.lookup_failures = done.failures;
        let mut queue = session.take_deferred();
        while let Some(work) = queue.pop_front() {
            let verdict = match work {
                Deferred::Frame { frame, round } => self.plan_frame(conn, frame, round),
                send @ Deferred::Send { .. } => match self.sessions.get_mut(&conn) {
                    Some(session) => session.send_deferred(&self.ctx, send),
                    None => return,
                },
            };
            let stop = verdict != Verdict::Continue;
            self.apply(conn, verdict);
            let Some(session) = self.sessions.get_mut(&conn) else { return };
            if stop || session.has_deferred() {
                session.requeue(queue);
                break;
            }
        }
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        session.lookup_failures.clear();
        if session.client_gone && (session.closing || !session.has_deferred()) {
            self.teardown(conn);
            return;
        }
        self.burst_unfinished(conn);
    }

    fn teardown(&mut self, conn: Token) {
        if let Some(s) = self.sessions.remove(&conn) {
            s.teardown(&self.ctx);
        }
    }

    fn burst_unfinished(&mut self, conn: Token) {
        if !self.unfinished.contains(&conn) {
            self.unfinished.push(conn);
        }
    }

    /// After a burst of frames: send the produce requests it held upstream
    /// (merged where they can be), and write the responses it completed in
    /// one go.
    fn finish_burst(&mut self, conn: Token) {
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        // Requests of the burst read before a close still go upstream, as
        // they would have one by one.
        let verdict = match session.flush_held(&self.ctx, false) {
            Ok(()) => Verdict::Continue,
            Err(reason) => Verdict::Close(reason),
        };
        session.write_ready(&self.ctx);
        self.apply(conn, verdict);
        self.release_refusal(conn, Instant::now());
    }

    /// Answer a refused login whose time has come, then close.
    fn release_refusal(&mut self, conn: Token, now: Instant) {
        let Some(session) = self.sessions.get_mut(&conn) else { return };
        if session.closing {
            return;
        }
        if let Some(reason) = session.refusal_due(now) {
            session.write_ready(&self.ctx);
            self.apply(conn, Verdict::Close(reason));
        }
    }

    fn apply(&mut self, conn: Token, verdict: Verdict) {
        if let Verdict::Close(reason) = verdict {
            if let Some(s) = self.sessions.get_mut(&conn) {
                if !s.closing {
                    s.closing = true;
                    warn!("Closing connection from {}: {reason}", s.peer());
                    self.ctx.shared.metrics.requests_refused_total.fetch_add(1, Ordering::Relaxed);
                    self.ctx.handle.send(ToLoop::CloseClient(conn));
                }
            }
        }
    }

    fn check_deadlines(&mut self, now: Instant) {
        let ctx = self.ctx.clone();
        let overdue: Vec<(Token, Verdict)> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| !s.closing)
            .map(|(t, s)| (*t, s.check_deadlines(&ctx, now)))
            .filter(|(_, v)| *v != Verdict::Continue)
            .collect();
        for (conn, verdict) in overdue {
            self.ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
            self.apply(conn, verdict);
        }
        let mut failed = Vec::new();
        for (conn, session) in self.sessions.iter_mut().filter(|(_, s)| !s.closing) {
            let verdict = session.resend_due(&ctx, now);
            if verdict != Verdict::Continue {
                failed.push((*conn, verdict));
            }
        }
        for (conn, verdict) in failed {
            self.apply(conn, verdict);
        }
        let conns: Vec<Token> = self.sessions.keys().copied().collect();
        for conn in conns {
            self.release_refusal(conn, now);
        }
    }
}
