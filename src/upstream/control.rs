//! The proxy's own requests to the cluster — bootstrap, metadata refresh,
//! coordinator look-ups, producer ids — sent over plain blocking
//! connections. Each thread that needs them owns one `ControlClient`; these
//! requests are rare and small, so a blocking round trip is the simplest
//! correct thing.
//!
//! With `kafka.sasl`, every connection logs in (`super::sasl`) before its
//! first request. When the broker limits the login's session (KIP-368
//! `session_lifetime_ms`), a connection is not used past 85% of it: the
//! next call opens a fresh, freshly authenticated one instead.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, CoordinatorKind};
use crate::config::KafkaSasl;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::{api_versions_request, api_versions_response, find_coordinator_request, find_coordinator_response};
use crate::kafka::fields::{members, metadata_request};
use crate::kafka::header::peek_correlation_id;
use crate::kafka::message::{decode_response, encode_request, request_schema, ResponseError};
use crate::kafka::wire::DecodeError;
use crate::live::Swap;
use crate::net::tls::{BlockingStream, UpstreamTls};
use crate::auth::token_file::TokenFile;

use super::exchange::{exchange, Asked};
use super::misbehaviour::{broker_name, wrong_correlation};
use super::stop::{stopped_error, ControlSockets, Registration};
use super::sasl::{reauthenticate_after, SaslError, SaslExchange, SaslStep, SaslVersions};

pub const CLIENT_ID: &str = "kpr-proxy";

#[derive(Debug)]
pub enum UpstreamError {
    Connect { addr: String, source: io::Error },
    /// TCP connected, the TLS handshake failed: why, in OpenSSL's words.
    Tls { addr: String, reason: String },
    Io { addr: String, source: io::Error },
    /// The broker did not answer in time, closed the connection, or sent
    /// what is not a Kafka answer: `message` names it and says what.
    Misbehaved { addr: String, message: String },
    Decode { addr: String, api: ApiKey, source: DecodeError },
    /// The cluster does not speak any version of an API the proxy needs.
    Unsupported { api: ApiKey },
    /// The broker answered with an error code.
    Kafka { api: ApiKey, code: i16, message: String },
    NoBrokers,
    /// The broker refused the proxy's login, or the login failed.
    Sasl { addr: String, source: SaslError },
}

