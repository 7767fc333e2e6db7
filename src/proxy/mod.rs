//! The proxy's threads: the event loop (main thread), a fixed pool of
//! workers, the metadata refresher, the metrics endpoint and the signal
//! watcher. [`Proxy::start`] connects, [`Proxy::serve`] runs until shutdown.
//!
//! # Lifetime of a request
//!
//! 1. **Bytes arrive.** `net::event_loop::EventLoop::read` reads from the
//!    client socket into its `frame::FrameReader`. `dispatch_frames` cuts
//!    whole frames (size prefix bounded by `listen.max_frame_bytes`),
//!    counts each as in flight, and sends them, all the frames of one read
//!    together, as `net::ToWorker::ClientFrames` to the worker that owns
//!    the connection (fixed at accept). Past
//!    `max_in_flight_per_client` unanswered requests, the loop stops
//!    reading that client until the worker sends `ToLoop::ResumeClient`.
//! 2. **The worker decodes.** `worker::Worker::client_frame` hands the
//!    frame to `requests::take`, which parses the header
//!    (`kafka::header::RequestHeader::parse`); `requests::plan` checks the
//!    version is one `offered_versions` advertises and decodes the body
//!    with the declared schema (`kafka::codec::decode_prefix`).
//! 3. **A plan is made.** ApiVersions is answered here (`Plan::Answer`).
//!    Every other API has one handler under `apis` (`apis::handler` is
//!    the table): when a rule remaps anything, its `remapped` plan has the
//!    first look, using the pure rewrites of `crate::remap` (split into
//!    rounds, tag records, derive groups), and says how the answers become
//!    the client's (`plan::Finish`, naming the handler's own function). A
//!    request naming no remapped topic goes to the handler's `forward`: it
//!    is sent as the bytes that came, with a `route::Route` read from its
//!    content. `requests::take` hands the plan to the session. A plan
//!    that needs something the proxy must ask the cluster first (metadata
//!    of a topic it has not seen, a cleanup policy, a derived producer id)
//!    asks for it (`lookups::Needs`) and returns `Plan::AfterLookups`: the
//!    request is parked in its session, with the client's later requests
//!    behind it, and the worker goes on with other connections. A look-up
//!    thread (`lookups`) asks the cluster and answers the worker
//!    (`LookupsDone`), which plans the request again.
//! 4. **Upstream.** `session::Session::forward` resolves each part's route
//!    (`route::resolve`: the cluster view; a coordinator or a broker host
//!    name not known yet is a look-up, as in step 3). It opens the client's
//!    connection to that broker if needed without waiting
//!    (`upstream::connect::start`, registered with the loop by
//!    `ToLoop::AddUpstream`, given up after `connection_timeout_ms` by
//!    `Session::check_deadlines`; with `kafka.sasl` it logs in first,
//!    `session/login.rs`, the client's frames waiting meanwhile), writes
//!    the frame itself
//!    (`net::socket::SharedSocket::send_frames`, queued until the
//!    connection is made), and records an in-flight entry with a deadline.
//!    A worker never waits on a socket. Produce requests the proxy
//!    re-encoded for remapped topics are held instead until the worker's
//!    queue is empty (the client's burst, and whatever else arrived meanwhile:
//!    `Worker::finish_bursts`, `Session::flush_held`), and longer while
//!    that broker is still answering the client's earlier ones; then they
//!    go upstream merged into as few requests as Kafka allows
//!    (`session::hold`, with the pure `coalesce`).
//! 5. **The answer comes back.** The loop reads the upstream frames and
//!    sends `ToWorker::UpstreamFrames`. `Session::on_upstream_frame` matches
//!    each to the oldest in-flight entry of that connection (Kafka answers
//!    in order) and checks the correlation id; the answer to a merged
//!    request is cut back into one per original request (`session::hold`).
//!    When every part of a request has answered, `session::complete` calls
//!    the function its handler named in the `Finish`, which builds the
//!    client's response: as it came, rewritten (addresses, virtual
//!    metadata), merged (rounds, fetch filtering), or a further stage
//!    (`Step::More`, e.g. derived commits after a membership check).
//! 6. **In order to the client.** `Session::write_ready` writes responses
//!    only from the front of the request queue, so answers from several
//!    brokers still reach the client in request order; those a burst
//!    completed go out in one write.
//!
//! A broker that closes with requests in flight, or misses a deadline
//! (`Session::check_deadlines`), closes that client's connection, as the
//! broker's own would have; other clients are unaffected. The proxy's own
//! requests to derived groups are the exception: no client would retry
//! them, so when their coordinator moved or its connection failed they are
//! sent again after a short wait (`Session::resend_due`).
//!
//! # A remapped Produce, file by file
//!
//! Counted in stages: a stage is a file whose code takes the request (or
//! its answer) and hands it on to the next stage. A file whose functions a
//! stage calls for a value they return, keeping nothing of the request, is
//! *used* by that stage: listed beside it in parentheses, not counted.
//! Calls that only say *when* a stage goes on carry nothing and are no
//! stage: the worker's `finish_bursts` (then `flush_held`, `write_ready`)
//! and the loop's `flush` of a socket when it is writable.
//!
//! Out, client to broker:
//!
//! 1. `net/event_loop.rs` reads the client socket and cuts whole frames
//!    (`frame.rs`); `ToWorker::ClientFrames` to the connection's worker.
//! 2. `proxy/worker.rs` hands each frame to `requests::take`.
//! 3. `proxy/requests.rs` parses the header (`kafka/header.rs`), checks the
//!    version (`proxy/apis/api_versions.rs`), decodes
//!    (`kafka/codec.rs`, `kafka/message.rs`), asks what remapping needs
//!    (`proxy/lookups.rs`, `cluster.rs`, `upstream/cleanup.rs`), and has
//!    the handler (`proxy/apis/mod.rs`) plan it: `proxy/apis/produce.rs`
//!    `remapped`,
//!    splitting into rounds with `proxy/apis/split.rs` (`remap/split.rs`,
//!    `remap/mapping.rs`), tagging each batch (`remap/produce.rs`,
//!    `kafka/records/`, `upstream/producer_log.rs`), encoding the parts
//!    (`proxy/plan.rs`, `kafka/message.rs`); then it hands the plan to the
//!    session (`Session::forward`).
//! 4. `proxy/session/mod.rs` resolves each part's route
//!    (`proxy/route.rs`), opens the connection to the leader
//!    (`Session::upstream` in `proxy/session/upstreams.rs`,
//!    `upstream/connect.rs`) and hands each part to `Session::hold`.
//! 5. `proxy/session/hold.rs` holds the parts, merges them
//!    (`proxy/session/coalesce.rs`), hands them to the connection's socket
//!    (`Session::upstream`) and records them in flight.
//! 6. `net/socket.rs` writes them to the broker, queueing what the kernel
//!    does not take at once (written when the socket is writable).
//!
//! Back, broker to client:
//!
//! 1. `net/event_loop.rs` reads the broker's socket and cuts the answer
//!    (`frame.rs`); `ToWorker::UpstreamFrames` to the owner's worker.
//! 2. `proxy/worker.rs` hands it to `Session::on_upstream_frame`.
//! 3. `proxy/session/upstreams.rs` matches it to its in-flight entry by
//!    order and correlation id (`kafka/header.rs`); the answer to a merged
//!    request goes to `Session::deliver_merged`, any other to
//!    `Session::deliver`.
//! 4. `proxy/session/hold.rs` cuts a merged answer apart
//!    (`proxy/session/coalesce.rs`) and delivers each piece.
//! 5. `proxy/session/mod.rs` collects a request's answers; with the last,
//!    `session::complete` calls the handler's answer function directly:
//!    `proxy/apis/produce.rs` `answer` (`proxy/apis/split.rs`
//!    `merge_answers`, `remap/split.rs`, `remap/produce.rs`,
//!    `remap/addresses.rs`, `kafka/message.rs`); `write_ready` hands the
//!    responses, in request order, to the client's socket.
//! 6. `net/socket.rs` writes them to the client, queueing as in Out 6.
//!
//! Eight stage files in all, six per direction, none twice in one. A request that must wait
//! for look-ups is parked (`proxy/session/deferred.rs`) and, once they are
//! answered, starts again at Out 2: a second pass, not a return.

