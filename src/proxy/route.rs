//! Where a request must go. Every broker is advertised at the proxy's own
//! address, so a client's choice of "broker" says nothing: the proxy reads
//! the request and sends it where Kafka needs it.

use crate::cluster::{Cluster, CoordinatorKind};
use crate::kafka::api::{api_name, error};
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::fetch_response::responses as topic;
use crate::kafka::message::decode_response;
use super::lookups::{Lookup, Needs};

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

/// Where a route leads now.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Addr(String),
    /// Its coordinator is being looked up (asked in the `Needs`).
    LookUpFirst,
    /// No broker address is known at all.
    Nowhere,
}

/// Resolve a route to a broker address, without waiting: a coordinator
/// the proxy does not know is asked for in `needs`. A route that cannot
/// be resolved (unknown leader, coordinator look-up failed) falls back to
/// any broker: that broker answers with the error Kafka would give
/// (NOT_LEADER, NOT_COORDINATOR), and the client refreshes and retries as
/// it would against Kafka.
pub fn resolve(route: &Route, cluster: &Cluster, needs: &mut Needs<'_>, preferred_any: Option<&str>, attempt: usize) -> Target {
    let node = match route {
        Route::Leader { topic, partition } => cluster.leader_of(topic, *partition),
        Route::Replica { node, topic, partition } => {
            match cluster.broker_addr(*node).filter(|addr| !cluster.recently_unreachable(addr)) {
                Some(addr) => return Target::Addr(addr),
                None => cluster.leader_of(topic, *partition),
            }
        }
        Route::Group(_) | Route::Transaction(_) => {
            let (kind, key) = coordinator_key(route).expect("a coordinator route");
            match cluster.coordinator(kind, key) {
                Some(node) => Some(node),
                None => match needs.ask(Lookup::Coordinator(kind, key.to_string())) {
                    Ok(()) => return Target::LookUpFirst,
                    Err(why) => {
                        log::debug!("Coordinator look-up for {key:?} failed: {why}");
                        None
                    }
                },
            }
        }
        Route::Controller => {
            let id = cluster.read().controller_id;
            (id >= 0).then_some(id)
        }
        Route::Broker(id) => Some(*id),
        Route::Address(addr) => return Target::Addr(addr.clone()),
        Route::Any => None,
    };
    if let Some(addr) = node.and_then(|n| cluster.broker_addr(n)) {
        return Target::Addr(addr);
    }
    if let Some(addr) = preferred_any {
        return Target::Addr(addr.to_string());
    }
    cluster.any_broker(attempt).map_or(Target::Nowhere, |(_, addr)| Target::Addr(addr))
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
    let Some(index) = partition.read(topic::partitions::PARTITION_INDEX) else { return };
    let preferred = partition.read(topic::partitions::PREFERRED_READ_REPLICA).unwrap_or(-1);
    let code = partition.read(topic::partitions::ERROR_CODE).unwrap_or(0);
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
    let name = match topic.read(topic::TOPIC) {
        Some(name) => name.to_string(),
        None => match topic.read(topic::TOPIC_ID).and_then(|id| ctx.cluster.topic_name(&id).or_else(|| ctx.mapper.remapped_name(&id))) {
            Some(name) => name,
            None => return,
        },
    };
    for p in topic.iter(topic::PARTITIONS) {
        note_preferred_replicas(ctx, rack, &name, p);
    }
}

/// The coordinator a route goes to: (kind, group or transactional id).
pub fn coordinator_key(route: &Route) -> Option<(CoordinatorKind, &str)> {
    match route {
        Route::Group(g) => Some((CoordinatorKind::Group, g)),
        Route::Transaction(t) => Some((CoordinatorKind::Transaction, t)),
        _ => None,
    }
}

/// Whether an answer's error says the coordinator is elsewhere or gone, so
/// that it must be looked up again: Kafka's clients mark the coordinator
/// unknown on these (AbstractCoordinator and ConsumerCoordinator for
/// groups, TransactionManager for transactions), and also when the
/// connection to it fails.
pub fn coordinator_moved(code: i16) -> bool {
    matches!(code, error::NOT_COORDINATOR | error::COORDINATOR_NOT_AVAILABLE)
}

/// Whether an answer's error is worth retrying at a coordinator: moved, or
/// still loading its state (COORDINATOR_LOAD_IN_PROGRESS: same node, later).
pub fn coordinator_retriable(code: i16) -> bool {
    coordinator_moved(code) || code == error::COORDINATOR_LOAD_IN_PROGRESS
}

/// The first coordinator error (`coordinator_retriable`) anywhere in an
/// answer: top level, per group, per partition. `None` when there is none,
/// or the answer cannot be read (then it goes to the client as it is).
pub fn coordinator_error(api_key: i16, version: i16, answer: &[u8]) -> Option<i16> {
    let decoded = decode_response(api_key, version, answer).ok()?;
    first_coordinator_error(&decoded.body)
}

fn first_coordinator_error(s: &Struct<'_>) -> Option<i16> {
    s.schema.fields.iter().zip(&s.fields).find_map(|(f, v)| match v {
        Value::Int16(code) if f.name.ends_with("error_code") && coordinator_retriable(*code) => Some(*code),
        Value::Struct(inner) => first_coordinator_error(inner),
        Value::Array(Some(items)) => items.iter().find_map(|i| i.as_struct().and_then(first_coordinator_error)),
        _ => None,
    })
}

