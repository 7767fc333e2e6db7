//! Where a request must go. Every broker is advertised at the proxy's own
//! address, so a client's choice of "broker" says nothing: the proxy reads
//! the request and sends it where Kafka needs it.

use crate::cluster::{Cluster, CoordinatorKind};
use crate::upstream::control::ControlClient;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The leader of a physical partition.
    Leader { topic: String, partition: i32 },
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
