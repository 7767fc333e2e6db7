//! One client connection as its worker sees it: the requests it sent, in
//! order, each waiting for its upstream answers; and the upstream
//! connections opened for it, one per broker address.
//!
//! Kafka answers the requests of a connection in the order they were sent,
//! and clients rely on it. A client request may go to several brokers (or to
//! none), so answers are collected per request and written to the client
//! only from the front of the queue.
//!
//! This file keeps the order (`Pending`, `forward`, `deliver`, `complete`,
//! `write_ready`); `upstreams` the connections to brokers and the matching
//! of answers, `login` their SASL login, `hold` the held produce requests
//! (merged and cut apart with `coalesce`), `redo` the proxy's own retries
//! to derived groups, `deferred` the work waiting for look-ups, `refusal`
//! the answer to a refused login, held back before the close.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use mio::Token;

use super::plan::{set_correlation_id, CorrelationIds, Finish, Part, PartFrame, RewriteFn, Step};
use super::lookups::{Lookup, Needs};
use super::route::{coordinator_key, resolve, Target};
use super::ProxyContext;
use crate::kafka::api::api_name;
use crate::kafka::message::{decode_response, encode_response};
use crate::net::socket::SharedSocket;
use crate::net::ToLoop;

const PRODUCE: i16 = crate::kafka::api::ApiKey::Produce as i16;

mod coalesce;
mod deferred;
mod hold;
mod login;
mod passthrough;
mod redo;
mod refusal;
mod upstreams;

use coalesce::Held;
pub use deferred::Deferred;
pub use upstreams::Upstream;
use redo::{coordinated, derived_group_part, DueRedo, Redo, COORDINATOR_RETRIES};
use upstreams::{InFlight, UNANSWERED_REMEMBERED};

/// A client request waiting for its answers.
struct Pending {
    seq: u64,
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    answers: Vec<Option<Vec<u8>>>,
    missing: usize,
    finish: Option<Finish>,
    /// The response to write, once complete.
    ready: Option<Vec<u8>>,
}

/// What the worker must do after the session handled an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Close the client connection, saying why.
    Close(String),
}

pub struct Session {
    pub conn: Token,
    /// The worker that owns this session (and its upstream connections).
    pub worker: usize,
    pub client: Arc<SharedSocket>,
    pending: VecDeque<Pending>,
    next_seq: u64,
    upstreams: HashMap<String, Upstream>,
    by_token: HashMap<Token, String>,
    /// Produce parts of the client burst being handled, per broker address
    /// in the order they were made: sent together by `flush_held`.
    held: Vec<(String, Held)>,
    /// Where this connection's last fetch went: an incremental fetch that
    /// names no partition belongs to the fetch session on that broker.
    pub last_fetch_addr: Option<String>,
    /// A close was asked for; events still queued for it are ignored.
    pub closing: bool,
    /// The client closed while requests of its waited for look-ups: they
    /// are still sent, then the session is torn down.
    pub client_gone: bool,
    /// Correlation ids of requests the proxy builds itself. Answers are
    /// matched by order on each upstream connection, so these only need to
    /// differ from their neighbours to catch a confused broker.
    next_correlation: i32,
    /// Requests to derived groups waiting to be sent again (`resend_due`).
    redos: Vec<DueRedo>,
    /// Work waiting for look-ups, oldest first; while there is any, the
    /// client's later requests wait behind it.
    deferred: VecDeque<Deferred>,
    /// What the last look-ups could not learn: plans made again after them
    /// go on without it rather than asking again.
    pub lookup_failures: Vec<(Lookup, String)>,
    /// Where the client is with SASL (when clients authenticate).
    pub auth: crate::proxy::apis::sasl::ClientAuth,
    /// A refused login waiting to be answered (`refusal`).
    refusal: Option<refusal::Refusal>,
    /// A client login relayed to a broker, waiting for it (`passthrough`).
    relay: Option<passthrough::Relay>,
}

impl CorrelationIds for Session {
    fn next_correlation_id(&mut self) -> i32 {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.next_correlation
    }
}

