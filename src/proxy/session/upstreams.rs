//! The upstream connections of one client, one per broker address: opened
//! without waiting (the event loop completes the connect, `check_connects`
//! bounds it by `connection_timeout_ms`), logged in when `kafka.sasl` asks
//! (`login`), answers matched to requests in order by correlation id,
//! deadlines, and what a lost connection costs.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, warn};
use mio::Token;

use super::coalesce::Member;
use super::super::route::note_coordinator_answer;
use super::super::ProxyContext;
use super::redo::{Coordinated, COORDINATOR_RETRIES};
use super::{Session, Verdict};
use crate::kafka::api::api_name;
use crate::kafka::header::peek_correlation_id;
use crate::net::socket::SharedSocket;
use crate::net::tls::TlsSession;
use crate::net::event_loop::UPSTREAM_CLOSED;
use crate::net::ToLoop;
use crate::upstream::misbehaviour::{broker_name, closed_without_answer, did_not_answer, wrong_correlation};

/// A request sent upstream whose answer has not arrived.
pub(super) struct InFlight {
    pub(super) seq: u64,
    pub(super) part: usize,
    pub(super) correlation_id: i32,
    pub(super) api_key: i16,
    pub(super) deadline: Instant,
    /// When it was sent: its deadline less this is the time it had.
    pub(super) sent_at: Instant,
    /// For produce parts sent merged: the version and the parts inside,
    /// whose answers are cut from this one.
    pub(super) merged: Option<(i16, Vec<Member>)>,
    /// False for a request that gets no answer (produce with acks=0). It is
    /// remembered only to recognise a stray answer some Kafka-compatible
    /// brokers send anyway, which is dropped.
    pub(super) expects_answer: bool,
    /// Set for requests to a coordinator, whose answer may say it moved.
    pub(super) coordinator: Option<Coordinated>,
}

/// Requests expecting no answer remembered per upstream connection, at
/// most: past that the oldest are forgotten (a broker that answers them
/// answers long before).
pub(super) const UNANSWERED_REMEMBERED: usize = 1024;

pub struct Upstream {
    pub(super) socket: Arc<SharedSocket>,
    pub(super) addr: String,
    pub(super) in_flight: VecDeque<InFlight>,
    /// Until the connection is known to be made: when it must be made by
    /// (`connection_timeout_ms`). Connects do not block the worker; the
    /// event loop completes them, and `check_deadlines` gives up on them.
    pub(super) connecting_until: Option<Instant>,
    /// The SASL login under way: frames wait in it (`login`).
    pub(super) login: Option<super::login::Login>,
    /// When the session of its last login must be renewed (KIP-368).
    pub(super) renew_at: Option<Instant>,
    /// Whether the broker answered anything on it yet.
    pub(super) answered: bool,
}

impl Session {
    /// The upstream connection to `addr`, opened if needed. The connect
    /// does not wait: requests written meanwhile are queued and go out
    /// when the event loop sees the connection made.
    pub(super) fn upstream(&mut self, ctx: &ProxyContext, addr: &str) -> Result<&mut Upstream, String> {
        if !self.upstreams.contains_key(addr) {
            // Said once, by the close of the client it costs.
            let unreachable = |e: &dyn std::fmt::Display| {
                ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
                format!("{} is unreachable: {e}", broker_name(&ctx.cluster, addr))
            };
            let peer = crate::upstream::connect::cached_address(addr).ok_or_else(|| unreachable(&"its address is not resolved"))?;
            let stream = crate::upstream::connect::start(addr, peer, &ctx.cluster).map_err(|e| unreachable(&e))?;
            let token = ctx.handle.next_token();
            let socket = match &ctx.shared.live.upstream_tls.get() {
                None => SharedSocket::new(stream, token, peer),
                Some(tls) => SharedSocket::with_tls(stream, token, peer, |wire| TlsSession::to_broker(tls.session(addr)?, wire, addr))
                    .map_err(|e| unreachable(&e))?,
            };
            let socket = Arc::new(socket);
            ctx.handle.send(ToLoop::AddUpstream { owner: self.conn, worker: self.worker, socket: socket.clone() });
            debug!("Connecting to Kafka broker {addr} for client {}", self.client.peer);
            self.by_token.insert(token, addr.to_string());
            let connecting_until = Some(Instant::now() + ctx.settings.connect_timeout);
            let upstream =
                Upstream {
                socket,
                addr: addr.to_string(),
                in_flight: VecDeque::new(),
                connecting_until,
                login: None,
                renew_at: None,
                answered: false,
            };
            self.upstreams.insert(addr.to_string(), upstream);
            if let Err(e) = self.begin_login(ctx, addr) {
                let up = self.upstreams.remove(addr).expect("inserted above");
                self.by_token.remove(&up.socket.token);
                ctx.handle.send(ToLoop::CloseUpstream(up.socket.token));
                warn!("{e}");
                return Err(e);
            }
        } else if self.upstreams[addr].login_expiring(Instant::now()) {
            self.begin_login(ctx, addr)?;
        }
        Ok(self.upstreams.get_mut(addr).expect("inserted above"))
    }

