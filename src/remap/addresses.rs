//! Broker addresses in responses are replaced by the proxy's advertised
//! address, so that every connection a client opens comes back through the
//! proxy. Node ids stay as they are: clients key brokers by id, and the
//! proxy routes by content, not by which "broker" the client picked.

use crate::cluster::BrokerAddr;
use crate::kafka::codec::{Struct, Value};

/// Set `host`/`port` of one endpoint struct; returns whether it changed.
pub fn rewrite_endpoint(s: &mut Struct<'_>, to: &BrokerAddr) -> bool {
    let same = s.str("host") == Some(to.host.as_str()) && s.i32("port") == Some(to.port);
    if same || !s.has_field("host") || matches!(s.get("host"), Value::Absent) {
        return false;
    }
    s.set("host", Value::str(to.host.clone()));
    s.set("port", Value::Int32(to.port));
    true
}

/// Rewrite every element of an array-of-endpoints field.
pub fn rewrite_endpoints(parent: &mut Struct<'_>, field: &str, to: &BrokerAddr) -> bool {
    let mut changed = false;
    for e in parent.structs_mut(field) {
        changed |= rewrite_endpoint(e, to);
    }
    changed
}

/// Metadata: `brokers`. DescribeCluster: `brokers`. Produce and Fetch
/// (KIP-951): `node_endpoints`.
pub fn rewrite_brokers(body: &mut Struct<'_>, to: &BrokerAddr) -> bool {
    let mut changed = false;
    for field in ["brokers", "node_endpoints"] {
        if body.has_field(field) {
            changed |= rewrite_endpoints(body, field, to);
        }
    }
    changed
}

/// FindCoordinator: the single coordinator (v0-3) or each of `coordinators`
/// (v4+). A coordinator that is not available (node -1, empty host) is left
/// as the broker said.
pub fn rewrite_coordinators(body: &mut Struct<'_>, to: &BrokerAddr) -> bool {
    let mut changed = false;
    if body.i32("node_id").is_some_and(|n| n >= 0) {
        changed |= rewrite_endpoint(body, to);
    }
    for c in body.structs_mut("coordinators") {
        if c.i32("node_id").is_some_and(|n| n >= 0) {
            changed |= rewrite_endpoint(c, to);
        }
    }
    changed
}