impl Session {
    pub fn new(conn: Token, worker: usize, client: Arc<SharedSocket>) -> Session {
        Session {
            conn,
            worker,
            client,
            pending: VecDeque::new(),
            next_seq: 0,
            upstreams: HashMap::new(),
            by_token: HashMap::new(),
            held: Vec::new(),
            last_fetch_addr: None,
            closing: false,
            client_gone: false,
            next_correlation: 0x4b50_0000,
            redos: Vec::new(),
            deferred: VecDeque::new(),
            lookup_failures: Vec::new(),
            auth: Default::default(),
            refusal: None,
            relay: None,
        }
    }

    pub fn peer(&self) -> std::net::SocketAddr {
        self.client.peer
    }


    /// Any upstream address this session already has a connection to.
    pub fn some_upstream_addr(&self) -> Option<&str> {
        self.upstreams.keys().next().map(String::as_str)
    }

    /// Queue a response the proxy answers itself; `write_ready` writes it
    /// with the rest of the burst's answers.
    pub fn answer_now(&mut self, api_key: i16, api_version: i16, correlation_id: i32, response: Vec<u8>) {
        self.wait_for_answer(api_key, api_version, correlation_id);
        self.pending.back_mut().expect("just queued").ready = Some(response);
    }

    /// A request that gets no response (produce with acks=0): it is done
    /// as soon as it is sent.
    pub fn complete_without_response(&mut self, ctx: &ProxyContext) {
        self.request_done(ctx, 1);
    }

    fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Send the parts of a request upstream and remember what to do with
    /// the answers.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        ctx: &ProxyContext,
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
        parts: Vec<Part>,
        expect_response: bool,
        finish: Finish,
    ) -> Verdict {
        let seq = self.take_seq();
        let n = parts.len();
        if let Err(reason) = self.send_parts(ctx, seq, api_key, parts, expect_response) {
            // Not half of it: the client sees the connection close and
            // sends the whole request again.
            self.held.retain(|(_, h)| h.seq != seq);
            return Verdict::Close(reason);
        }
        if !expect_response {
            self.complete_without_response(ctx);
            return Verdict::Continue;
        }
        self.pending.push_back(Pending {
            seq,
            api_key,
            api_version,
            correlation_id,
            answers: vec![None; n],
            missing: n,
            finish: Some(finish),
            ready: None,
        });
        Verdict::Continue
    }

    /// Resolve each part's route and write it to that broker's connection.
    /// The parts bound for one broker go out in one write, in order.
    /// Produce parts the proxy built are held instead, to go upstream with
    /// the rest of the client's burst (`flush_held`); anything else first
    /// sends what is held, so nothing overtakes it.
    fn send_parts(&mut self, ctx: &ProxyContext, seq: u64, api_key: i16, parts: Vec<Part>, expect_response: bool) -> Result<(), String> {
        let parts = parts.into_iter().enumerate().collect();
        self.send_indexed(ctx, Deferred::Send { seq, api_key, parts, expect_response, attempt: 0, round: 0 })
    }

    /// `send_parts` for parts given with their index in the request; sent
    /// for the `attempt`-th time (a `Redo` is sent again with its own), in
    /// look-up round `round`. Parts whose coordinator or broker address is
    /// not known yet wait, with everything after them, for their look-ups.
    fn send_indexed(&mut self, ctx: &ProxyContext, send: Deferred) -> Result<(), String> {
        let Deferred::Send { seq, api_key, parts, expect_response, attempt, round } = send else {
            unreachable!("only sends are sent")
        };
        if !self.deferred.is_empty() {
            self.deferred.push_back(Deferred::Send { seq, api_key, parts, expect_response, attempt, round });
            return Ok(());
        }
        let mut needs = Needs::new(&self.lookup_failures, round);
        let mut addrs = Vec::with_capacity(parts.len());
        for (i, part) in &parts {
            let preferred = self.some_upstream_addr().map(str::to_string);
            match resolve(&part.route, &ctx.cluster, &mut needs, preferred.as_deref(), *i) {
                Target::Addr(addr) => {
                    if !self.upstreams.contains_key(&addr) && crate::upstream::connect::cached_address(&addr).is_none() {
                        needs
                            .ask(Lookup::Address(addr.clone()))
                            .map_err(|why| format!("cannot resolve the address of Kafka broker {addr}: {why}"))?;
                    }
                    addrs.push(addr);
                }
                Target::LookUpFirst => addrs.push(String::new()),
                Target::Nowhere => return Err("no Kafka broker address is known".to_string()),
            }
        }
        if !needs.is_empty() {
            let lookups = needs.take();
            self.defer(ctx, Deferred::Send { seq, api_key, parts, expect_response, attempt, round: round + 1 }, lookups);
            return Ok(());
        }
        let mut by_addr: Vec<(String, Vec<(usize, Part)>)> = Vec::new();
        for ((i, part), addr) in parts.into_iter().zip(addrs) {
            debug!("{} {} -> {addr} ({:?})", self.client.peer, api_name(api_key), part.route);
            if api_key == crate::kafka::api::ApiKey::Fetch as i16 {
                self.last_fetch_addr = Some(addr.clone());
            }
            match by_addr.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, ps)) => ps.push((i, part)),
                None => by_addr.push((addr, vec![(i, part)])),
            }
        }
        let holdable = api_key == PRODUCE && expect_response;
        for (addr, parts) in by_addr {
            // Open the connection now: a broker that cannot be reached fails
            // the request that needed it.
            if let Err(reason) = self.upstream(ctx, &addr) {
                // A coordinator that cannot be reached is looked up again
                // next time, as Kafka's clients do after a disconnect.
                for (_, part) in &parts {
                    if let Some((kind, key)) = coordinator_key(&part.route) {
                        ctx.cluster.forget_coordinator(kind, key);
                    }
                }
                let all_redo = parts.iter().all(|(_, p)| derived_group_part(p));
                if !(expect_response && all_redo && attempt < COORDINATOR_RETRIES) {
                    return Err(reason);
                }
                for (i, part) in parts {
                    let redo = Redo { route: part.route, frame: part.frame.bytes().to_vec(), broker_wait: part.broker_wait, attempt };
                    self.schedule_redo(seq, i, api_key, redo, &reason);
                }
                continue;
            }
            let mut direct = Vec::new();
            for (i, part) in parts {
                let deadline = Instant::now() + ctx.settings.request_timeout + part.broker_wait;
                let coordinator = expect_response.then(|| coordinated(&part, attempt)).flatten();
                match part.frame {
                    PartFrame::Owned(frame) if holdable => {
                        self.hold(&addr, Held { seq, part: i, correlation_id: part.correlation_id, frame, deadline });
                    }
                    frame => direct.push((i, part.correlation_id, frame, deadline, coordinator)),
                }
            }
            if direct.is_empty() {
                continue;
            }
            self.flush_held(ctx, true)?;
            let upstream = self.upstream(ctx, &addr)?;
            let bodies: Vec<&[u8]> = direct.iter().map(|(_, _, f, _, _)| f.bytes()).collect();
            upstream
                .send_frames(&bodies)
                .map_err(|e| format!("cannot send {} to Kafka broker {addr}: {e}", api_name(api_key)))?;
            if !expect_response {
                // Kafka never answers these (KafkaApis.handleProduceRequest
                // with acks=0); forget those whose answer is overdue.
                let now = Instant::now();
                while upstream.in_flight.front().is_some_and(|f| {
                    !f.expects_answer && (f.deadline <= now || upstream.in_flight.len() >= UNANSWERED_REMEMBERED)
                }) {
                    upstream.in_flight.pop_front();
                }
            }
            for (part, correlation_id, _, deadline, coordinator) in direct {
                upstream.in_flight.push_back(InFlight {
                    seq,
                    part,
                    correlation_id,
                    api_key,
                    deadline,
                    sent_at: Instant::now(),
                    merged: None,
                    expects_answer: expect_response,
                    coordinator,
                });
            }
        }
        Ok(())
    }

    /// The answer to part `part` of request `seq`: when it is the last one
    /// missing, build the client's response (or send the next stage).
    fn deliver(&mut self, ctx: &ProxyContext, seq: u64, part: usize, frame: Vec<u8>) -> Verdict {
        let Some(p) = self.pending.iter_mut().find(|p| p.seq == seq) else { return Verdict::Continue };
        p.answers[part] = Some(frame);
        p.missing -= 1;
        if p.missing > 0 {
            return Verdict::Continue;
        }
        let answers: Vec<Vec<u8>> = p.answers.drain(..).map(|a| a.expect("all answered")).collect();
        let finish = p.finish.take().expect("finished once");
        let (seq, api_key, version) = (p.seq, p.api_key, p.api_version);
        match complete(finish, ctx, api_key, version, p.correlation_id, answers) {
            Ok(Step::Done(response)) => p.ready = Some(response),
            Ok(Step::More { parts, finish }) => {
                p.answers = vec![None; parts.len()];
                p.missing = parts.len();
                p.finish = Some(finish);
                if let Err(reason) = self.send_parts(ctx, seq, api_key, parts, true) {
                    return Verdict::Close(reason);
                }
            }
            Err(e) => return Verdict::Close(format!("cannot build the {} v{version} response: {e}", api_name(api_key))),
        }
        Verdict::Continue
    }

    /// Write every finished response at the front of the queue, together.
    pub fn write_ready(&mut self, ctx: &ProxyContext) {
        let ready = self.pending.iter().take_while(|p| p.ready.is_some()).count();
        if ready == 0 {
            return;
        }
        let responses: Vec<Vec<u8>> = self.pending.drain(..ready).map(|p| p.ready.expect("checked ready")).collect();
        let bodies: Vec<&[u8]> = responses.iter().map(Vec::as_slice).collect();
        if let Err(e) = self.client.send_frames(&bodies) {
            debug!("Responses to {} not delivered: {e}", self.client.peer);
        }
        self.request_done(ctx, ready);
    }

    fn request_done(&self, ctx: &ProxyContext, n: usize) {
        ctx.shared.in_flight.fetch_sub(n, Ordering::SeqCst);
        if self.client.flow.answered(n, ctx.settings.max_in_flight_per_client / 2) {
            ctx.handle.send(ToLoop::ResumeClient(self.conn));
        }
    }

    /// Release everything: upstream connections closed, in-flight counts
    /// returned.
    pub fn teardown(mut self, ctx: &ProxyContext) {
        // Requests the client sent whole go upstream even though it left.
        if let Err(e) = self.flush_held(ctx, true) {
            debug!("Produce requests of {} not delivered: {e}", self.client.peer);
        }
        for up in self.upstreams.values() {
            ctx.handle.send(ToLoop::CloseUpstream(up.socket.token));
        }
        let unanswered = self.client.flow.forget_all();
        ctx.shared.in_flight.fetch_sub(unanswered, Ordering::SeqCst);
    }
}

