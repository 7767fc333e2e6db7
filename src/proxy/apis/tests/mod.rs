//! Handler unit tests: each handler planned against a cluster view set by
//! hand, the upstream requests of its plan read back decoded, and canned
//! decoded answers turned into the client's answer (`session::complete`).
//! No broker and no event loop: the only socket is a loopback pair standing
//! in for the client, because a `Session` owns one (nothing is written to
//! it).
//!
//! The cluster every test sees ([`Harness::new`]): brokers 1 and 2;
//! topic [`EVENTS`] with 2 physical partitions under a 10:2 rule (so
//! virtual partition `v` lives on `v % 2` with sibling index `v / 2`, and
//! derived groups run from k1 to k4); topic [`ORDERS`], ruled 12:3, not
//! created yet; topic [`PLAIN`], 3 partitions, no rule.

mod create_topics;
mod delete_groups;
mod fetch;
mod find_coordinator;
mod list_offsets;
mod lookups_first;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod produce;
mod sasl;

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{BrokerAddr, Cluster, PartitionInfo, TopicInfo};
use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct};
use crate::kafka::fields::kinds::{Array, Child, Field};
use crate::kafka::fields::members;
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{decode_response, encode_request, encode_response, request_schema, response_schema};
use crate::kafka::schema::StructSchema;
use crate::net::socket::SharedSocket;
use crate::net::{LoopHandle, Shared, WAKER};
use crate::proxy::lookups::{Lookup, Needs};
use crate::proxy::plan::{Finish, Part, Plan, Step};
use crate::proxy::session::Session;
use crate::proxy::{replicas, ProxyContext, ProxySettings};
use crate::remap::mapping::{CleanupPolicy, Mapper};
use crate::remap::rules::MappingRules;
use crate::upstream::producer_log::{LogSettings, ProducerLog};

/// 10 virtual partitions on 2 physical ones.
pub const EVENTS: &str = "events";
pub const EVENTS_ID: [u8; 16] = [7; 16];
/// Ruled 12:3; the cluster does not have it.
pub const ORDERS: &str = "orders";
/// 3 partitions, no rule.
pub const PLAIN: &str = "plain";
/// Where the proxy tells clients it is.
pub const ADVERTISED: (&str, i32) = ("proxy.test", 9092);
/// Broker `n` is at this address plus `n` (never connected to).
pub const BROKER_PORT_BASE: i32 = 19000;
pub const CLIENT_CORRELATION: i32 = 77;

pub struct Harness {
    pub ctx: ProxyContext,
    pub session: Session,
    /// Look-ups the "previous round" could not learn.
    pub failures: Vec<(Lookup, String)>,
    _poll: mio::Poll,
    _client_end: std::net::TcpStream,
}

/// What planning one request gave.
pub struct Planned {
    pub plan: Plan,
    pub asked: Vec<Lookup>,
}