pub mod apis;
pub mod lookups;
pub mod plan;
pub mod replicas;
pub mod requests;
pub mod route;
pub mod session;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};
use mio::{Poll, Waker};

use crate::cluster::{BrokerAddr, Cluster};
use crate::net::event_loop::{EventLoop, LoopSettings};
use crate::net::{LoopHandle, Shared, WAKER};
use crate::upstream::control::ControlClient;
use crate::upstream::producer_log::ProducerLog;

/// Everything the proxy needs from the configuration, in the types it
/// runs with.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    pub advertised: BrokerAddr,
    pub bootstrap: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub metadata_refresh: Duration,
    pub producer_log: crate::upstream::producer_log::LogSettings,
    pub derived_offset_refresh: Duration,
    pub max_connections: usize,
    /// `listen.max_connections_per_ip` and its overrides.
    pub max_connections_per_ip: crate::config::PerIpLimits,
    pub max_frame_bytes: usize,
    /// Budgets and deadlines of client connections (`listen`).
    pub limits: crate::net::limits::ConnectionLimits,
    pub max_in_flight_per_client: usize,
    pub workers: usize,
    pub shutdown_grace: Duration,
    /// `kafka.client_rack`: the rack id of the proxy's own fetches.
    pub client_rack: Option<String>,
    /// `listen.security`: TLS and SASL toward clients.
    pub listen_security: crate::config::ListenSecurity,
    /// `kafka.security_protocol`, `kafka.tls`, `kafka.sasl`: TLS and SASL
    /// toward the cluster.
    pub kafka_security: KafkaSecurity,
    /// The server side of `listen.security.tls`, loaded; `None`: plaintext.
    pub client_tls: Option<Arc<crate::net::tls::ServerTls>>,
    /// The client side of `kafka.tls`, loaded; `None`: plaintext.
    pub upstream_tls: Option<Arc<crate::net::tls::UpstreamTls>>,
    /// The SASL server of `listen.security.sasl` (its JWKS loaded);
    /// `None` unless clients authenticate with SASL.
    pub client_sasl: Option<Arc<crate::auth::server::SaslServer>>,
}

