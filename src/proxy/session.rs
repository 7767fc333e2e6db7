//! One client connection as its worker sees it: the requests it sent, in
//! order, each waiting for its upstream answers; and the upstream
//! connections opened for it, one per broker address.
//!
//! Kafka answers the requests of a connection in the order they were sent,
//! and clients rely on it. A client request may go to several brokers (or to
//! none), so answers are collected per request and written to the client
//! only from the front of the queue.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Token;

use super::coalesce::{self, Held, Member, Outgoing};
use super::plan::{Finish, Part, PartFrame, Step};
use super::lookups::{Lookup, LookupJob, Needs};
use super::route::{coordinator_key, note_coordinator_answer, resolve, Route, Target};
use super::ProxyContext;
use crate::cluster::CoordinatorKind;
use crate::kafka::api::api_name;
use crate::kafka::header::peek_correlation_id;
use crate::net::socket::SharedSocket;
use crate::net::ToLoop;

/// Produce requests of one client a broker may be working on before the
/// proxy holds the next ones back to merge them (`Session::flush_held`).
const PRODUCE_REQUESTS_IN_FLIGHT: usize = 1;

const PRODUCE: i16 = crate::kafka::api::ApiKey::Produce as i16;

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

/// A request sent upstream whose answer has not arrived.
struct InFlight {
    seq: u64,
    part: usize,
    correlation_id: i32,
    api_key: i16,
    deadline: Instant,
    /// For produce parts sent merged: the version and the parts inside,
    /// whose answers are cut from this one.
    merged: Option<(i16, Vec<Member>)>,
    /// False for a request that gets no answer (produce with acks=0). It is
    /// remembered only to recognise a stray answer some Kafka-compatible
    /// brokers send anyway, which is dropped.
    expects_answer: bool,
    /// Set for requests to a coordinator, whose answer may say it moved.
    coordinator: Option<Coordinated>,
}

/// A request sent to a coordinator.
struct Coordinated {
    kind: CoordinatorKind,
    key: String,
    /// The request's version, to read the answer's error codes.
    version: i16,
    /// For the proxy's own requests to derived groups, which no client
    /// retries: what it takes to send it again.
    redo: Option<Redo>,
}

/// A request to a derived group's coordinator, kept to be sent again when
/// the coordinator moved, is loading, or its connection failed: the proxy
/// does for derived groups what Kafka's clients do for their own groups.
struct Redo {
    route: Route,
    frame: Vec<u8>,
    broker_wait: Duration,
    /// How many times it was sent before this one (0: first).
    attempt: u32,
}

/// A `Redo` waiting for its backoff.
struct DueRedo {
    due: Instant,
    seq: u64,
    part: usize,
    api_key: i16,
    redo: Redo,
}

/// Times a request to a derived group is sent again before its error goes
/// to the client as Kafka gave it; the waits before double from
/// `COORDINATOR_BACKOFF` (50, 100, 200, 400 ms), about as long as a
/// coordinator needs to move or load.
const COORDINATOR_RETRIES: u32 = 4;
const COORDINATOR_BACKOFF: Duration = Duration::from_millis(50);

/// Requests expecting no answer remembered per upstream connection, at
/// most: past that the oldest are forgotten (a broker that answers them
/// answers long before).
const UNANSWERED_REMEMBERED: usize = 1024;

pub struct Upstream {
    socket: Arc<SharedSocket>,
    addr: String,
    in_flight: VecDeque<InFlight>,
    /// Until the connection is known to be made: when it must be made by
    /// (`connection_timeout_ms`). Connects do not block the worker; the
    /// event loop completes them, and `check_deadlines` gives up on them.
    connecting_until: Option<Instant>,
}

