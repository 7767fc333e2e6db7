//! What the proxy knows about the upstream cluster: brokers, topics and
//! their partitions (physical), coordinators, and the API versions the
//! brokers speak. Every thread reads it; it is updated from the proxy's own
//! metadata refreshes and from every Metadata and FindCoordinator response
//! that passes through on a client's behalf.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::cache::Generations;
use crate::kafka::api::ErrorCode;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::kinds::Array;
use crate::kafka::fields::metadata_response::topics::{self as topic_f, partitions as partition_f};
use crate::kafka::fields::metadata_response::{self as metadata, brokers};
use crate::kafka::fields::Field;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: i32,
}

impl BrokerAddr {
    pub fn to_addr_string(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionInfo {
    pub error_code: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicInfo {
    pub id: [u8; 16],
    pub internal: bool,
    /// Physical partitions by index.
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Default)]
pub struct ClusterView {
    pub brokers: HashMap<i32, BrokerAddr>,
    pub controller_id: i32,
    pub cluster_id: Option<String>,
    pub topics: HashMap<String, TopicInfo>,
    pub topic_names: HashMap<[u8; 16], String>,
    /// Bounded: groups come and go (and each has derived groups).
    pub group_coordinators: Generations<String, i32>,
    pub txn_coordinators: Generations<String, i32>,
    /// Upstream API version ranges, intersected over the brokers seen.
    pub api_versions: HashMap<i16, (i16, i16)>,
}

pub struct Cluster {
    view: RwLock<ClusterView>,
    pub bootstrap: Vec<String>,
    /// Addresses whose last connections failed (or misbehaved): how many
    /// times in a row, and until when new attempts fail fast instead of
    /// stalling a worker again (`upstream::connect::reconnect_backoff`).
    unreachable: Mutex<HashMap<String, (u32, Instant)>>,
    /// Topics (by name or id) the cluster said do not exist, and until when
    /// not to ask again.
    missing: Mutex<Generations<TopicRef, Instant>>,
}

/// A topic as a request names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TopicRef {
    Name(String),
    Id([u8; 16]),
}

/// How long a topic the cluster does not have is not asked about again.
pub const MISSING_TOPIC_TTL: Duration = Duration::from_secs(1);

/// Key types of FindCoordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    Group = 0,
    Transaction = 1,
}

impl Cluster {
    pub fn new(bootstrap: Vec<String>) -> Cluster {
        Cluster {
            view: RwLock::new(ClusterView::default()),
            bootstrap,
            unreachable: Mutex::new(HashMap::new()),
            missing: Mutex::new(Generations::new(10_000)),
        }
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, ClusterView> {
        self.view.read()
    }

    pub fn write(&self) -> parking_lot::RwLockWriteGuard<'_, ClusterView> {
        self.view.write()
    }