/// How the proxy connects to the cluster's brokers.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: crate::config::SecurityProtocol,
    pub tls: Option<crate::config::KafkaTls>,
    pub sasl: Option<crate::config::KafkaSasl>,
    /// The file of `kafka.sasl.token_path`, loaded, with OAUTHBEARER.
    pub bearer_token: Option<Arc<crate::auth::token_file::TokenFile>>,
}

impl KafkaSecurity {
    /// The credentials to log in with: `sasl` when the protocol asks for
    /// SASL.
    pub fn sasl_login(&self) -> Option<crate::config::KafkaSasl> {
        self.sasl.clone().filter(|_| self.protocol.uses_sasl())
    }

    /// `kafka.sasl.mode: passthrough`: clients' upstream connections log
    /// in as the clients.
    pub fn passthrough(&self) -> bool {
        self.sasl_login().is_some_and(|s| s.mode == crate::config::SaslMode::Passthrough)
    }
}

impl ProxySettings {
    /// A control client for `cluster` with these timeouts and security,
    /// its TLS from `shared` (as a reload leaves it).
    pub fn control_client(&self, cluster: Arc<Cluster>, shared: &Shared) -> ControlClient {
        ControlClient::new(cluster, self.connect_timeout, self.request_timeout)
            .with_sasl(self.kafka_security.sasl_login(), self.kafka_security.bearer_token.clone())
            .with_live_tls(shared.live.upstream_tls.clone())
            .with_stop(shared.control_sockets.clone())
    }
}

/// What every worker reads.
pub struct ProxyContext {
    pub settings: ProxySettings,
    pub mapper: crate::remap::mapping::Mapper,
    /// Derived producer ids, shared with every instance through the
    /// cluster; `None` when no rule remaps (nothing derives ids then).
    pub producer_log: Option<Arc<ProducerLog>>,
    pub owner_cache: crate::remap::fetch::OwnerCache,
    /// Where fetches go while a leader prefers a replica (KIP-392).
    pub preferred_replicas: replicas::PreferredReplicas,
    pub derived_keepalive: crate::remap::groups::KeepAlive,
    /// Where workers ask for control look-ups (`lookups`).
    pub lookups: lookups::LookupQueue,
    pub cluster: Arc<Cluster>,
    pub shared: Arc<Shared>,
    pub handle: LoopHandle,
}

impl ProxyContext {
    /// The SASL server clients log in to, as last reloaded; `None`:
    /// clients do not authenticate (`listen.security.protocol` without SASL).
    pub fn client_sasl(&self) -> Option<Arc<crate::auth::server::SaslServer>> {
        self.shared.live.client_sasl.get()
    }

    /// Log every topic whose physical count contradicts its rule, and
    /// every compacted topic a rule would remap, and publish how many there
    /// are (at start and after each refresh).
    pub fn report_mismatches(&self) {
        let view = self.cluster.read();
        let n = self.mapper.report_mismatches(&view);
        self.shared.metrics.topics_mismatched.store(n as u64, Ordering::Relaxed);
        let n = self.mapper.report_compacted(&view);
        self.shared.metrics.topics_compacted_refused.store(n as u64, Ordering::Relaxed);
    }