    /// An answer arrived from upstream. Responses it completes are written
    /// by the caller's `write_ready`, once for all answers of a burst.
    pub fn on_upstream_frame(
        &mut self,
        ctx: &ProxyContext,
        upstream: Token,
        frame: Vec<u8>,
    ) -> Verdict {
        let Some(addr) = self.by_token.get(&upstream).cloned() else { return Verdict::Continue };
        if let Some(verdict) = self.login_answer(ctx, upstream, &addr, &frame) {
            return verdict;
        }
        let up = self.upstreams.get_mut(&addr).expect("by_token and upstreams agree");
        up.connecting_until = None;
        if !up.answered {
            up.answered = true;
            ctx.cluster.mark_reachable(&addr);
        }
        let answered = peek_correlation_id(&frame);
        // Requests that expect no answer (acks=0) before the one answered:
        // Kafka answers none of them, some compatible brokers (Tansu) answer
        // each anyway, in order. Such an answer is dropped here; the ones
        // passed over were not answered and will not be.
        while up.in_flight.front().is_some_and(|f| !f.expects_answer) {
            let unanswered = up.in_flight.pop_front().expect("checked");
            if answered.as_ref().ok() == Some(&unanswered.correlation_id) {
                debug!(
                    "Dropped the answer of Kafka broker {} to a {} that expects none (acks=0)",
                    up.addr,
                    api_name(unanswered.api_key)
                );
                return Verdict::Continue;
            }
        }
        let Some(sent) = up.in_flight.pop_front() else {
            return self.misbehaved(ctx, &addr, "sent a response to no request".to_string());
        };
        match answered {
            Ok(id) if id == sent.correlation_id => {}
            other => {
                let what = wrong_correlation(other.ok(), sent.correlation_id, &api_name(sent.api_key));
                return self.misbehaved(ctx, &addr, what);
            }
        }
        let Some((version, members)) = sent.merged else {
            if let Some(c) = sent.coordinator {
                let code = note_coordinator_answer(&ctx.cluster, (c.kind, &c.key), sent.api_key, c.version, &frame);
                if let (Some(code), Some(redo)) = (code, c.redo) {
                    if redo.attempt < COORDINATOR_RETRIES {
                        let why = format!("error {code}");
                        self.schedule_redo(sent.seq, sent.part, sent.api_key, redo, &why);
                        return Verdict::Continue;
                    }
                    warn!(
                        "{} to {} still answered error {code} after {COORDINATOR_RETRIES} retries; the client gets it",
                        api_name(sent.api_key),
                        c.key
                    );
                }
            }
            return self.deliver(ctx, sent.seq, sent.part, frame);
        };
        self.deliver_merged(ctx, &frame, version, &members)
    }

    /// Broker `addr` misbehaved on this client's connection: the client is
    /// closed, as a broker that fails closes it (the connection to the
    /// broker goes with it), and new connections to that broker wait for
    /// the reconnect backoff.
    fn misbehaved(&self, ctx: &ProxyContext, addr: &str, what: String) -> Verdict {
        ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
        ctx.cluster.mark_unreachable(addr);
        Verdict::Close(format!("{} {what}", broker_name(&ctx.cluster, addr)))
    }

    /// An upstream connection closed. Idle connections may close (brokers
    /// close idle connections); one with unanswered requests means those
    /// answers are lost, so the client connection is closed as a broker that
    /// went away would close it, and the client retries. Coordinators it
    /// was waiting for are looked up again next time; when all it was
    /// waiting for are the proxy's own requests to derived groups, those
    /// are sent again instead.
    pub fn on_upstream_closed(&mut self, ctx: &ProxyContext, upstream: Token, reason: &str, connected: bool) -> Verdict {
        let Some(addr) = self.by_token.get(&upstream).cloned() else { return Verdict::Continue };
        let Some(up) = self.upstreams.get(&addr) else { return Verdict::Continue };
        if up.connecting_until.is_some() && !connected && !up.socket.is_established() {
            ctx.cluster.mark_unreachable(&addr);
            debug!("Cannot connect to Kafka broker {addr} for client {}: {reason}", self.client.peer);
            return self.upstream_lost(ctx, upstream, reason, true);
        }
        if let Some(why) = self.closed_during_login(&addr, reason) {
            return self.login_failed(ctx, upstream, &why);
        }
        self.upstream_lost(ctx, upstream, reason, false)
    }