    pub fn broker_addr(&self, id: i32) -> Option<String> {
        self.view.read().brokers.get(&id).map(BrokerAddr::to_addr_string)
    }

    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        let view = self.view.read();
        let p = view.topics.get(topic)?.partitions.get(usize::try_from(partition).ok()?)?;
        (p.leader >= 0).then_some(p.leader)
    }

    /// Forget a topic's leaders after a broker said it leads no longer, so
    /// the next call asks the cluster.
    pub fn forget_leader(&self, topic: &str) {
        if let Some(t) = self.view.write().topics.get_mut(topic) {
            for p in &mut t.partitions {
                p.leader = -1;
            }
        }
    }

    pub fn topic_name(&self, id: &[u8; 16]) -> Option<String> {
        self.view.read().topic_names.get(id).cloned()
    }

    pub fn coordinator(&self, kind: CoordinatorKind, key: &str) -> Option<i32> {
        let view = self.view.read();
        match kind {
            CoordinatorKind::Group => view.group_coordinators.peek(key).copied(),
            CoordinatorKind::Transaction => view.txn_coordinators.peek(key).copied(),
        }
    }

    pub fn set_coordinator(&self, kind: CoordinatorKind, key: &str, node: i32) {
        let mut view = self.view.write();
        let map = match kind {
            CoordinatorKind::Group => &mut view.group_coordinators,
            CoordinatorKind::Transaction => &mut view.txn_coordinators,
        };
        map.insert(key.to_string(), node);
    }

    pub fn forget_coordinator(&self, kind: CoordinatorKind, key: &str) {
        let mut view = self.view.write();
        match kind {
            CoordinatorKind::Group => view.group_coordinators.remove(key),
            CoordinatorKind::Transaction => view.txn_coordinators.remove(key),
        };
    }

    /// Upstream's version range for an API, if the cluster supports it.
    pub fn upstream_versions(&self, api_key: i16) -> Option<(i16, i16)> {
        self.view.read().api_versions.get(&api_key).copied()
    }

    pub fn set_api_versions(&self, versions: HashMap<i16, (i16, i16)>) {
        self.view.write().api_versions = versions;
    }

    /// Any broker address to send a broker-agnostic request to: a known
    /// broker, else a bootstrap server. `attempt` rotates through them.
    pub fn any_broker(&self, attempt: usize) -> Option<(Option<i32>, String)> {
        let view = self.view.read();
        let mut ids: Vec<i32> = view.brokers.keys().copied().collect();
        ids.sort_unstable();
        if !ids.is_empty() {
            let id = ids[attempt % ids.len()];
            return Some((Some(id), view.brokers[&id].to_addr_string()));
        }
        drop(view);
        if self.bootstrap.is_empty() {
            return None;
        }
        Some((None, self.bootstrap[attempt % self.bootstrap.len()].clone()))
    }

    pub fn note_missing(&self, topic: &str) {
        self.note_missing_ref(TopicRef::Name(topic.to_string()));
    }

    pub fn note_missing_id(&self, id: [u8; 16]) {
        self.note_missing_ref(TopicRef::Id(id));
    }

    fn note_missing_ref(&self, topic: TopicRef) {
        self.missing.lock().insert(topic, Instant::now() + MISSING_TOPIC_TTL);
    }

    fn recently_missing(&self, topic: &TopicRef, now: Instant) -> bool {
        self.missing.lock().peek(topic).is_some_and(|until| now < *until)
    }

    /// The names among `topics` the view does not know and that were not
    /// just found missing: worth a metadata request.
    pub fn unknown_topics<'t>(&self, topics: impl Iterator<Item = &'t str>) -> Vec<String> {
        let view = self.view.read();
        let now = Instant::now();
        let mut out: Vec<String> = Vec::new();
        for t in topics {
            if !view.topics.contains_key(t)
                && !self.recently_missing(&TopicRef::Name(t.to_string()), now)
                && !out.iter().any(|o| o == t)
            {
                out.push(t.to_string());
            }
        }
        out
    }

    /// The topic ids among `ids` the view does not know and that were not
    /// just found missing: worth a metadata request for all topics.
    pub fn unknown_topic_ids(&self, ids: impl Iterator<Item = [u8; 16]>) -> Vec<[u8; 16]> {
        let view = self.view.read();
        let now = Instant::now();
        let mut out: Vec<[u8; 16]> = Vec::new();
        for id in ids {
            if id != [0; 16]
                && !view.topic_names.contains_key(&id)
                && !self.recently_missing(&TopicRef::Id(id), now)
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    /// A connection to `addr` failed or the broker misbehaved on it: new
    /// attempts fail fast for a backoff that doubles with each failure in
    /// a row (Kafka's reconnect.backoff.ms to reconnect.backoff.max.ms).
    pub fn mark_unreachable(&self, addr: &str) {
        let mut map = self.unreachable.lock();
        let failures = map.get(addr).map_or(0, |(n, _)| *n).saturating_add(1);
        let until = Instant::now() + crate::upstream::connect::reconnect_backoff(failures);
        map.insert(addr.to_string(), (failures, until));
    }

    /// A connection to `addr` worked (an answer came): the backoff starts
    /// over at its shortest.
    pub fn mark_reachable(&self, addr: &str) {
        let mut map = self.unreachable.lock();
        if !map.is_empty() {
            map.remove(addr);
        }
    }

    pub fn recently_unreachable(&self, addr: &str) -> bool {
        self.unreachable.lock().get(addr).is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// Take in a Metadata response body. Brokers and the controller are
    /// replaced only by a response that lists brokers; topics listed replace
    /// what was known of them, topics not listed stay (a client may ask for
    /// a subset).
    pub fn apply_metadata(&self, body: &Struct<'_>) {
        let mut view = self.view.write();
        let brokers: HashMap<i32, BrokerAddr> = body
            .iter(metadata::BROKERS)
            .filter_map(|b| {
                let addr = BrokerAddr { host: b.read(brokers::HOST)?.to_string(), port: b.read(brokers::PORT)? };
                Some((b.read(brokers::NODE_ID)?, addr))
            })
            .collect();
        if !brokers.is_empty() {
            view.brokers = brokers;
        }
        if let Some(c) = body.read(metadata::CONTROLLER_ID) {
            view.controller_id = c;
        }
        if let Some(id) = body.read(metadata::CLUSTER_ID) {
            view.cluster_id = Some(id.to_string());
        }
        for t in body.iter(metadata::TOPICS) {
            let Some(name) = t.read(topic_f::NAME) else { continue };
            let error = ErrorCode::from_code(t.read(topic_f::ERROR_CODE).unwrap_or(0));
            if error == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
                if let Some(old) = view.topics.remove(name) {
                    view.topic_names.remove(&old.id);
                }
                continue;
            }
            if error.is_error() {
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = Vec::new();
            for p in t.iter(topic_f::PARTITIONS) {
                let Some(index) = p.read(partition_f::PARTITION_INDEX).and_then(|i| usize::try_from(i).ok()) else { continue };
                if partitions.len() <= index {
                    partitions.resize(index + 1, PartitionInfo { leader: -1, ..Default::default() });
                }
                partitions[index] = PartitionInfo {
                    error_code: p.read(partition_f::ERROR_CODE).unwrap_or(0),
                    leader: p.read(partition_f::LEADER_ID).unwrap_or(-1),
                    leader_epoch: p.read(partition_f::LEADER_EPOCH).unwrap_or(-1),
                    replicas: int32s(p, partition_f::REPLICA_NODES),
                    isr: int32s(p, partition_f::ISR_NODES),
                    offline: int32s(p, partition_f::OFFLINE_REPLICAS),
                };
            }
            let id = t.read(topic_f::TOPIC_ID).unwrap_or([0; 16]);
            let internal = t.read(topic_f::IS_INTERNAL) == Some(true) || name.starts_with("__");
            if id != [0; 16] {
                view.topic_names.insert(id, name.to_string());
            }
            view.topics.insert(name.to_string(), TopicInfo { id, internal, partitions });
        }
    }
}

fn int32s(s: &Struct<'_>, field: Field<Array<i32>>) -> Vec<i32> {
    s.items(field)
        .iter()
        .filter_map(|v| match v {
            Value::Int32(i) => Some(*i),
            _ => None,
        })
        .collect()
}
