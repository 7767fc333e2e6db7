//! A tiny in-process Kafka broker (as franz-go's kfake), speaking just
//! enough Kafka for the real proxy to start and pass produce requests
//! through: ApiVersions, Metadata, Produce, FindCoordinator. The proxy runs
//! in this process too (`Proxy::start` and `serve` on a thread), so these
//! session, ordering and failure tests need no Tansu. They never replace
//! the end-to-end tests: the broker knows only what is written here.
//!
//! The cluster: brokers 1 and 2; topic `t` with partition 0 led by broker
//! 1 and partition 1 by broker 2; topic `stalled`, led by broker 3, whose
//! address is a listener that never completes a connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kpr_proxy::cluster::BrokerAddr;
use kpr_proxy::kafka::api::ApiKey;
use kpr_proxy::kafka::codec::{self, Struct, Value};
use kpr_proxy::kafka::fields::kinds::{Array, Child, Field};
use kpr_proxy::kafka::fields::{members, metadata_response as md, produce_request as preq, produce_response as presp};
use kpr_proxy::kafka::header::RequestHeader;
use kpr_proxy::kafka::message::{encode_request, encode_response, request_schema, response_schema};
use kpr_proxy::kafka::schema::StructSchema;
use kpr_proxy::net::Shared;
use kpr_proxy::proxy::{Proxy, ProxySettings};
use kpr_proxy::remap::mapping::Mapper;
use kpr_proxy::remap::rules::MappingRules;

const PRODUCE_VERSION: i16 = 7;

/// How one fake broker answers produce requests; changed while it runs.
#[derive(Default)]
struct Behaviour {
    /// Milliseconds to wait before answering a produce.
    produce_delay_ms: AtomicU64,
    /// Close the connection on a produce instead of answering it.
    close_on_produce: AtomicBool,
    /// When each produce answer was written.
    answered_at: Mutex<Vec<Instant>>,
}

struct FakeBroker {
    addr: SocketAddr,
    behaviour: Arc<Behaviour>,
}

/// Where every broker is, as Metadata tells it.
type Brokers = Arc<Mutex<Vec<(i32, SocketAddr)>>>;

impl FakeBroker {
    fn start(brokers: Brokers) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let addr = listener.local_addr().expect("bound");
        let behaviour = Arc::new(Behaviour::default());
        let b = behaviour.clone();
        // Detached: blocked in accept until the test process ends.
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (b, brokers) = (b.clone(), brokers.clone());
                std::thread::spawn(move || serve_connection(conn, &b, &brokers));
            }
        });
        FakeBroker { addr, behaviour }
    }
}

fn read_frame(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).ok()?;
    let mut frame = vec![0; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut frame).ok()?;
    Some(frame)
}

fn write_frame(conn: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    conn.write_all(&(frame.len() as i32).to_be_bytes())?;
    conn.write_all(frame)
}

/// Answer requests in order, as a Kafka broker does on one connection.
fn serve_connection(mut conn: TcpStream, behaviour: &Behaviour, brokers: &Brokers) {
    while let Some(frame) = read_frame(&mut conn) {
        let Ok((header, body)) = RequestHeader::parse(&frame) else { return };
        let (api, version) = (header.api_key, header.api_version);
        let Some(schema) = request_schema(api) else { return };
        let Ok(request) = codec::decode(schema, version, body) else { return };
        let answer = match ApiKey::from_i16(api) {
            Some(ApiKey::ApiVersions) => api_versions(version),
            Some(ApiKey::Metadata) => metadata(version, &brokers.lock().unwrap()),
            Some(ApiKey::FindCoordinator) => find_coordinator(version, brokers.lock().unwrap()[0]),
            Some(ApiKey::Produce) => {
                if behaviour.close_on_produce.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(behaviour.produce_delay_ms.load(Ordering::SeqCst)));
                behaviour.answered_at.lock().unwrap().push(Instant::now());
                produced(version, &request)
            }
            _ => return,
        };
        let bytes = encode_response(api, version, header.correlation_id, &[], &answer).expect("an encodable answer");
        if write_frame(&mut conn, &bytes).is_err() {
            return;
        }
    }
}