    /// Forget a closed connection. With `unreachable` (it never connected,
    /// or could not log in), what waited for it fails as for a broker that
    /// cannot be reached.
    pub(super) fn upstream_lost(&mut self, ctx: &ProxyContext, upstream: Token, reason: &str, unreachable: bool) -> Verdict {
        let Some(addr) = self.by_token.remove(&upstream) else { return Verdict::Continue };
        let Some(up) = self.upstreams.remove(&addr) else { return Verdict::Continue };
        self.relay_ended(ctx, &addr, Err(reason.to_string()));
        if unreachable {
            ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
        }
        if up.in_flight.iter().all(|f| !f.expects_answer) {
            debug!("Idle upstream connection to {addr} closed: {reason}");
            return Verdict::Continue;
        }
        for c in up.in_flight.iter().filter_map(|f| f.coordinator.as_ref()) {
            ctx.cluster.forget_coordinator(c.kind, &c.key);
        }
        let waiting: Vec<&InFlight> = up.in_flight.iter().filter(|f| f.expects_answer).collect();
        let all_redo = waiting.iter().all(|f| {
            f.coordinator.as_ref().and_then(|c| c.redo.as_ref()).is_some_and(|r| r.attempt < COORDINATOR_RETRIES)
        });
        if all_redo {
            let why = format!("connection closed: {reason}");
            for f in up.in_flight.into_iter().filter(|f| f.expects_answer) {
                let redo = f.coordinator.and_then(|c| c.redo).expect("checked above");
                self.schedule_redo(f.seq, f.part, f.api_key, redo, &why);
            }
            return Verdict::Continue;
        }
        // Produce requests held for that broker are not sent elsewhere: the
        // client sees the connection close and retries them, as it would if
        // the broker had dropped them with the rest.
        self.held.retain(|(a, _)| *a != addr);
        let waiting = up.in_flight.iter().filter(|f| f.expects_answer).count();
        let name = broker_name(&ctx.cluster, &addr);
        if unreachable {
            return Verdict::Close(format!("{name} is unreachable: {reason} ({waiting} requests waited for it)"));
        }
        // What it left unanswered, or how it broke the connection.
        let what = match up.in_flight.iter().find(|f| f.expects_answer) {
            Some(first) if reason == UPSTREAM_CLOSED => closed_without_answer(&api_name(first.api_key), !up.answered),
            _ => reason.to_string(),
        };
        if reason != UPSTREAM_CLOSED {
            ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
        }
        ctx.cluster.mark_unreachable(&addr);
        Verdict::Close(format!("{name} {what} ({waiting} requests in flight)"))
    }

    /// Close the client if an upstream answer is overdue. Closing, rather
    /// than answering REQUEST_TIMED_OUT, is what a Kafka client does itself
    /// on a request timeout (NetworkClient disconnects from the node, so
    /// the answer can never arrive late on a reused connection), and most
    /// APIs have no error field to carry it; the client retries.
    pub fn check_deadlines(&mut self, ctx: &ProxyContext, now: Instant) -> Verdict {
        if let Some(verdict) = self.check_connects(ctx, now).or_else(|| self.check_logins(ctx, now)) {
            return verdict;
        }
        let overdue = self.upstreams.values().find_map(|up| {
            let f = up.in_flight.iter().find(|f| f.expects_answer && now >= f.deadline)?;
            let timeout = ctx.settings.request_timeout;
            let extra = f.deadline.saturating_duration_since(f.sent_at).saturating_sub(timeout);
            Some((up.addr.clone(), did_not_answer(&api_name(f.api_key), timeout, extra)))
        });
        match overdue {
            // The worker counts it as an upstream error.
            Some((addr, what)) => {
                ctx.cluster.mark_unreachable(&addr);
                Verdict::Close(format!("{} {what}", broker_name(&ctx.cluster, &addr)))
            }
            None => Verdict::Continue,
        }
    }

    /// Give up on a connect not made in `connection_timeout_ms`, as a
    /// failed blocking connect did: the broker is marked unreachable for a
    /// moment, and what waited for it fails (or, for derived groups, is
    /// sent again). `None` when no connect is overdue.
    pub(super) fn check_connects(&mut self, ctx: &ProxyContext, now: Instant) -> Option<Verdict> {
        let mut overdue = None;
        for up in self.upstreams.values_mut() {
            match up.connecting_until {
                // Made (the socket has a peer, and its TLS handshake is
                // done): nothing more to watch.
                Some(_) if up.socket.is_established() => up.connecting_until = None,
                Some(until) if now >= until && overdue.is_none() => overdue = Some(up.socket.token),
                _ => {}
            }
        }
        let token = overdue?;
        ctx.handle.send(ToLoop::CloseUpstream(token));
        let reason = format!("no connection after {:?} (kafka.connection_timeout_ms)", ctx.settings.connect_timeout);
        Some(self.on_upstream_closed(ctx, token, &reason, false))
    }
}
