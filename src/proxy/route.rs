//! Where a request must go. Every broker is advertised at the proxy's own
//! address, so a client's choice of "broker" says nothing: the proxy reads
//! the request and sends it where Kafka needs it.

use crate::cluster::{Cluster, CoordinatorKind};
use crate::upstream::control::ControlClient;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The leader of a physical partition.
    Leader { topic: String, partition: i32 },
    /// The replica a partition's leader named as preferred for reading
    /// (KIP-392); the leader when that broker is unknown or unreachable.
    Replica { node: i32, topic: String, partition: i32 },
    /// The coordinator of a consumer group.
    Group(String),
    /// The coordinator of a transactional id.
    Transaction(String),
    /// The controller (topic creation and deletion).
    Controller,
    /// A specific broker (broker-level configs).
    Broker(i32),
    /// A broker address chosen earlier (the broker holding a fetch session).
    Address(String),
    /// Any broker.
    Any,
}

/// Resolve a route to a broker address. A route that cannot be resolved
/// (unknown leader, coordinator look-up failed) falls back to any broker:
/// that broker answers with the error Kafka would give (NOT_LEADER,
/// NOT_COORDINATOR), and the client refreshes and retries as it would
/// against Kafka.
pub fn resolve(
    route: &Route,
    cluster: &Cluster,
    control: &mut ControlClient,
    preferred_any: Option<&str>,
    attempt: usize,
) -> Option<String> {
    let node = match route {
        Route::Leader { topic, partition } => cluster.leader_of(topic, *partition),
        Route::Replica { node, topic, partition } => {
            match cluster.broker_addr(*node).filter(|addr| !cluster.recently_unreachable(addr)) {
                Some(addr) => return Some(addr),
                None => cluster.leader_of(topic, *partition),
            }
        }
        Route::Group(g) => coordinator(cluster, control, CoordinatorKind::Group, g),
        Route::Transaction(t) => coordinator(cluster, control, CoordinatorKind::Transaction, t),
        Route::Controller => {
            let id = cluster.read().controller_id;
            (id >= 0).then_some(id)
        }
        Route::Broker(id) => Some(*id),
        Route::Address(addr) => return Some(addr.clone()),
        Route::Any => None,
    };
    if let Some(addr) = node.and_then(|n| cluster.broker_addr(n)) {
        return Some(addr);
    }
    if let Some(addr) = preferred_any {
        return Some(addr.to_string());
    }
    cluster.any_broker(attempt).map(|(_, addr)| addr)
}

/// The route of a fetch of `topic`/`partition` from `rack`: the preferred
/// read replica while the leader's preference lasts, else the leader.
pub fn fetch_from(ctx: &super::ProxyContext, rack: Option<&str>, topic: String, partition: i32) -> Route {
    match rack.and_then(|rack| ctx.preferred_replicas.replica(rack, &topic, partition)) {
        Some(node) => Route::Replica { node, topic, partition },
        None => Route::Leader { topic, partition },
    }
}

/// Take in the preferred read replicas (and errors) of a fetch answer
/// given to a fetcher in `rack`, logging each new preference.
pub fn note_preferred_replicas(ctx: &super::ProxyContext, rack: &str, topic: &str, partition: &crate::kafka::codec::Struct<'_>) {
    let Some(index) = partition.i32("partition_index") else { return };
    let preferred = partition.i32("preferred_read_replica").unwrap_or(-1);
    let code = partition.i16("error_code").unwrap_or(0);
    if ctx.preferred_replicas.note(rack, topic, index, preferred, code) && preferred >= 0 {
        log::debug!(
            "Rack {rack}: fetching from preferred read replica {preferred} for {topic}[{index}] \
             (KIP-392) for {:?} or until it answers with an error",
            ctx.preferred_replicas.lease()
        );
    }
}

/// `note_preferred_replicas` for every partition of one topic of a fetch
/// answer (named, or by id).
pub fn note_fetch_topic(ctx: &super::ProxyContext, rack: &str, topic: &crate::kafka::codec::Struct<'_>) {
    let name = match topic.str("topic") {
        Some(name) => name.to_string(),
        None => match topic.uuid("topic_id").and_then(|id| ctx.cluster.topic_name(&id).or_else(|| ctx.mapper.remapped_name(&id))) {
            Some(name) => name,
            None => return,
        },
    };
    for p in topic.structs("partitions") {
        note_preferred_replicas(ctx, rack, &name, p);
    }
}

fn coordinator(cluster: &Cluster, control: &mut ControlClient, kind: CoordinatorKind, key: &str) -> Option<i32> {
    if let Some(n) = cluster.coordinator(kind, key) {
        return Some(n);
    }
    match control.find_coordinator(kind, key) {
        Ok(n) => Some(n),
        Err(e) => {
            log::debug!("Coordinator look-up for {key:?} failed: {e}");
            None
        }
    }
}