/// Take in the answer of a request sent to a coordinator: one that says
/// the coordinator moved makes the proxy forget it, so the next request
/// for that key looks it up again instead of going to the old node
/// forever. Returns the answer's coordinator error, if any.
pub fn note_coordinator_answer(
    cluster: &Cluster,
    coordinator: (CoordinatorKind, &str),
    api_key: i16,
    version: i16,
    answer: &[u8],
) -> Option<i16> {
    let code = coordinator_error(api_key, version, answer)?;
    if coordinator_moved(code) {
        log::debug!("Coordinator of {:?} moved (error {code} from {}): looking it up again", coordinator.1, api_name(api_key));
        cluster.forget_coordinator(coordinator.0, coordinator.1);
    }
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::api::ApiKey;
    use crate::kafka::codec;
    use crate::kafka::fields::{end_txn_response, members, offset_commit_response as commit};
    use crate::kafka::message::{encode_response, response_schema};

    /// An OffsetCommit v8 answer (flexible) for one partition.
    fn offset_commit_answer(code: i16) -> Vec<u8> {
        let (api, version) = (ApiKey::OffsetCommit as i16, 8);
        let schema = &response_schema(api).unwrap().body;
        let ts = members(schema, commit::TOPICS);
        let ps = members(ts, commit::topics::PARTITIONS);
        let mut p = codec::with_defaults(ps, version);
        p.write(commit::topics::partitions::PARTITION_INDEX, 3);
        p.write(commit::topics::partitions::ERROR_CODE, code);
        let mut t = codec::with_defaults(ts, version);
        t.write(commit::topics::NAME, "events");
        t.write(commit::topics::PARTITIONS, vec![Value::Struct(p)]);
        let mut body = codec::with_defaults(schema, version);
        body.write(commit::TOPICS, vec![Value::Struct(t)]);
        encode_response(api, version, 7, &[], &body).unwrap()
    }

    /// An EndTxn v3 answer (top-level error code).
    fn end_txn_answer(code: i16) -> Vec<u8> {
        let (api, version) = (ApiKey::EndTxn as i16, 3);
        let mut body = codec::with_defaults(&response_schema(api).unwrap().body, version);
        body.write(end_txn_response::ERROR_CODE, code);
        encode_response(api, version, 7, &[], &body).unwrap()
    }

    #[test]
    fn coordinator_errors_are_found_at_any_depth() {
        let api = ApiKey::OffsetCommit as i16;
        assert_eq!(coordinator_error(api, 8, &offset_commit_answer(error::NOT_COORDINATOR)), Some(error::NOT_COORDINATOR));
        assert_eq!(
            coordinator_error(api, 8, &offset_commit_answer(error::COORDINATOR_LOAD_IN_PROGRESS)),
            Some(error::COORDINATOR_LOAD_IN_PROGRESS)
        );
        assert_eq!(coordinator_error(api, 8, &offset_commit_answer(error::NONE)), None);
        // Other errors are the client's business.
        assert_eq!(coordinator_error(api, 8, &offset_commit_answer(error::ILLEGAL_GENERATION)), None);
        // An answer that cannot be read is not taken for a coordinator error.
        assert_eq!(coordinator_error(api, 8, &[0, 0, 0, 7, 9]), None);
    }

    #[test]
    fn a_group_coordinator_that_moved_is_forgotten() {
        let cluster = Cluster::new(Vec::new());
        let key = "orders.kpr-vp-k2";
        cluster.set_coordinator(CoordinatorKind::Group, key, 1);
        let api = ApiKey::OffsetCommit as i16;
        let answer = offset_commit_answer(error::NONE);
        assert_eq!(note_coordinator_answer(&cluster, (CoordinatorKind::Group, key), api, 8, &answer), None);
        assert_eq!(cluster.coordinator(CoordinatorKind::Group, key), Some(1), "kept after a good answer");
        let answer = offset_commit_answer(error::NOT_COORDINATOR);
        assert_eq!(note_coordinator_answer(&cluster, (CoordinatorKind::Group, key), api, 8, &answer), Some(error::NOT_COORDINATOR));
        assert_eq!(cluster.coordinator(CoordinatorKind::Group, key), None, "forgotten after NOT_COORDINATOR");
    }

    /// Kafka's TransactionManager looks the transaction coordinator up again
    /// on NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE, and retries on
    /// COORDINATOR_LOAD_IN_PROGRESS without doing so.
    #[test]
    fn a_transaction_coordinator_is_forgotten_by_the_same_rule() {
        let cluster = Cluster::new(Vec::new());
        let txn = (CoordinatorKind::Transaction, "txn-1");
        let api = ApiKey::EndTxn as i16;
        for (code, forgotten) in [
            (error::NONE, false),
            (error::COORDINATOR_LOAD_IN_PROGRESS, false),
            (error::NOT_COORDINATOR, true),
            (error::COORDINATOR_NOT_AVAILABLE, true),
        ] {
            cluster.set_coordinator(txn.0, txn.1, 2);
            note_coordinator_answer(&cluster, txn, api, 3, &end_txn_answer(code));
            let left = cluster.coordinator(txn.0, txn.1);
            assert_eq!(left.is_none(), forgotten, "error {code}: coordinator left {left:?}");
            // A group of the same name is another key space.
            assert_eq!(cluster.coordinator(CoordinatorKind::Group, txn.1), None);
        }
    }

    #[test]
    fn only_coordinator_routes_name_a_coordinator() {
        assert_eq!(coordinator_key(&Route::Group("g".into())), Some((CoordinatorKind::Group, "g")));
        assert_eq!(coordinator_key(&Route::Transaction("t".into())), Some((CoordinatorKind::Transaction, "t")));
        assert_eq!(coordinator_key(&Route::Any), None);
        assert_eq!(coordinator_key(&Route::Leader { topic: "t".into(), partition: 0 }), None);
    }
}