impl UpstreamError {
    /// Which step of reaching the cluster failed, as `--check-config`
    /// names it.
    pub fn step(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::NoBrokers => "TCP connect",
            UpstreamError::Sasl { source, .. } => source.step(),
            _ => "Kafka request",
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect { addr, source } => write!(f, "cannot connect to Kafka broker {addr}: {source}"),
            UpstreamError::Tls { addr, reason } => write!(f, "TLS handshake with Kafka broker {addr} failed: {reason}"),
            UpstreamError::Io { addr, source } => write!(f, "connection to Kafka broker {addr} failed: {source}"),
            UpstreamError::Misbehaved { message, .. } => f.write_str(message),
            UpstreamError::Decode { addr, api, source } => {
                write!(f, "malformed {} response from {addr}: {source}", api.name())
            }
            UpstreamError::Unsupported { api } => {
                write!(f, "the Kafka cluster supports no version of {} that kpr-proxy speaks", api.name())
            }
            UpstreamError::Kafka { api, code, message } => {
                write!(f, "{} failed with Kafka error code {code}{}", api.name(), if message.is_empty() { String::new() } else { format!(": {message}") })
            }
            UpstreamError::NoBrokers => write!(f, "no Kafka broker address is known"),
            UpstreamError::Sasl { addr, source } => write!(f, "{source} (Kafka broker {addr})"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// One broker's answer to a `ControlClient::call`: the whole response
/// frame, its correlation id checked.
pub struct Answer {
    addr: String,
    api: ApiKey,
    version: i16,
    frame: Vec<u8>,
}

impl Answer {
    /// The decoded body.
    pub fn body(&self) -> Result<Struct<'_>, UpstreamError> {
        match decode_response(self.api as i16, self.version, &self.frame) {
            Ok(r) => Ok(r.body),
            Err(ResponseError::NoSchema { .. }) => Err(UpstreamError::Unsupported { api: self.api }),
            Err(ResponseError::Malformed { source, .. }) => Err(UpstreamError::Decode { addr: self.addr.clone(), api: self.api, source }),
        }
    }
}

/// An open control connection.
struct Connection {
    stream: BlockingStream,
    /// Whether the broker answered anything on it yet.
    answered: bool,
    /// When its login must be renewed (KIP-368): not used from then on.
    renew_at: Option<Instant>,
    /// Lets a shutdown end a read on it (`super::stop`).
    _stoppable: Option<Registration>,
}

pub struct ControlClient {
    cluster: Arc<Cluster>,
    conns: HashMap<String, Connection>,
    /// `kafka.sasl` when `kafka.security_protocol` asks for SASL.
    sasl: Option<KafkaSasl>,
    /// The token file of OAUTHBEARER (`kafka.sasl.token_path`).
    bearer_token: Option<Arc<TokenFile>>,
    next_correlation: i32,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// `kafka.tls`, as last reloaded: each new connection takes the current one.
    tls: Arc<Swap<Option<Arc<UpstreamTls>>>>,
    /// Where its sockets are registered so that a shutdown can close them.
    stop: Option<Arc<ControlSockets>>,
}

impl ControlClient {
    pub fn new(cluster: Arc<Cluster>, connect_timeout: Duration, request_timeout: Duration) -> ControlClient {
        ControlClient {
            cluster,
            conns: HashMap::new(),
            sasl: None,
            bearer_token: None,
            next_correlation: 1,
            connect_timeout,
            request_timeout,
            tls: Default::default(),
            stop: None,
        }
    }

    /// Log in with `sasl` (`None`: no SASL) on every connection; with OAUTHBEARER the token
    /// is read from `bearer_token` at each login.
    pub fn with_sasl(mut self, sasl: Option<KafkaSasl>, bearer_token: Option<Arc<TokenFile>>) -> ControlClient {
        self.sasl = sasl;
        self.bearer_token = bearer_token;
        self
    }

    /// Speak TLS to the brokers (`kafka.tls`) when `tls` is set.
    pub fn with_tls(self, tls: Option<Arc<UpstreamTls>>) -> ControlClient {
        self.with_live_tls(Arc::new(Swap::new(tls)))
    }

    /// Speak TLS to the brokers with whatever `tls` holds when a connection
    /// is made (a reload may replace it).
    pub fn with_live_tls(mut self, tls: Arc<Swap<Option<Arc<UpstreamTls>>>>) -> ControlClient {
        self.tls = tls;
        self
    }

    /// Register every connection with `sockets`, whose `stop` (at
    /// shutdown) ends the reads blocked on them and refuses new ones.
    pub fn with_stop(mut self, sockets: Arc<ControlSockets>) -> ControlClient {
        self.stop = Some(sockets);
        self
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The version of `api` to use: the highest both the proxy and the
    /// cluster speak (the proxy's own when the cluster's is not known yet).
    pub fn pick_version(&self, api: ApiKey) -> Result<i16, UpstreamError> {
        let ours = crate::kafka::schema::registry()
            .supported_versions(api as i16)
            .ok_or(UpstreamError::Unsupported { api })?;
        match self.cluster.upstream_versions(api as i16) {
            None => Ok(ours.max),
            Some((min, max)) => {
                let v = ours.max.min(max);
                if v < ours.min.max(min) {
                    Err(UpstreamError::Unsupported { api })
                } else {
                    Ok(v)
                }
            }
        }
    }

    /// Send one request to `addr` and return its answer.
    pub fn call(&mut self, addr: &str, api: ApiKey, version: i16, body: &Struct<'_>) -> Result<Answer, UpstreamError> {
        let correlation = self.take_correlation();
        let frame = encode_request(api as i16, version, correlation, Some(CLIENT_ID), body)
            .expect("the proxy builds only encodable requests");
        let result = self.round_trip(addr, &frame);
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.conns.remove(addr);
                if let UpstreamError::Misbehaved { .. } = e {
                    // Not hammered again at once (reconnect backoff).
                    self.cluster.mark_unreachable(addr);
                }
                return Err(e);
            }
        };
        let got = peek_correlation_id(&response).ok();
        if got != Some(correlation) {
            self.conns.remove(addr);
            let message = format!("{} {}", broker_name(&self.cluster, addr), wrong_correlation(got, correlation, api.name()));
            self.cluster.mark_unreachable(addr);
            return Err(UpstreamError::Misbehaved { addr: addr.to_string(), message });
        }
        self.cluster.mark_reachable(addr);
        Ok(Answer { addr: addr.to_string(), api, version, frame: response })
    }

    fn take_correlation(&mut self) -> i32 {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
        correlation
    }

    fn round_trip(&mut self, addr: &str, frame: &[u8]) -> Result<Vec<u8>, UpstreamError> {
        if self.conns.get(addr).and_then(|c| c.renew_at).is_some_and(|at| Instant::now() >= at) {
            // Its login's session is nearly over (KIP-368): a fresh one.
            self.conns.remove(addr);
        }
        if !self.conns.contains_key(addr) {
            if self.stop.as_ref().is_some_and(|s| s.is_stopped()) {
                return Err(UpstreamError::Io { addr: addr.to_string(), source: stopped_error() });
            }
            let s = super::connect::connect(addr, self.connect_timeout, &self.cluster)
                .map_err(|source| UpstreamError::Connect { addr: addr.to_string(), source })?;
            let mut stream = match &self.tls.get() {
                None => BlockingStream::Plain(s),
                Some(tls) => {
                    // The handshake is part of connecting: bounded as a connect is.
                    s.set_read_timeout(Some(self.connect_timeout)).ok();
                    s.set_write_timeout(Some(self.connect_timeout)).ok();
                    let tls = tls.connect_blocking(addr, s).map_err(|reason| {
                        self.cluster.mark_unreachable(addr);
                        UpstreamError::Tls { addr: addr.to_string(), reason }
                    })?;
                    BlockingStream::Tls(Box::new(tls))
                }
            };
            let tcp = match &stream {
                BlockingStream::Plain(s) => s,
                BlockingStream::Tls(s) => s.get_ref(),
            };
            tcp.set_read_timeout(Some(self.request_timeout)).ok();
            tcp.set_write_timeout(Some(self.request_timeout)).ok();
            let stoppable = match &self.stop {
                Some(sockets) => Some(sockets.register(tcp).map_err(|source| UpstreamError::Io { addr: addr.to_string(), source })?),
                None => None,
            };
            let renew_at = match self.sasl.clone() {
                Some(sasl) => self.log_in(addr, &mut stream, &sasl)?.map(|lifetime| Instant::now() + reauthenticate_after(lifetime)),
                None => None,
            };
            self.conns.insert(addr.to_string(), Connection { stream, answered: false, renew_at, _stoppable: stoppable });
        }
        let first = !self.conns[addr].answered;
        let asked = self.asked(addr, first);
        let conn = self.conns.get_mut(addr).expect("inserted above");
        let answer = exchange(&mut conn.stream, &asked, frame)?;
        conn.answered = true;
        Ok(answer)
    }

    /// Log in on a new connection; the session's lifetime when the broker
    /// limits it. The versions are the cluster's when known (after
    /// bootstrap), else asked on this connection: ApiVersions is the one
    /// request a broker answers before a login.
    fn log_in(&mut self, addr: &str, stream: &mut BlockingStream, sasl: &KafkaSasl) -> Result<Option<Duration>, UpstreamError> {
        let known = self.cluster.upstream_versions(ApiKey::SaslAuthenticate as i16).is_some();
        let versions = if known {
            SaslVersions::choose(|api| self.cluster.upstream_versions(api))
        } else {
            let asked = encode_request(ApiKey::ApiVersions as i16, 0, self.take_correlation(), Some(CLIENT_ID), &api_versions_v0())
                .expect("ApiVersions v0 encodes");
            let frame = exchange(stream, &self.asked(addr, true), &asked)?;
            let answer = Answer { addr: addr.to_string(), api: ApiKey::ApiVersions, version: 0, frame };
            let ranges = read_api_versions(&answer.body()?)?;
            SaslVersions::choose(|api| ranges.get(&api).copied())
        };
        let failed = |source| UpstreamError::Sasl { addr: addr.to_string(), source };
        let (mut login, mut request) = SaslExchange::start(sasl, self.bearer_token.clone(), versions.map_err(failed)?);
        let mut first = !known;
        loop {
            let asked = self.asked(addr, std::mem::take(&mut first));
            let frame = match exchange(stream, &asked, &request.encode(self.take_correlation())) {
                Err(UpstreamError::Io { .. } | UpstreamError::Misbehaved { .. }) if login.at_handshake() => {
                    return Err(failed(SaslError::HandshakeClosed { mechanism: login.mechanism() }))
                }
                other => other?,
            };
            match login.on_answer(&frame).map_err(failed)? {
                SaslStep::Send(next) => request = next,
                SaslStep::Done { session_lifetime } => return Ok(session_lifetime),
            }
        }
    }

    /// Who a request on a connection to `addr` asks, for its errors.
    fn asked<'a>(&self, addr: &'a str, first: bool) -> Asked<'a> {
        Asked { name: broker_name(&self.cluster, addr), addr, first, request_timeout: self.request_timeout }
    }

    /// Call and decode, trying every known broker (then bootstrap server)
    /// until one answers.
    pub fn call_any<T>(
        &mut self,
        api: ApiKey,
        build: impl Fn(&mut Struct<'static>, i16),
        read: impl Fn(&Struct<'_>) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let tries = self.cluster.read().brokers.len().max(self.cluster.bootstrap.len()).max(1);
        let mut last = UpstreamError::NoBrokers;
        for attempt in 0..tries {
            let Some((_, addr)) = self.cluster.any_broker(attempt) else { break };
            match self.call_decoded(&addr, api, &build, &read) {
                Ok(v) => return Ok(v),
                Err(
                    e @ (UpstreamError::Connect { .. }
                    | UpstreamError::Tls { .. }
                    | UpstreamError::Io { .. }
                    | UpstreamError::Misbehaved { .. }),
                ) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    pub fn call_decoded<T>(
        &mut self,
        addr: &str,
        api: ApiKey,
        build: impl Fn(&mut Struct<'static>, i16),
        read: impl Fn(&Struct<'_>) -> Result<T, UpstreamError>,
    ) -> Result<T, UpstreamError> {
        let version = self.pick_version(api)?;
        let req_schema = request_schema(api as i16).ok_or(UpstreamError::Unsupported { api })?;
        let mut body = codec::with_defaults(&req_schema.body, version);
        build(&mut body, version);
        read(&self.call(addr, api, version, &body)?.body()?)
    }

    /// Learn the cluster's API versions and full metadata from the first
    /// bootstrap server (or known broker) that answers.
    pub fn bootstrap(&mut self) -> Result<(), UpstreamError> {
        let mut last = UpstreamError::NoBrokers;
        let mut addrs: Vec<String> = self.cluster.bootstrap.clone();
        addrs.extend(self.cluster.read().brokers.values().map(|b| b.to_addr_string()));
        for addr in addrs {
            match self.api_versions(&addr) {
                Ok(versions) => {
                    self.cluster.set_api_versions(versions);
                    return self.refresh_metadata();
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn api_versions(&mut self, addr: &str) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let read = read_api_versions;
        let build = |b: &mut Struct<'static>, v: i16| {
            if v >= 3 {
                b.write(api_versions_request::CLIENT_SOFTWARE_NAME, CLIENT_ID);
                b.write(api_versions_request::CLIENT_SOFTWARE_VERSION, env!("CARGO_PKG_VERSION"));
            }
        };
        // Version 3 first; a broker that does not know it answers with v0
        // and UNSUPPORTED_VERSION plus its ranges, which `read` accepts.
        match self.call_decoded(addr, ApiKey::ApiVersions, build, read) {
            Err(UpstreamError::Decode { .. }) => {
                let answer = self.call(addr, ApiKey::ApiVersions, 0, &api_versions_v0())?;
                read(&answer.body()?)
            }
            other => other,
        }
    }

    /// Full metadata (all topics), applied to the cluster view.
    pub fn refresh_metadata(&mut self) -> Result<(), UpstreamError> {
        let cluster = self.cluster.clone();
        self.call_any(
            ApiKey::Metadata,
            |b, v| {
                if v >= 1 {
                    b.put(metadata_request::TOPICS, Value::Array(None));
                }
            },
            |r| {
                cluster.apply_metadata(r);
                Ok(())
            },
        )
    }

    /// Metadata for these topics only, applied to the cluster view (topics
    /// that do not exist are noted, so they are not asked about again at
    /// once).
    pub fn refresh_topics(&mut self, topics: &[String]) -> Result<(), UpstreamError> {
        let cluster = self.cluster.clone();
        let names = topics.to_vec();
        let result = self.call_any(
            ApiKey::Metadata,
            |b, v| {
                let schema = members(b.schema, metadata_request::TOPICS);
                let items: Vec<Value> = names
                    .iter()
                    .map(|n| {
                        let mut t = codec::with_defaults(schema, v);
                        t.write(metadata_request::topics::NAME, n.clone());
                        Value::Struct(t.into_owned())
                    })
                    .collect();
                b.write(metadata_request::TOPICS, items);
                if v >= 4 {
                    b.write(metadata_request::ALLOW_AUTO_TOPIC_CREATION, false);
                }
            },
            |r| {
                cluster.apply_metadata(r);
                Ok(())
            },
        );
        for t in topics {
            if !self.cluster.read().topics.contains_key(t) {
                self.cluster.note_missing(t);
            }
        }
        result
    }

    /// Ask for the coordinator of a group or transactional id and remember it.
    pub fn find_coordinator(&mut self, kind: CoordinatorKind, key: &str) -> Result<i32, UpstreamError> {
        let cluster = self.cluster.clone();
        let key_owned = key.to_string();
        self.call_any(
            ApiKey::FindCoordinator,
            |b, v| {
                use find_coordinator_request as request;
                if v >= 1 {
                    b.write(request::KEY_TYPE, kind as i8);
                }
                if v >= 4 {
                    b.write(request::COORDINATOR_KEYS, vec![Value::str(key_owned.clone())]);
                } else {
                    b.write(request::KEY, key_owned.clone());
                }
            },
            |r| {
                use find_coordinator_response::{coordinators, COORDINATORS, ERROR_CODE, NODE_ID};
                let (code, node) = match r.iter(COORDINATORS).next() {
                    Some(c) => (c.read(coordinators::ERROR_CODE).unwrap_or(0), c.read(coordinators::NODE_ID).unwrap_or(-1)),
                    None => (r.read(ERROR_CODE).unwrap_or(0), r.read(NODE_ID).unwrap_or(-1)),
                };
                if code != error::NONE || node < 0 {
                    return Err(UpstreamError::Kafka { api: ApiKey::FindCoordinator, code, message: key_owned.clone() });
                }
                cluster.set_coordinator(kind, &key_owned, node);
                Ok(node)
            },
        )
    }
}

fn api_versions_v0() -> Struct<'static> {
    codec::with_defaults(&request_schema(ApiKey::ApiVersions as i16).expect("declared").body, 0)
}

/// The version ranges of an ApiVersions answer. A broker that does not
/// know the version asked answers v0 with UNSUPPORTED_VERSION and its
/// ranges, which count.
fn read_api_versions(r: &Struct<'_>) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
    use api_versions_response::{api_keys, API_KEYS, ERROR_CODE};
    let code = r.read(ERROR_CODE).unwrap_or(0);
    if code != error::NONE && r.items(API_KEYS).is_empty() {
        return Err(UpstreamError::Kafka { api: ApiKey::ApiVersions, code, message: String::new() });
    }
    Ok(r.iter(API_KEYS)
        .filter_map(|k| Some((k.read(api_keys::API_KEY)?, (k.read(api_keys::MIN_VERSION)?, k.read(api_keys::MAX_VERSION)?))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::with_size_prefix;
    use std::io::{Read, Write};
    use crate::config::{SaslMechanism, Secret};
    use crate::kafka::fields::sasl_authenticate_response;
    use crate::kafka::message::{encode_response, response_schema};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A broker that takes any PLAIN login, limits its session to
    /// `lifetime_ms` (KIP-368), and answers ApiVersions with nothing.
    /// Returns its address and counts of connections and logins.
    fn lenient_broker(lifetime_ms: i64) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (connections, logins) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (conns, logs) = (connections.clone(), logins.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                conns.fetch_add(1, Ordering::SeqCst);
                let logs = logs.clone();
                std::thread::spawn(move || {
                    let mut size = [0u8; 4];
                    while stream.read_exact(&mut size).is_ok() {
                        let mut frame = vec![0u8; u32::from_be_bytes(size) as usize];
                        stream.read_exact(&mut frame).unwrap();
                        let api = i16::from_be_bytes([frame[0], frame[1]]);
                        let version = i16::from_be_bytes([frame[2], frame[3]]);
                        let correlation = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                        let mut body = codec::with_defaults(&response_schema(api).unwrap().body, version);
                        if api == ApiKey::SaslAuthenticate as i16 {
                            logs.fetch_add(1, Ordering::SeqCst);
                            body.write(sasl_authenticate_response::SESSION_LIFETIME_MS, lifetime_ms);
                        }
                        let answer = encode_response(api, version, correlation, &[], &body).unwrap();
                        stream.write_all(&with_size_prefix(&answer)).unwrap();
                    }
                });
            }
        });
        (addr, connections, logins)
    }

    #[test]
    fn a_connection_is_replaced_before_its_session_ends() {
        let (addr, connections, logins) = lenient_broker(300);
        let cluster = Arc::new(Cluster::new(vec![addr.clone()]));
        cluster.set_api_versions(HashMap::from([(17, (0, 1)), (18, (0, 3)), (36, (0, 2))]));
        let sasl = KafkaSasl { mechanism: SaslMechanism::Plain, username: "svc".into(), password: Secret::new("pw"), token_path: None, mode: Default::default() };
        let mut control = ControlClient::new(cluster, Duration::from_secs(2), Duration::from_secs(2)).with_sasl(Some(sasl), None);
        let mut ask = || control.call(&addr, ApiKey::ApiVersions, 0, &api_versions_v0()).map(|_| ()).unwrap();
        ask();
        ask();
        assert_eq!((connections.load(Ordering::SeqCst), logins.load(Ordering::SeqCst)), (1, 1), "one login serves both");
        std::thread::sleep(Duration::from_millis(270)); // past 85% of 300 ms
        ask();
        assert_eq!((connections.load(Ordering::SeqCst), logins.load(Ordering::SeqCst)), (2, 2), "a fresh connection, logged in");
    }
}