    /// Read the cleanup policy of every topic a rule would remap that the
    /// proxy has not asked about yet (at start and after each refresh).
    pub fn learn_cleanup_policies(&self, control: &mut ControlClient) {
        if !self.mapper.remaps_anything() {
            return;
        }
        let names: Vec<String> = self.cluster.read().topics.keys().cloned().collect();
        crate::upstream::cleanup::learn(control, &self.mapper, &names);
    }
}

/// A proxy that is listening and connected, ready to `serve`.
pub struct Proxy {
    poll: Poll,
    listener: mio::net::TcpListener,
    ctx: Arc<ProxyContext>,
    commands: crossbeam_channel::Receiver<crate::net::ToLoop>,
}

#[derive(Debug)]
pub enum StartError {
    Listen { addr: SocketAddr, source: io::Error },
    Upstream(crate::upstream::control::UpstreamError),
    Io(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Upstream(e @ crate::upstream::control::UpstreamError::Sasl { .. }) => {
                write!(f, "the Kafka cluster refused the proxy's login: {e}")
            }
            StartError::Upstream(e) => write!(f, "cannot reach the Kafka cluster: {e}"),
            StartError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Proxy {
    /// Bind the listener (logging `Listening on`), then learn the cluster
    /// (logging `Connected to Kafka cluster`).
    pub fn start(
        settings: ProxySettings,
        mapper: crate::remap::mapping::Mapper,
        shared: Arc<Shared>,
    ) -> Result<Proxy, StartError> {
        let listener = mio::net::TcpListener::bind(settings.listen)
            .map_err(|source| StartError::Listen { addr: settings.listen, source })?;
        let local = listener.local_addr().map_err(StartError::Io)?;
        info!("Listening on {local}");
        let cluster = Arc::new(Cluster::new(settings.bootstrap.clone()));
        shared.live.client_tls.set(settings.client_tls.clone());
        shared.live.upstream_tls.set(settings.upstream_tls.clone());
        shared.live.client_sasl.set(settings.client_sasl.clone().filter(|_| settings.listen_security.protocol.uses_sasl()));
        shared.health.set_refresh_interval(settings.metadata_refresh);
        let mut control = settings.control_client(cluster.clone(), &shared);
        control.bootstrap().map_err(StartError::Upstream)?;
        shared.health.refreshed(std::time::Instant::now());
        {
            let view = cluster.read();
            // The user's guide's start-up line, word for word; the details next.
            info!("Connected to Kafka cluster");
            info!(
                "Kafka cluster{}: {} brokers, {} topics",
                view.cluster_id.as_deref().map(|c| format!(" {c}")).unwrap_or_default(),
                view.brokers.len(),
                view.topics.len()
            );
        }
        let poll = Poll::new().map_err(StartError::Io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Io)?);
        let (tx, commands) = crossbeam_channel::unbounded();
        let handle = LoopHandle::new(tx, waker);
        let producer_log = if mapper.remaps_anything() {
            let log = ProducerLog::new(settings.producer_log.clone());
            // A cluster blip must not stop a start: 1:1 topics and other
            // producers are served meanwhile, and the reader thread keeps
            // trying; idempotent produce to k >= 1 partitions is answered
            // with a retriable error until the topic is read.
            if let Err(e) = log.ensure_topic(&mut control).and_then(|()| log.load(&mut control)) {
                warn!(
                    "The producer-id topic {} is not readable yet ({e}); idempotent producers writing to virtual \
                     partitions with k >= 1 get retriable errors until it is",
                    settings.producer_log.topic
                );
            }
            Some(Arc::new(log))
        } else {
            None
        };
        let owner_cache = Default::default();
        let preferred_replicas = replicas::PreferredReplicas::new(settings.metadata_refresh);
        let derived_keepalive = crate::remap::groups::KeepAlive::new(settings.derived_offset_refresh);
        let ctx = Arc::new(ProxyContext {
            settings,
            mapper,
            producer_log,
            owner_cache,
            preferred_replicas,
            derived_keepalive,
            lookups: Default::default(),
            cluster,
            shared,
            handle,
        });
        ctx.learn_cleanup_policies(&mut control);
        ctx.report_mismatches();
        Ok(Proxy { poll, listener, ctx, commands })
    }

    pub fn context(&self) -> &Arc<ProxyContext> {
        &self.ctx
    }

    /// Serve until a shutdown is requested (`Shared::shutdown` set and the
    /// loop woken) and in-flight requests are finished.
    pub fn serve(self) -> io::Result<()> {
        let ctx = self.ctx;
        let mut worker_txs = Vec::new();
        let mut lookup_answers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..ctx.settings.workers.max(1) {
            let (tx, rx) = crossbeam_channel::unbounded();
            worker_txs.push(tx);
            let (answers_tx, answers) = crossbeam_channel::unbounded();
            lookup_answers.push(answers_tx);
            let wctx = ctx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || worker::Worker::new(i, wctx, rx, answers).run())?,
            );
        }
        threads.extend(lookups::spawn(&ctx, lookup_answers)?);
        let refresher = {
            let control = ctx.settings.control_client(ctx.cluster.clone(), &ctx.shared);
            let interval = ctx.settings.metadata_refresh;
            let shared = ctx.shared.clone();
            let rctx = ctx.clone();
            std::thread::Builder::new().name("metadata-refresh".into()).spawn(move || {
                crate::upstream::refresh::run(control, interval, shared, |control| {
                    rctx.learn_cleanup_policies(control);
                    rctx.report_mismatches();
                })
            })?
        };
        let follower = match ctx.producer_log.clone() {
            Some(log) => {
                let control = ctx.settings.control_client(ctx.cluster.clone(), &ctx.shared);
                let shared = ctx.shared.clone();
                Some(std::thread::Builder::new().name("producer-ids".into()).spawn(move || log.follow(control, shared))?)
            }
            None => None,
        };
        let loop_settings = LoopSettings {
            max_connections: ctx.settings.max_connections,
            per_ip: ctx.settings.max_connections_per_ip.clone(),
            max_frame_bytes: ctx.settings.max_frame_bytes,
            max_in_flight_per_client: ctx.settings.max_in_flight_per_client,
            shutdown_grace: ctx.settings.shutdown_grace,
            client_tls: ctx.settings.client_tls.clone(),
            client_sasl: ctx.client_sasl().is_some(),
            limits: ctx.settings.limits.clone(),
        };
        let event_loop = EventLoop::new(
            self.poll,
            self.listener,
            self.commands,
            worker_txs,
            ctx.handle.clone(),
            loop_settings,
            ctx.shared.clone(),
        )?;
        let result = event_loop.run();
        ctx.shared.shutdown.store(true, Ordering::SeqCst);
        // In-flight requests are answered or their grace is over: a control
        // call still waiting on the cluster (a silent broker holds it up to
        // kafka.request_timeout_ms) fails now, so the joins below are quick.
        let interrupted = ctx.shared.control_sockets.stop();
        debug!("Closed {interrupted} control connections for the shutdown");
        for t in threads {
            if t.join().is_err() {
                error!("A worker or look-up thread panicked");
            }
        }
        if refresher.join().is_err() {
            warn!("The metadata refresher panicked");
        }
        if follower.is_some_and(|f| f.join().is_err()) {
            warn!("The producer-id topic reader panicked");
        }
        result
    }
}

