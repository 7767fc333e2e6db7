//! The SASL login of a client's upstream connections (`kafka.sasl`), run
//! without blocking the worker: the session writes the login's requests
//! itself as soon as the connection is opened, and each answer arrives as
//! an upstream frame like any other, told apart by its correlation id.
//! Frames for that broker written meanwhile wait, in order, and go out when
//! the login succeeds. Connect and login together are bounded by
//! `connection_timeout_ms` (`check_logins`).
//!
//! A failed login is logged once per broker (`SASL authentication failed:
//! <the broker's message>`) until a login there succeeds again; the broker
//! is marked unreachable for a moment and what waited for it fails as when
//! it cannot be reached.
//!
//! KIP-368: when the broker limits the session (`session_lifetime_ms`),
//! the connection logs in again on itself once 85% of it has passed, the
//! next time something is sent on it: a new SaslHandshake, as Kafka's own
//! clients re-authenticate. Answers to requests already on the way still
//! come first (the broker answers in order); later frames wait for the new
//! login. A connection idle past its session's end does the same, since
//! Kafka accepts a SaslHandshake after expiry (SocketServer only closes an
//! expired connection on any other request).

use std::collections::HashSet;
use std::io;
use std::sync::LazyLock;
use std::time::Instant;

use log::{info, warn};
use mio::Token;
use parking_lot::Mutex;

use super::super::plan::CorrelationIds;
use super::super::ProxyContext;
use super::upstreams::Upstream;
use super::{Session, Verdict};
use crate::kafka::header::peek_correlation_id;
use crate::net::ToLoop;
use crate::upstream::sasl::{reauthenticate_after, SaslError, SaslExchange, SaslStep, SaslVersions};

/// Brokers whose last login failed and was logged: logged once, not per
/// connection.
static FAILING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// A login under way on one upstream connection.
pub(super) struct Login {
    exchange: SaslExchange,
    /// Of the login request whose answer comes next.
    correlation_id: i32,
    /// Given up then (`connection_timeout_ms` after it began).
    until: Instant,
    /// Frames written to this broker meanwhile, sent when it succeeds.
    waiting: Vec<Vec<u8>>,
}

impl Upstream {
    /// Send frames now, or once the login under way has succeeded.
    pub(super) fn send_frames(&mut self, bodies: &[&[u8]]) -> io::Result<()> {
        match &mut self.login {
            Some(login) => {
                login.waiting.extend(bodies.iter().map(|b| b.to_vec()));
                Ok(())
            }
            None => self.socket.send_frames(bodies),
        }
    }

    /// Whether the session of its last login is nearly over (KIP-368).
    pub(super) fn login_expiring(&self, now: Instant) -> bool {
        self.login.is_none() && self.renew_at.is_some_and(|at| now >= at)
    }
}

impl Session {
    /// Begin a login on the connection to `addr` when `kafka.sasl` asks
    /// for one (a new connection, or one whose session is nearly over).
    pub(super) fn begin_login(&mut self, ctx: &ProxyContext, addr: &str) -> Result<(), String> {
        let Some(sasl) = self.upstream_identity(ctx)? else { return Ok(()) };
        let versions = SaslVersions::choose(|api| ctx.cluster.upstream_versions(api))
            .map_err(|e| format!("{e} (Kafka broker {addr})"))?;
        let (exchange, request) = SaslExchange::start(&sasl, ctx.settings.kafka_security.bearer_token.clone(), versions);
        let correlation_id = self.next_correlation_id();
        let up = self.upstreams.get_mut(addr).expect("the connection exists");
        up.socket
            .send_frame(&request.encode(correlation_id))
            .map_err(|e| format!("cannot send SaslHandshake to Kafka broker {addr}: {e}"))?;
        let until = Instant::now() + ctx.settings.connect_timeout;
        up.login = Some(Login { exchange, correlation_id, until, waiting: Vec::new() });
        Ok(())
    }