fn element(parent: &'static StructSchema, field: Field<Array<Child>>, version: i16) -> Struct<'static> {
    codec::with_defaults(members(parent, field), version)
}

fn empty_response(api: ApiKey, version: i16) -> Struct<'static> {
    codec::with_defaults(&response_schema(api as i16).expect("declared").body, version)
}

fn api_versions(version: i16) -> Struct<'static> {
    use kpr_proxy::kafka::fields::api_versions_response::{self as av, api_keys};
    let mut body = empty_response(ApiKey::ApiVersions, version);
    let ranges = [(ApiKey::Produce, 3, PRODUCE_VERSION), (ApiKey::Metadata, 0, 9), (ApiKey::ApiVersions, 0, 3), (ApiKey::FindCoordinator, 0, 3)];
    let keys: Vec<Struct<'static>> = ranges
        .into_iter()
        .map(|(api, min, max)| {
            let mut k = element(body.schema, av::API_KEYS, version);
            k.write(api_keys::API_KEY, api as i16);
            k.write(api_keys::MIN_VERSION, min);
            k.write(api_keys::MAX_VERSION, max);
            k
        })
        .collect();
    body.write(av::API_KEYS, keys);
    body
}

fn metadata(version: i16, brokers: &[(i32, SocketAddr)]) -> Struct<'static> {
    use md::{brokers as b, topics as t};
    let mut body = empty_response(ApiKey::Metadata, version);
    let listed: Vec<Struct<'static>> = brokers
        .iter()
        .map(|(node, addr)| {
            let mut e = element(body.schema, md::BROKERS, version);
            e.write(b::NODE_ID, *node);
            e.write(b::HOST, addr.ip().to_string());
            e.write(b::PORT, addr.port() as i32);
            e
        })
        .collect();
    body.write(md::BROKERS, listed);
    body.write(md::CONTROLLER_ID, 1);
    let topics: Vec<Struct<'static>> = [("t", vec![1, 2]), ("stalled", vec![3])]
        .into_iter()
        .map(|(name, leaders)| {
            let mut topic = element(body.schema, md::TOPICS, version);
            topic.write(t::NAME, name);
            let partitions: Vec<Struct<'static>> = leaders
                .iter()
                .enumerate()
                .map(|(i, leader)| {
                    let mut p = element(topic.schema, t::PARTITIONS, version);
                    p.write(t::partitions::PARTITION_INDEX, i as i32);
                    p.write(t::partitions::LEADER_ID, *leader);
                    p.write(t::partitions::REPLICA_NODES, vec![Value::Int32(*leader)]);
                    p.write(t::partitions::ISR_NODES, vec![Value::Int32(*leader)]);
                    p
                })
                .collect();
            topic.write(t::PARTITIONS, partitions);
            topic
        })
        .collect();
    body.write(md::TOPICS, topics);
    body
}

fn find_coordinator(version: i16, (node, addr): (i32, SocketAddr)) -> Struct<'static> {
    use kpr_proxy::kafka::fields::find_coordinator_response as fc;
    let mut body = empty_response(ApiKey::FindCoordinator, version);
    body.write(fc::NODE_ID, node);
    body.write(fc::HOST, addr.ip().to_string());
    body.write(fc::PORT, addr.port() as i32);
    body
}

