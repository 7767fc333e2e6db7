//! Broker addresses in responses are replaced by the proxy's advertised
//! address, so that every connection a client opens comes back through the
//! proxy. Node ids stay as they are: clients key brokers by id, and the
//! proxy routes by content, not by which "broker" the client picked.

use crate::cluster::BrokerAddr;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::kinds::{Array, Child, Str};
use crate::kafka::fields::{find_coordinator_response as coordinator, metadata_response, produce_response, Field};

// An endpoint's fields have the same names in every message that has one
// (Metadata and DescribeCluster `brokers`, KIP-951 `node_endpoints`,
// FindCoordinator), each at its own position: these keys go by name.
const HOST: Field<Str> = metadata_response::brokers::HOST.by_name();
const PORT: Field<i32> = metadata_response::brokers::PORT.by_name();
const BROKERS: Field<Array<Child>> = metadata_response::BROKERS.by_name();
const NODE_ENDPOINTS: Field<Array<Child>> = produce_response::NODE_ENDPOINTS.by_name();

/// Set `host`/`port` of one endpoint struct; returns whether it changed.
pub fn rewrite_endpoint(s: &mut Struct<'_>, to: &BrokerAddr) -> bool {
    let same = s.read(HOST) == Some(to.host.as_str()) && s.read(PORT) == Some(to.port);
    if same || !s.has(HOST) || matches!(s.value(HOST), Value::Absent) {
        return false;
    }
    s.write(HOST, to.host.clone());
    s.write(PORT, to.port);
    true
}

/// Rewrite every element of an array-of-endpoints field.
pub fn rewrite_endpoints(parent: &mut Struct<'_>, field: Field<Array<Child>>, to: &BrokerAddr) -> bool {
    let mut changed = false;
    for e in parent.iter_mut(field) {
        changed |= rewrite_endpoint(e, to);
    }
    changed
}

/// Metadata: `brokers`. DescribeCluster: `brokers`. Produce and Fetch
/// (KIP-951): `node_endpoints`.
pub fn rewrite_brokers(body: &mut Struct<'_>, to: &BrokerAddr) -> bool {
    let mut changed = false;
    for field in [BROKERS, NODE_ENDPOINTS] {
        if body.has(field) {
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
    if body.read(coordinator::NODE_ID).is_some_and(|n| n >= 0) {
        changed |= rewrite_endpoint(body, to);
    }
    for c in body.iter_mut(coordinator::COORDINATORS) {
        if c.read(coordinator::coordinators::NODE_ID).is_some_and(|n| n >= 0) {
            changed |= rewrite_endpoint(c, to);
        }
    }
    changed
}
