//! Admin APIs. Forwarded as they came: DeleteTopics and CreatePartitions to
//! the controller, DeleteRecords to the leader, configs to the broker they
//! name, DescribeCluster and DescribeProducers. On remapped topics,
//! CreatePartitions and DeleteRecords are refused per topic: more physical
//! partitions would move existing virtual partitions, and deleting a
//! physical partition's records would delete its siblings' too.

use std::time::Duration;

use log::warn;

use super::common::answer_or_defaults;
use super::passthrough::{first_i32, first_partition, forward};
use super::Request;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::message::{encode_response, response_schema};
use crate::proxy::plan::{single_request, Finish, Plan};
use crate::proxy::route::Route;
use crate::proxy::session::extra_wait;
use crate::proxy::ProxyContext;
use crate::remap::addresses;
use crate::remap::mapping::Decision;
use crate::remap::split::{self, Shape};

/// CreateTopics, DeleteTopics, CreatePartitions: to the controller, which
/// may take `timeout_ms`.
pub fn to_controller(r: &mut Request<'_, '_>) -> Plan {
    let wait = extra_wait(r.body.i32("timeout_ms").unwrap_or(0));
    forward(r, Route::Controller, wait, Finish::AsIs)
}

pub fn delete_records(r: &mut Request<'_, '_>) -> Plan {
    forward(r, first_partition(r.body, "topics", "name", "partitions", "partition_index"), Duration::ZERO, Finish::AsIs)
}

pub fn create_partitions_remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    refuse_remapped_topics(r, ApiKey::CreatePartitions, Route::Controller)
}

pub fn delete_records_remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    refuse_remapped_topics(r, ApiKey::DeleteRecords, Route::Any)
}

/// DescribeConfigs, IncrementalAlterConfigs.
pub fn configs(r: &mut Request<'_, '_>) -> Plan {
    forward(r, config_route(r.body), Duration::ZERO, Finish::AsIs)
}

/// Broker-level configs live on that broker; topic configs anywhere.
fn config_route(req: &Struct<'_>) -> Route {
    const BROKER: i8 = 4;
    const BROKER_LOGGER: i8 = 8;
    req.structs("resources")
        .find_map(|r| match r.i8("resource_type") {
            Some(BROKER | BROKER_LOGGER) => r.str("resource_name")?.parse().ok().map(Route::Broker),
            _ => None,
        })
        .unwrap_or(Route::Any)
}

/// The proxy stands for every broker.
pub fn describe_cluster(r: &mut Request<'_, '_>) -> Plan {
    let finish = Finish::Rewrite(Box::new(|ctx, _v, body| Ok(addresses::rewrite_brokers(body, &ctx.settings.advertised))));
    forward(r, Route::Any, Duration::ZERO, finish)
}

/// To the leader of the first partition named (offered only while no rule
/// remaps).
pub fn describe_producers(r: &mut Request<'_, '_>) -> Plan {
    let route = r
        .body
        .structs("topics")
        .next()
        .and_then(|t| Some(Route::Leader { topic: t.str("name")?.to_string(), partition: first_i32(t.array("partition_indexes"))? }))
        .unwrap_or(Route::Any);
    forward(r, route, Duration::ZERO, Finish::AsIs)
}

/// Requests whose every entry on a remapped topic must be refused
/// (CreatePartitions, DeleteRecords): the rest goes upstream, the refused
/// entries are answered here, in the client's order.
fn refuse_remapped_topics(r: &mut Request<'_, '_>, api: ApiKey, route: Route) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
    let version = header.api_version;
    let (topics_field, results_field) = match api {
        ApiKey::CreatePartitions => ("topics", "results"),
        _ => ("topics", "topics"),
    };
    let mut refused: Vec<String> = Vec::new();
    let mut kept = Vec::new();
    {
        let view = ctx.cluster.read();
        for t in req.structs(topics_field) {
            let name = t.str("name").unwrap_or_default();
            match ctx.mapper.decide(name, &view) {
                Decision::PassThrough => kept.push(Value::Struct(t.clone())),
                _ => refused.push(name.to_string()),
            }
        }
    }
    if refused.is_empty() {
        return None;
    }
    let reason = move |name: &str| match api {
        ApiKey::CreatePartitions => format!(
            "CreatePartitions on {name} is refused: it is a remapped topic, and more physical partitions would move its existing virtual partitions"
        ),
        _ => format!("DeleteRecords on {name} is refused: it is a remapped topic, and deleting records of a physical partition would delete other virtual partitions' data"),
    };
    for name in &refused {
        warn!("{} from {}: {}", api.name(), session.peer(), reason(name));
    }
    let names: Vec<(String, Vec<i32>)> = req
        .structs(topics_field)
        .map(|t| {
            let parts = t.structs("partitions").filter_map(|p| p.i32("partition_index")).collect();
            (t.str("name").unwrap_or_default().to_string(), parts)
        })
        .collect();
    let finish = move |_ctx: &ProxyContext, version: i16, corr: i32, answer: Option<&[u8]>| -> Result<Vec<u8>, String> {
        let schema = response_schema(api as i16).expect("declared");
        let resp = answer_or_defaults(api, version, answer)?;
        let ts = codec::element_schema(&schema.body, results_field);
        let mut out = Vec::new();
        for (name, parts) in &names {
            if refused.contains(name) {
                let mut t = codec::with_defaults(ts, version);
                t.set("name", Value::str(name.clone()));
                if api == ApiKey::CreatePartitions {
                    t.set("error_code", Value::Int16(error::INVALID_PARTITIONS));
                    t.set("error_message", Value::str(reason(name)));
                } else {
                    let ps = codec::element_schema(ts, "partitions");
                    let shape = Shape { topics: "topics", name: "name", partitions: "partitions", index: "partition_index" };
                    let entries = parts
                        .iter()
                        .map(|&p| Value::Struct(split::error_entry(ps, &shape, version, p, error::POLICY_VIOLATION, "")))
                        .collect();
                    t.set("partitions", Value::Array(Some(entries)));
                }
                out.push(Value::Struct(t));
            } else if let Some(t) = resp.structs(results_field).find(|t| t.str("name") == Some(name)) {
                out.push(Value::Struct(t.clone()));
            }
        }
        let mut body = resp.clone();
        body.set(results_field, Value::Array(Some(out)));
        encode_response(api as i16, version, corr, &[], &body).map_err(|e| e.to_string())
    };
    let mut out = req.clone();
    // DeleteRecords goes to the leader of what is left.
    let route = if api == ApiKey::DeleteRecords {
        kept.iter()
            .filter_map(Value::as_struct)
            .find_map(|t| {
                let p = t.structs("partitions").next()?.i32("partition_index")?;
                Some(Route::Leader { topic: t.str("name")?.to_string(), partition: p })
            })
            .unwrap_or(route)
    } else {
        route
    };
    let nothing_left = kept.is_empty();
    out.set(topics_field, Value::Array(Some(kept)));
    let wait = Duration::from_millis(req.i32("timeout_ms").unwrap_or(0).max(0) as u64);
    Some(single_request(
        ctx,
        session,
        header.client_id.as_deref(),
        api as i16,
        version,
        header.correlation_id,
        (!nothing_left).then_some(&out),
        route,
        wait,
        Box::new(finish),
    ))
}