/// The signals the proxy handles, caught from here on. Call it before the
/// proxy starts: `Listening on` is logged before the cluster is reached, and
/// a signal before `watch_signals` took its default action (SIGTERM killed
/// the process without a shutdown, a SIGHUP during a start killed it too);
/// caught early, it waits until `watch_signals` handles it.
pub fn catch_signals() -> io::Result<signal_hook::iterator::Signals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
}

/// Ask for a shutdown on SIGINT or SIGTERM; a second signal exits at once.
/// SIGHUP calls `on_hangup` (the configuration reload) on this thread, so
/// no proxy thread waits for the files it reads. `signals` is
/// `catch_signals`'s.
pub fn watch_signals(
    mut signals: signal_hook::iterator::Signals,
    shared: Arc<Shared>,
    handle: LoopHandle,
    mut on_hangup: impl FnMut() + Send + 'static,
) -> io::Result<()> {
    use signal_hook::consts::SIGHUP;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                if !shared.shutdown.load(Ordering::SeqCst) {
                    on_hangup();
                }
                continue;
            }
            if shared.shutdown.swap(true, Ordering::SeqCst) {
                warn!("Second signal {sig}: exiting without waiting");
                std::process::exit(1);
            }
            info!("Received signal {sig}, shutting down");
            handle.wake();
        }
    })?;
    Ok(())
}