    /// Take `frame` if it answers the login under way on `upstream`;
    /// `None` when it is an answer to something else.
    pub(super) fn login_answer(&mut self, ctx: &ProxyContext, upstream: Token, addr: &str, frame: &[u8]) -> Option<Verdict> {
        let expected = self.upstreams.get(addr)?.login.as_ref()?.correlation_id;
        if peek_correlation_id(frame).ok() != Some(expected) {
            return None;
        }
        let next_id = self.next_correlation_id();
        let up = self.upstreams.get_mut(addr).expect("checked above");
        let login = up.login.as_mut().expect("checked above");
        let failure = match login.exchange.on_answer(frame) {
            Ok(SaslStep::Send(request)) => {
                login.correlation_id = next_id;
                match up.socket.send_frame(&request.encode(next_id)) {
                    Ok(()) => return Some(Verdict::Continue),
                    Err(e) => format!("cannot send SaslAuthenticate to Kafka broker {addr}: {e}"),
                }
            }
            Ok(SaslStep::Done { session_lifetime }) => {
                let login = up.login.take().expect("checked above");
                up.renew_at = session_lifetime.map(|lifetime| Instant::now() + reauthenticate_after(lifetime));
                if FAILING.lock().remove(addr) {
                    info!("SASL authentication to Kafka broker {addr} succeeds again");
                }
                let waiting: Vec<&[u8]> = login.waiting.iter().map(Vec::as_slice).collect();
                match up.socket.send_frames(&waiting) {
                    Ok(()) => {
                        self.relay_ended(ctx, addr, Ok(()));
                        return Some(Verdict::Continue);
                    }
                    Err(e) => format!("cannot send to Kafka broker {addr}: {e}"),
                }
            }
            Err(e) => e.to_string(),
        };
        Some(self.login_failed(ctx, upstream, &failure))
    }

    /// The login on `upstream` failed: logged once per broker, the broker
    /// marked unreachable, the connection closed, and what waited for it
    /// fails as for a broker that cannot be reached. A client's own login
    /// (passthrough) says nothing about the broker: it fails that client
    /// only (a relayed login is answered in `upstream_lost`).
    pub(super) fn login_failed(&mut self, ctx: &ProxyContext, upstream: Token, reason: &str) -> Verdict {
        let Some(addr) = self.by_token.get(&upstream).cloned() else { return Verdict::Continue };
        if self.logs_in_as_client(ctx) {
            info!("{reason} (Kafka broker {addr}, logging in client {} as itself)", self.peer());
        } else {
            if FAILING.lock().insert(addr.clone()) {
                warn!("{reason} (Kafka broker {addr})");
            }
            ctx.cluster.mark_unreachable(&addr);
        }
        ctx.handle.send(ToLoop::CloseUpstream(upstream));
        self.upstream_lost(ctx, upstream, reason, true)
    }

    /// The reason a connection closed while its login was under way, in
    /// the login's words; `None` when no login was.
    pub(super) fn closed_during_login(&self, addr: &str, reason: &str) -> Option<String> {
        let login = self.upstreams.get(addr)?.login.as_ref()?;
        let why = if login.exchange.at_handshake() {
            SaslError::HandshakeClosed { mechanism: login.exchange.mechanism() }.to_string()
        } else {
            format!("SASL authentication failed: the broker closed the connection during the login ({reason})")
        };
        Some(why)
    }

    /// The first login overdue (`connection_timeout_ms`), failed.
    pub(super) fn check_logins(&mut self, ctx: &ProxyContext, now: Instant) -> Option<Verdict> {
        let token = self.upstreams.values().find(|up| up.login.as_ref().is_some_and(|l| now >= l.until))?.socket.token;
        let reason =
            format!("SASL authentication failed: no answer within {:?} (kafka.connection_timeout_ms)", ctx.settings.connect_timeout);
        Some(self.login_failed(ctx, token, &reason))
    }
}