/// Every partition written, at offset 0.
fn produced(version: i16, request: &Struct<'_>) -> Struct<'static> {
    use presp::responses as r;
    let mut body = empty_response(ApiKey::Produce, version);
    let topics: Vec<Struct<'static>> = request
        .iter(preq::TOPIC_DATA)
        .map(|t| {
            let mut topic = element(body.schema, presp::RESPONSES, version);
            topic.write(r::NAME, t.read(preq::topic_data::NAME).unwrap_or_default().to_string());
            let partitions: Vec<Struct<'static>> = t
                .iter(preq::topic_data::PARTITION_DATA)
                .map(|p| {
                    let mut e = element(topic.schema, r::PARTITION_RESPONSES, version);
                    e.write(r::partition_responses::INDEX, p.read(preq::topic_data::partition_data::INDEX).unwrap_or(-1));
                    e
                })
                .collect();
            topic.write(r::PARTITION_RESPONSES, partitions);
            topic
        })
        .collect();
    body.write(presp::RESPONSES, topics);
    body
}

/// A listener whose accept queue is full and never drained: the kernel
/// drops further SYNs, so a connect to it never completes.
struct Unreachable {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Unreachable {
    fn start() -> Unreachable {
        extern "C" {
            fn listen(fd: i32, backlog: i32) -> i32;
        }
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        // std listens with a large backlog; shrink it so that it fills.
        // SAFETY: `listen` on a socket this function owns, no memory passed.
        assert_eq!(unsafe { listen(listener.as_raw_fd(), 0) }, 0, "listen(fd, 0)");
        let addr = listener.local_addr().expect("bound");
        let mut queued = Vec::new();
        while let Ok(conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            queued.push(conn);
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        Unreachable { addr, _listener: listener, _queued: queued }
    }
}

/// The proxy, serving on a thread, in front of two fake brokers and one
/// unreachable one.
struct Running {
    addr: SocketAddr,
    brokers: [FakeBroker; 2],
    shared: Arc<Shared>,
    handle: kpr_proxy::net::LoopHandle,
    serving: Option<JoinHandle<std::io::Result<()>>>,
    _unreachable: Unreachable,
}

impl Running {
    fn start(connect_timeout: Duration) -> Running {
        let addresses: Brokers = Default::default();
        let brokers = [FakeBroker::start(addresses.clone()), FakeBroker::start(addresses.clone())];
        let unreachable = Unreachable::start();
        *addresses.lock().unwrap() = vec![(1, brokers[0].addr), (2, brokers[1].addr), (3, unreachable.addr)];
        let listen = free_port();
        let settings = ProxySettings {
            listen,
            advertised: BrokerAddr { host: listen.ip().to_string(), port: listen.port() as i32 },
            bootstrap: vec![brokers[0].addr.to_string()],
            connect_timeout,
            request_timeout: Duration::from_secs(10),
            metadata_refresh: Duration::from_secs(300),
            producer_log: kpr_proxy::upstream::producer_log::LogSettings {
                topic: "__kpr_producer_ids".into(),
                idle: Duration::from_secs(3600),
                timeout: Duration::from_secs(5),
            },
            derived_offset_refresh: Duration::from_secs(3600),
            max_connections: 64,
            max_frame_bytes: 1 << 20,
            limits: Default::default(),
            max_in_flight_per_client: 64,
            // One worker: every client shares it, so one client's stall
            // would show in the others' answers.
            workers: 1,
            shutdown_grace: Duration::from_secs(1),
            client_rack: None,
            listen_security: Default::default(),
            kafka_security: Default::default(),
            client_tls: None,
            upstream_tls: None,
            client_sasl: None,
        };
        let shared = Arc::new(Shared::new());
        let mapper = Mapper::new(MappingRules::new(None, Vec::new()).expect("no rules"));
        let proxy = Proxy::start(settings, mapper, shared.clone()).expect("the proxy starts against the fake brokers");
        let handle = proxy.context().handle.clone();
        let serving = Some(std::thread::spawn(move || proxy.serve()));
        Running { addr: listen, brokers, shared, handle, serving, _unreachable: unreachable }
    }

    fn client(&self) -> TcpStream {
        let conn = TcpStream::connect(self.addr).expect("the proxy accepts");
        conn.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
        conn
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.handle.wake();
        if let Some(serving) = self.serving.take() {
            let _ = serving.join();
        }
    }
}

/// A port nothing listens on now (the proxy binds it right after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// Send a produce of one record batch to `topic` partition `partition`.
fn send_produce(conn: &mut TcpStream, correlation_id: i32, topic: &str, partition: i32) {
    use preq::topic_data as td;
    let batch = kpr_proxy::kafka::records::build_batch(
        &[kpr_proxy::kafka::records::RecordData { value: Some(b"v".to_vec()), ..Default::default() }],
        &Default::default(),
    );
    let mut body = codec::with_defaults(&request_schema(ApiKey::Produce as i16).expect("declared").body, PRODUCE_VERSION);
    body.write(preq::ACKS, 1i16);
    body.write(preq::TIMEOUT_MS, 5000);
    let mut t = element(body.schema, preq::TOPIC_DATA, PRODUCE_VERSION);
    t.write(td::NAME, topic.to_string());
    let mut p = element(t.schema, td::PARTITION_DATA, PRODUCE_VERSION);
    p.write(td::partition_data::INDEX, partition);
    p.write(td::partition_data::RECORDS, Some(std::borrow::Cow::Owned(batch)));
    t.write(td::PARTITION_DATA, vec![p]);
    body.write(preq::TOPIC_DATA, vec![t]);
    let frame = encode_request(ApiKey::Produce as i16, PRODUCE_VERSION, correlation_id, Some("fake-broker-test"), &body).expect("encodable");
    write_frame(conn, &frame).expect("the proxy reads");
}

/// The correlation id of the next answer; `None` when the proxy closed.
fn next_answer(conn: &mut TcpStream) -> Option<i32> {
    read_frame(conn).map(|f| i32::from_be_bytes(f[..4].try_into().expect("a correlation id")))
}

#[test]
fn answers_keep_the_client_order_across_brokers() {
    let proxy = Running::start(Duration::from_secs(2));
    proxy.brokers[0].behaviour.produce_delay_ms.store(300, Ordering::SeqCst);
    let mut client = proxy.client();
    send_produce(&mut client, 1, "t", 0); // broker 1, slow
    send_produce(&mut client, 2, "t", 1); // broker 2, at once
    assert_eq!((next_answer(&mut client), next_answer(&mut client)), (Some(1), Some(2)));
    let first_at = |b: &FakeBroker| b.behaviour.answered_at.lock().unwrap()[0];
    assert!(first_at(&proxy.brokers[1]) < first_at(&proxy.brokers[0]), "broker 2 answered first, the client still saw 1 then 2");
}

#[test]
fn a_broker_that_closes_mid_request_closes_only_that_client() {
    let proxy = Running::start(Duration::from_secs(2));
    proxy.brokers[1].behaviour.close_on_produce.store(true, Ordering::SeqCst);
    let (mut victim, mut bystander) = (proxy.client(), proxy.client());
    send_produce(&mut victim, 1, "t", 1);
    assert_eq!(next_answer(&mut victim), None, "the client whose broker closed is closed, as the broker's would be");
    send_produce(&mut bystander, 7, "t", 0);
    assert_eq!(next_answer(&mut bystander), Some(7), "another client is served");
}

#[test]
fn a_connect_that_never_completes_fails_that_client_only_after_the_timeout() {
    let timeout = Duration::from_millis(800);
    let proxy = Running::start(timeout);
    let mut bystander = proxy.client();
    let staller = std::thread::spawn({
        let mut client = proxy.client();
        move || {
            let started = Instant::now();
            send_produce(&mut client, 1, "stalled", 0);
            (next_answer(&mut client), started.elapsed())
        }
    });
    // While the stalled connect waits on the same (only) worker, the
    // bystander's produce requests keep being answered promptly.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let sent = Instant::now();
        send_produce(&mut bystander, 100 + i, "t", 0);
        assert_eq!(next_answer(&mut bystander), Some(100 + i));
        slowest = slowest.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(slowest < timeout / 2, "the bystander waited {slowest:?} behind the stalled connect");
    let (answer, waited) = staller.join().expect("the stalled client ends");
    assert_eq!(answer, None, "the client whose connect never completed is closed");
    assert!(waited >= timeout - Duration::from_millis(100), "closed after {waited:?}, before connection_timeout_ms");
    assert!(waited < timeout * 4, "closed only after {waited:?}");
}