impl Harness {
    pub fn new() -> Harness {
        let rules = MappingRules::new(None, vec![(EVENTS.to_string(), 10, 2), (ORDERS.to_string(), 12, 3)]).expect("valid rules");
        let mapper = Mapper::new(rules);
        let cluster = Arc::new(Cluster::new(Vec::new()));
        {
            let mut view = cluster.write();
            for node in [1, 2] {
                view.brokers.insert(node, BrokerAddr { host: "127.0.0.1".into(), port: BROKER_PORT_BASE + node });
            }
            view.controller_id = 1;
            let topic = |id: [u8; 16], leaders: &[i32]| TopicInfo {
                id,
                internal: false,
                partitions: leaders.iter().map(|&leader| PartitionInfo { leader, replicas: vec![leader], isr: vec![leader], ..Default::default() }).collect(),
            };
            view.topics.insert(EVENTS.into(), topic(EVENTS_ID, &[1, 2]));
            view.topic_names.insert(EVENTS_ID, EVENTS.into());
            view.topics.insert(PLAIN.into(), topic([8; 16], &[1, 2, 1]));
            view.topic_names.insert([8; 16], PLAIN.into());
        }
        // Every API in every version the proxy declares: the upstream range
        // only narrows what the proxy offers.
        cluster.set_api_versions((0..=80).map(|key| (key, (0, i16::MAX))).collect());
        mapper.set_policy(EVENTS, EVENTS_ID, CleanupPolicy::Delete);

        let poll = mio::Poll::new().expect("a poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).expect("a waker"));
        let (tx, _commands) = crossbeam_channel::unbounded();
        let settings = settings();
        let producer_log = Some(Arc::new(ProducerLog::new(settings.producer_log.clone())));
        let ctx = ProxyContext {
            preferred_replicas: replicas::PreferredReplicas::new(settings.metadata_refresh),
            derived_keepalive: crate::remap::groups::KeepAlive::new(settings.derived_offset_refresh),
            settings,
            mapper,
            producer_log,
            owner_cache: Default::default(),
            lookups: Default::default(),
            cluster,
            shared: Arc::new(Shared::new()),
            handle: LoopHandle::new(tx, waker),
        };
        let (socket, client_end) = loopback_pair();
        let session = Session::new(mio::Token(100), 0, Arc::new(socket));
        Harness { ctx, session, failures: Vec::new(), _poll: poll, _client_end: client_end }
    }

    /// Plan `body` as client request `api` v`version`, as the worker does.
    pub fn plan(&mut self, api: ApiKey, version: i16, body: &Struct<'_>) -> Planned {
        let frame = encode_request(api as i16, version, CLIENT_CORRELATION, Some("handler-test"), body).expect("encodable request");
        let (header, rest) = RequestHeader::parse(&frame).expect("a request header");
        let mut needs = Needs::new(&self.failures, 1);
        let plan = crate::proxy::requests::plan(&self.ctx, &mut self.session, &mut needs, &header, rest, &frame);
        Planned { plan, asked: needs.take() }
    }

    /// The client's answer a finish builds from `answers` (in part order);
    /// further stages are returned as they are.
    pub fn complete(&self, finish: Finish, api: ApiKey, version: i16, answers: Vec<Vec<u8>>) -> Step {
        crate::proxy::session::complete(finish, &self.ctx, api as i16, version, CLIENT_CORRELATION, answers).expect("a finish that completes")
    }
}

fn settings() -> ProxySettings {
    ProxySettings {
        listen: "127.0.0.1:0".parse().expect("an address"),
        advertised: BrokerAddr { host: ADVERTISED.0.into(), port: ADVERTISED.1 },
        bootstrap: Vec::new(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        metadata_refresh: Duration::from_secs(60),
        producer_log: LogSettings {
            topic: "__kpr_producer_ids".into(),
            idle: Duration::from_secs(7 * 24 * 3600),
            timeout: Duration::from_secs(5),
        },
        derived_offset_refresh: Duration::from_secs(24 * 3600),
        max_connections: 16,
        max_connections_per_ip: Default::default(),
        max_frame_bytes: 1 << 20,
        limits: Default::default(),
        max_in_flight_per_client: 64,
        workers: 1,
        shutdown_grace: Duration::from_secs(1),
        client_rack: None,
        listen_security: Default::default(),
        client_tls: None,
        upstream_tls: None,
        client_sasl: None,
        kafka_security: Default::default(),
    }
}

/// The proxy's end of a client connection, and the client's end.
fn loopback_pair() -> (SharedSocket, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let client_end = std::net::TcpStream::connect(listener.local_addr().expect("bound")).expect("a loopback connect");
    let (proxy_end, peer) = listener.accept().expect("accepted");
    proxy_end.set_nonblocking(true).expect("non-blocking");
    (SharedSocket::new(mio::net::TcpStream::from_std(proxy_end), mio::Token(100), peer), client_end)
}

/// The parts and finish of a plan that goes upstream.
pub fn forwarded(plan: Plan) -> (Vec<Part>, Finish) {
    match plan {
        Plan::Forward { parts, finish, .. } => (parts, finish),
        Plan::Answer(_) => panic!("answered at once, not forwarded"),
        Plan::Close(why) | Plan::Refuse { reason: why, .. } => panic!("closed, not forwarded: {why}"),
        Plan::AfterLookups => panic!("waiting for look-ups, not forwarded"),
        Plan::Relay(_) => panic!("a login relayed, not forwarded"),
    }
}

/// The parts and finish of a further stage.
pub fn more(step: Step) -> (Vec<Part>, Finish) {
    match step {
        Step::More { parts, finish } => (parts, finish),
        Step::Done(_) => panic!("done, no further stage"),
    }
}

pub fn done(step: Step) -> Vec<u8> {
    match step {
        Step::Done(bytes) => bytes,
        Step::More { .. } => panic!("a further stage, not done"),
    }
}

/// A request the proxy built for upstream, decoded.
pub fn request_of(part: &Part, api: ApiKey) -> Struct<'_> {
    let (header, body) = RequestHeader::parse(part.frame.bytes()).expect("a request header");
    assert_eq!(header.api_key, api as i16, "the part's API");
    assert_eq!(header.correlation_id, part.correlation_id, "the part's correlation id is in its frame");
    codec::decode(request_schema(api as i16).expect("declared"), header.api_version, body).expect("a decodable part")
}

/// A response body of `api` v`version` with every field at its zero value.
pub fn response(api: ApiKey, version: i16) -> Struct<'static> {
    codec::with_defaults(&response_schema(api as i16).expect("declared").body, version)
}

/// A request body of `api` v`version` with every field at its zero value.
pub fn request(api: ApiKey, version: i16) -> Struct<'static> {
    codec::with_defaults(&request_schema(api as i16).expect("declared").body, version)
}

/// A new element of the array `field` of `parent`.
pub fn element<'s>(parent: &'s StructSchema, field: Field<Array<Child>>, version: i16) -> Struct<'s> {
    codec::with_defaults(members(parent, field), version)
}

/// Per-partition entries of a canned answer, in the `list` array of
/// `parent`: one per (partition, offset), written with the API's own keys.
pub fn partition_entries(
    parent: &Struct<'static>,
    list: Field<Array<Child>>,
    index: Field<i32>,
    offset: Field<i64>,
    version: i16,
    rows: impl Iterator<Item = (i32, i64)>,
) -> Vec<Struct<'static>> {
    rows.map(|(partition, at)| {
        let mut e = element(parent.schema, list, version);
        e.write(index, partition);
        e.write(offset, at);
        e
    })
    .collect()
}

/// The canned answer to `part`, as the broker would frame it.
pub fn answer_to(part: &Part, api: ApiKey, version: i16, body: &Struct<'_>) -> Vec<u8> {
    encode_response(api as i16, version, part.correlation_id, &[], body).expect("an encodable answer")
}

/// Read a client answer back, checking it carries the client's correlation id.
pub fn read_answer(api: ApiKey, version: i16, bytes: &[u8]) -> Struct<'_> {
    let decoded = decode_response(api as i16, version, bytes).expect("a decodable client answer");
    assert_eq!(decoded.correlation_id, CLIENT_CORRELATION, "the client's correlation id");
    decoded.body
}