/// Work of a client waiting for control look-ups (`lookups`), in the
/// order it came: nothing of that client overtakes it.
pub enum Deferred {
    /// A request frame to plan again once the look-ups are done.
    Frame { frame: Vec<u8>, round: u8 },
    /// Parts of a request (or of a later stage of it) to send once their
    /// coordinators or broker addresses are known.
    Send { seq: u64, api_key: i16, parts: Vec<(usize, Part)>, expect_response: bool, attempt: u32, round: u8 },
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
            next_correlation: 0x4b50_0000,
            redos: Vec::new(),
            deferred: VecDeque::new(),
            lookup_failures: Vec::new(),
        }
    }

    pub fn peer(&self) -> std::net::SocketAddr {
        self.client.peer
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.next_correlation
    }

    /// Any upstream address this session already has a connection to.
    pub fn some_upstream_addr(&self) -> Option<&str> {
        self.upstreams.keys().next().map(String::as_str)
    }

    /// Queue a response the proxy answers itself; `write_ready` writes it
    /// with the rest of the burst's answers.
    pub fn answer_now(&mut self, api_key: i16, api_version: i16, correlation_id: i32, response: Vec<u8>) {
        let seq = self.take_seq();
        self.pending.push_back(Pending {
            seq,
            api_key,
            api_version,
            correlation_id,
            answers: Vec::new(),
            missing: 0,
            finish: None,
            ready: Some(response),
        });
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
        let failures = self.lookup_failures.clone();
        let mut needs = Needs::new(&failures, round);
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
                        let held = Held { seq, part: i, correlation_id: part.correlation_id, frame, deadline };
                        self.held.push((addr.clone(), held));
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
                .socket
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
                    merged: None,
                    expects_answer: expect_response,
                    coordinator,
                });
            }
        }
        Ok(())
    }

    /// Send the held produce parts, merged where Kafka allows
    /// (`coalesce`), one write per broker. Unless `force`d, parts for a
    /// broker still answering this client's earlier produce requests wait
    /// for that answer: a broker works through one connection's requests
    /// one at a time, so they would wait there anyway, and meanwhile more
    /// of the client's requests join them. An idle broker gets a request at
    /// once; a busy one gets fewer, bigger requests.
    pub fn flush_held(&mut self, ctx: &ProxyContext, force: bool) -> Result<(), String> {
        let mut waiting = Vec::new();
        let mut failure = None;
        while !self.held.is_empty() {
            let addr = self.held[0].0.clone();
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|(a, _)| *a == addr);
            self.held = rest;
            let busy = self.upstreams.get(&addr).map_or(0, |up| {
                up.in_flight.iter().filter(|f| f.api_key == PRODUCE && f.expects_answer).count()
            });
            if !force && busy >= PRODUCE_REQUESTS_IN_FLIGHT {
                waiting.extend(mine);
                continue;
            }
            // A broker that cannot take its parts loses only those: the
            // others still go (or wait) as they would have.
            if let Err(e) = self.send_held(ctx, &addr, mine.into_iter().map(|(_, h)| h).collect()) {
                failure.get_or_insert(e);
            }
        }
        self.held = waiting;
        failure.map_or(Ok(()), Err)
    }

    /// Send one broker's held parts, merged (`coalesce`), in one write.
    fn send_held(&mut self, ctx: &ProxyContext, addr: &str, held: Vec<Held>) -> Result<(), String> {
        let outgoing = coalesce::coalesce(held, || self.next_correlation_id());
        let upstream = self.upstream(ctx, addr)?;
        let bodies: Vec<&[u8]> = outgoing
            .iter()
            .map(|o| match o {
                Outgoing::Single(h) => h.frame.as_slice(),
                Outgoing::Merged { frame, .. } => frame.as_slice(),
            })
            .collect();
        upstream.socket.send_frames(&bodies).map_err(|e| format!("cannot send Produce to Kafka broker {addr}: {e}"))?;
        let api_key = PRODUCE;
        let metrics = &ctx.shared.metrics;
        for o in outgoing {
            upstream.in_flight.push_back(match o {
                Outgoing::Single(h) => {
                    InFlight {
                        seq: h.seq,
                        part: h.part,
                        correlation_id: h.correlation_id,
                        api_key,
                        deadline: h.deadline,
                        merged: None,
                        expects_answer: true,
                        coordinator: None,
                    }
                }
                Outgoing::Merged { correlation_id, version, members, deadline, .. } => {
                    metrics.produce_requests_merged_total.fetch_add(members.len() as u64, Ordering::Relaxed);
                    metrics.produce_requests_merged_into_total.fetch_add(1, Ordering::Relaxed);
                    InFlight {
                        seq: 0,
                        part: 0,
                        correlation_id,
                        api_key,
                        deadline,
                        merged: Some((version, members)),
                        expects_answer: true,
                        coordinator: None,
                    }
                }
            });
        }
        Ok(())
    }

    /// The upstream connection to `addr`, opened if needed. The connect
    /// does not wait: requests written meanwhile are queued and go out
    /// when the event loop sees the connection made.
    fn upstream(&mut self, ctx: &ProxyContext, addr: &str) -> Result<&mut Upstream, String> {
        if !self.upstreams.contains_key(addr) {
            let unreachable = |e: &dyn std::fmt::Display| {
                ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
                warn!("Cannot connect to Kafka broker {addr} for client {}: {e}", self.client.peer);
                format!("Kafka broker {addr} is unreachable: {e}")
            };
            let peer = crate::upstream::connect::cached_address(addr).ok_or_else(|| unreachable(&"its address is not resolved"))?;
            let stream = crate::upstream::connect::start(addr, peer, &ctx.cluster).map_err(|e| unreachable(&e))?;
            let token = ctx.handle.next_token();
            let socket = Arc::new(SharedSocket::new(stream, token, peer));
            ctx.handle.send(ToLoop::AddUpstream { owner: self.conn, worker: self.worker, socket: socket.clone() });
            debug!("Connecting to Kafka broker {addr} for client {}", self.client.peer);
            self.by_token.insert(token, addr.to_string());
            let connecting_until = Some(Instant::now() + ctx.settings.connect_timeout);
            let upstream = Upstream { socket, addr: addr.to_string(), in_flight: VecDeque::new(), connecting_until };
            self.upstreams.insert(addr.to_string(), upstream);
        }
        Ok(self.upstreams.get_mut(addr).expect("inserted above"))
    }

    /// Park `work` until `lookups` are answered (`ToWorker` from the
    /// look-up threads: the worker calls `take_deferred` then).
    pub fn defer(&mut self, ctx: &ProxyContext, work: Deferred, lookups: Vec<Lookup>) {
        debug!("{}: waiting for look-ups {lookups:?}", self.client.peer);
        self.deferred.push_front(work);
        ctx.lookups.submit(LookupJob { worker: self.worker, conn: self.conn, lookups });
    }

    /// Whether the client's earlier work waits for look-ups.
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Park a client request behind work already waiting for look-ups.
    pub fn defer_frame(&mut self, frame: Vec<u8>) {
        self.deferred.push_back(Deferred::Frame { frame, round: 0 });
    }

    /// The work that waited for look-ups, now answered, to be handled in
    /// order: whatever of it must wait again goes back with `defer` (it is
    /// first then) and the rest with `requeue`.
    pub fn take_deferred(&mut self) -> VecDeque<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// Put back work behind what waits again.
    pub fn requeue(&mut self, rest: VecDeque<Deferred>) {
        self.deferred.extend(rest);
    }

    /// Send parts that waited for look-ups.
    pub fn send_deferred(&mut self, ctx: &ProxyContext, send: Deferred) -> Verdict {
        let seq = match &send {
            Deferred::Send { seq, .. } => *seq,
            Deferred::Frame { .. } => unreachable!("frames are planned by the worker"),
        };
        match self.send_indexed(ctx, send) {
            Ok(()) => Verdict::Continue,
            Err(reason) => {
                self.held.retain(|(_, h)| h.seq != seq);
                Verdict::Close(reason)
            }
        }
    }

    /// An answer arrived from upstream. Responses it completes are written
    /// by the caller's `write_ready`, once for all answers of a burst.
    pub fn on_upstream_frame(
        &mut self,
        ctx: &ProxyContext,
        upstream: Token,
        frame: Vec<u8>,
    ) -> Verdict {
        let Some(addr) = self.by_token.get(&upstream) else { return Verdict::Continue };
        let up = self.upstreams.get_mut(addr).expect("by_token and upstreams agree");
        up.connecting_until = None;
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
            return Verdict::Close(format!("Kafka broker {} sent a response to no request", up.addr));
        };
        match answered {
            Ok(id) if id == sent.correlation_id => {}
            other => {
                return Verdict::Close(format!(
                    "Kafka broker {} answered {} with correlation id {:?}, expected {}",
                    up.addr,
                    api_name(sent.api_key),
                    other.ok(),
                    sent.correlation_id
                ))
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
        let answers = match coalesce::split_response(&frame, version, &members) {
            Ok(a) => a,
            Err(e) => return Verdict::Close(format!("cannot read the answer to merged produce requests: {e}")),
        };
        for (m, answer) in members.iter().zip(answers) {
            if let Verdict::Close(reason) = self.deliver(ctx, m.seq, m.part, answer) {
                return Verdict::Close(reason);
            }
        }
        Verdict::Continue
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
        match finish.complete(ctx, api_key, version, p.correlation_id, answers) {
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
        let left = self.client.in_flight.fetch_sub(n, Ordering::SeqCst) - n;
        if self.client.read_paused.load(Ordering::SeqCst) && left <= ctx.settings.max_in_flight_per_client / 2 {
            ctx.handle.send(ToLoop::ResumeClient(self.conn));
        }
    }

    /// An upstream connection closed. Idle connections may close (brokers
    /// close idle connections); one with unanswered requests means those
    /// answers are lost, so the client connection is closed as a broker that
    /// went away would close it, and the client retries. Coordinators it
    /// was waiting for are looked up again next time; when all it was
    /// waiting for are the proxy's own requests to derived groups, those
    /// are sent again instead.
    pub fn on_upstream_closed(&mut self, ctx: &ProxyContext, upstream: Token, reason: &str) -> Verdict {
        let Some(addr) = self.by_token.remove(&upstream) else { return Verdict::Continue };
        let Some(up) = self.upstreams.remove(&addr) else { return Verdict::Continue };
        let never_connected = up.connecting_until.is_some() && up.socket.stream.peer_addr().is_err();
        if never_connected {
            ctx.cluster.mark_unreachable(&addr);
            ctx.shared.metrics.upstream_errors_total.fetch_add(1, Ordering::Relaxed);
            warn!("Cannot connect to Kafka broker {addr} for client {}: {reason}", self.client.peer);
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
        Verdict::Close(if never_connected {
            format!("Kafka broker {addr} is unreachable: {reason} ({waiting} requests waited for it)")
        } else {
            format!("lost connection to Kafka broker {addr} with {waiting} requests in flight ({reason})")
        })
    }

    /// Wait before sending a request to a derived group again; its
    /// coordinator is looked up again when it is sent (`resend_due`).
    fn schedule_redo(&mut self, seq: u64, part: usize, api_key: i16, mut redo: Redo, why: &str) {
        let wait = COORDINATOR_BACKOFF * 2u32.pow(redo.attempt);
        debug!("{} for {} of {} again in {wait:?} ({why})", api_name(api_key), self.client.peer, route_name(&redo.route));
        redo.attempt += 1;
        self.redos.push(DueRedo { due: Instant::now() + wait, seq, part, api_key, redo });
    }

    /// Send the requests to derived groups whose backoff is over.
    pub fn resend_due(&mut self, ctx: &ProxyContext, now: Instant) -> Verdict {
        if self.redos.iter().all(|r| r.due > now) {
            return Verdict::Continue;
        }
        let (due, later): (Vec<DueRedo>, Vec<DueRedo>) = std::mem::take(&mut self.redos).into_iter().partition(|r| r.due <= now);
        self.redos = later;
        for r in due {
            let Some(correlation_id) = r.redo.frame.get(4..8).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
                continue;
            };
            let part = Part { route: r.redo.route, frame: PartFrame::Owned(r.redo.frame), correlation_id, broker_wait: r.redo.broker_wait };
            let send =
                Deferred::Send { seq: r.seq, api_key: r.api_key, parts: vec![(r.part, part)], expect_response: true, attempt: r.redo.attempt, round: 0 };
            if let Err(reason) = self.send_indexed(ctx, send) {
                return Verdict::Close(reason);
            }
        }
        Verdict::Continue
    }

    /// Close the client if an upstream answer is overdue.
    pub fn check_deadlines(&mut self, ctx: &ProxyContext, now: Instant) -> Verdict {
        if let Some(verdict) = self.check_connects(ctx, now) {
            return verdict;
        }
        for up in self.upstreams.values() {
            if let Some(f) = up.in_flight.iter().find(|f| f.expects_answer) {
                if now >= f.deadline {
                    return Verdict::Close(format!(
                        "Kafka broker {} did not answer {} in time",
                        up.addr,
                        api_name(f.api_key)
                    ));
                }
            }
        }
        Verdict::Continue
    }

    /// Give up on a connect not made in `connection_timeout_ms`, as a
    /// failed blocking connect did: the broker is marked unreachable for a
    /// moment, and what waited for it fails (or, for derived groups, is
    /// sent again). `None` when no connect is overdue.
    fn check_connects(&mut self, ctx: &ProxyContext, now: Instant) -> Option<Verdict> {
        let mut overdue = None;
        for up in self.upstreams.values_mut() {
            match up.connecting_until {
                // Made (the socket has a peer): nothing more to watch.
                Some(_) if up.socket.stream.peer_addr().is_ok() => up.connecting_until = None,
                Some(until) if now >= until && overdue.is_none() => overdue = Some(up.socket.token),
                _ => {}
            }
        }
        let token = overdue?;
        ctx.handle.send(ToLoop::CloseUpstream(token));
        let reason = format!("no connection after {:?} (kafka.connection_timeout_ms)", ctx.settings.connect_timeout);
        Some(self.on_upstream_closed(ctx, token, &reason))
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
        let unanswered = self.client.in_flight.swap(0, Ordering::SeqCst);
        ctx.shared.in_flight.fetch_sub(unanswered, Ordering::SeqCst);
    }
}

/// How long to wait for an answer beyond the configured request timeout:
/// requests that ask the broker to wait (fetch max wait, join rebalance).
pub fn extra_wait(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Whether a part is one of the proxy's own requests to a derived group.
fn derived_group_part(part: &Part) -> bool {
    matches!(&part.route, Route::Group(g) if crate::remap::groups::parse_derived(g).is_some())
        && matches!(part.frame, PartFrame::Owned(_))
}

/// What to remember of a part sent to a coordinator (sent for the
/// `attempt`-th time).
fn coordinated(part: &Part, attempt: u32) -> Option<Coordinated> {
    let (kind, key) = coordinator_key(&part.route)?;
    let bytes = match &part.frame {
        PartFrame::Original => return None,
        frame => frame.bytes(),
    };
    let version = i16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    let redo = derived_group_part(part).then(|| Redo {
        route: part.route.clone(),
        frame: bytes.to_vec(),
        broker_wait: part.broker_wait,
        attempt,
    });
    Some(Coordinated { kind, key: key.to_string(), version, redo })
}

fn route_name(route: &Route) -> &str {
    coordinator_key(route).map_or("?", |(_, key)| key)
}
