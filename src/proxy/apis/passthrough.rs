//! Forwarding a request as the bytes that came: one part, the client's own
//! frame and correlation id, to a route read from the request's content.

use std::time::Duration;

use super::Request;
use crate::kafka::codec::{Struct, Value};
use crate::proxy::plan::{Finish, Part, PartFrame, Plan};
use crate::proxy::route::Route;
use crate::remap::addresses;
use crate::remap::split::Shape;

/// The client's frame to `route`, its answer finished by `finish`;
/// `broker_wait` is how long the broker may hold it on top of the request
/// timeout.
pub fn forward(r: &Request<'_, '_>, route: Route, broker_wait: Duration, finish: Finish) -> Plan {
    forward_expecting(r, route, broker_wait, true, finish)
}

/// `forward`, for a request the broker may not answer (Produce acks=0).
pub fn forward_expecting(r: &Request<'_, '_>, route: Route, broker_wait: Duration, expect_response: bool, finish: Finish) -> Plan {
    Plan::Forward {
        parts: vec![Part { route, frame: PartFrame::Original, correlation_id: r.header.correlation_id, broker_wait }],
        expect_response,
        finish,
    }
}

/// Any broker, answer as it came (DescribeTopicPartitions).
pub fn to_any(r: &mut Request<'_, '_>) -> Plan {
    forward(r, Route::Any, Duration::ZERO, Finish::AsIs)
}

/// The leader of the first partition named (`topics[].partitions[]`).
pub fn first_partition(req: &Struct<'_>, shape: &Shape) -> Route {
    req.iter(shape.topics)
        .find_map(|t| {
            let p = t.iter(shape.partitions).next()?;
            Some(Route::Leader { topic: t.read(shape.name)?.to_string(), partition: p.read(shape.index)? })
        })
        .unwrap_or(Route::Any)
}

/// The coordinator of `group`, or any broker when none is named.
pub fn group_route(group: Option<&str>) -> Route {
    group.map_or(Route::Any, |g| Route::Group(g.to_string()))
}

/// The coordinator of `transactional_id`, or any broker.
pub fn transaction_route(transactional_id: Option<&str>) -> Route {
    transactional_id.map_or(Route::Any, |t| Route::Transaction(t.to_string()))
}

pub fn first_str<'v>(items: &'v [Value<'_>]) -> Option<&'v str> {
    match items.first() {
        Some(Value::String(Some(s))) => Some(s),
        _ => None,
    }
}

pub fn first_i32(items: &[Value<'_>]) -> Option<i32> {
    match items.first() {
        Some(Value::Int32(i)) => Some(*i),
        _ => None,
    }
}

/// The answer as it came, but with broker addresses (leader hints, node
/// endpoints) pointing at the proxy when the version carries them.
pub fn endpoints_rewrite(has_endpoints: bool) -> Finish {
    if !has_endpoints {
        return Finish::AsIs;
    }
    Finish::Rewrite(Box::new(|ctx, _v, body| Ok(addresses::rewrite_brokers(body, &ctx.settings.advertised))))
}