/// Build the client's response to a request (or its next stage) from its
/// answers, as its handler's `Finish` says: the function the handler wrote
/// is called here, directly, and returns the response.
pub fn complete(
    finish: Finish,
    ctx: &ProxyContext,
    api_key: i16,
    version: i16,
    correlation_id: i32,
    mut answers: Vec<Vec<u8>>,
) -> Result<Step, String> {
    match finish {
        Finish::AsIs => {
            let mut answer = answers.pop().ok_or("no answer")?;
            set_correlation_id(&mut answer, correlation_id);
            Ok(Step::Done(answer))
        }
        Finish::Rewrite(f) => {
            let answer = answers.pop().ok_or("no answer")?;
            rewrite_response(ctx, api_key, version, correlation_id, answer, f).map(Step::Done)
        }
        Finish::Merge(f) => f(ctx, version, correlation_id, answers).map(Step::Done),
        Finish::Then(f) => f(ctx, version, correlation_id, answers),
    }
}

/// A single answer decoded and rewritten by the handler's `f`; forwarded as
/// the bytes that came when `f` changed nothing.
fn rewrite_response(
    ctx: &ProxyContext,
    api_key: i16,
    version: i16,
    correlation_id: i32,
    mut answer: Vec<u8>,
    f: RewriteFn,
) -> Result<Vec<u8>, String> {
    let rebuilt = {
        let mut decoded = decode_response(api_key, version, &answer)?;
        if f(ctx, version, &mut decoded.body)? {
            Some(encode_response(api_key, version, correlation_id, &decoded.header_tags, &decoded.body).map_err(|e| e.to_string())?)
        } else {
            None
        }
    };
    Ok(match rebuilt {
        Some(bytes) => bytes,
        None => {
            set_correlation_id(&mut answer, correlation_id);
            answer
        }
    })
}

/// How long to wait for an answer beyond the configured request timeout:
/// requests that ask the broker to wait (fetch max wait, join rebalance).
pub fn extra_wait(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

