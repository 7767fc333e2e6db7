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
use crate::kafka::api::{ApiKey, ErrorCode};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::kinds::{Array, Child, Str};
use crate::kafka::fields::{create_partitions_request, create_partitions_response, create_topics_request, describe_configs_request};
use crate::kafka::fields::{delete_records_request, delete_records_response, describe_producers_request, members, Field};
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
    // The three requests name it alike, each at its own position.
    const TIMEOUT_MS: Field<i32> = create_topics_request::TIMEOUT_MS.by_name();
    let wait = extra_wait(r.body.read(TIMEOUT_MS).unwrap_or(0));
    forward(r, Route::Controller, wait, Finish::AsIs)
}

const DELETE_RECORDS_REQUEST: Shape = {
    use delete_records_request::topics as t;
    Shape::of(delete_records_request::TOPICS, t::NAME, t::PARTITIONS, t::partitions::PARTITION_INDEX)
};
const DELETE_RECORDS_RESPONSE: Shape = {
    use delete_records_response::topics as t;
    Shape::of(delete_records_response::TOPICS, t::NAME, t::PARTITIONS, t::partitions::PARTITION_INDEX)
};

pub fn delete_records(r: &mut Request<'_, '_>) -> Plan {
    forward(r, first_partition(r.body, &DELETE_RECORDS_REQUEST), Duration::ZERO, Finish::AsIs)
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
/// IncrementalAlterConfigs lays out its resources as DescribeConfigs does.
fn config_route(req: &Struct<'_>) -> Route {
    use describe_configs_request::{resources, RESOURCES};
    const BROKER: i8 = 4;
    const BROKER_LOGGER: i8 = 8;
    req.iter(RESOURCES)
        .find_map(|r| match r.read(resources::RESOURCE_TYPE) {
            Some(BROKER | BROKER_LOGGER) => r.read(resources::RESOURCE_NAME)?.parse().ok().map(Route::Broker),
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
    use describe_producers_request::{topics, TOPICS};
    let route = r
        .body
        .iter(TOPICS)
        .next()
        .and_then(|t| Some(Route::Leader { topic: t.read(topics::NAME)?.to_string(), partition: first_i32(t.items(topics::PARTITION_INDEXES))? }))
        .unwrap_or(Route::Any);
    forward(r, route, Duration::ZERO, Finish::AsIs)
}

/// The fields `refuse_remapped_topics` reads of CreatePartitions and
/// DeleteRecords: the request's topics, their names and timeout, and the
/// answer's topic results.
struct Refusable {
    topics: Field<Array<Child>>,
    name: Field<Str>,
    timeout_ms: Field<i32>,
    results: Field<Array<Child>>,
    result_name: Field<Str>,
}

const CREATE_PARTITIONS: Refusable = Refusable {
    topics: create_partitions_request::TOPICS,
    name: create_partitions_request::topics::NAME,
    timeout_ms: create_partitions_request::TIMEOUT_MS,
    results: create_partitions_response::RESULTS,
    result_name: create_partitions_response::results::NAME,
};

const DELETE_RECORDS: Refusable = Refusable {
    topics: DELETE_RECORDS_REQUEST.topics,
    name: DELETE_RECORDS_REQUEST.name,
    timeout_ms: delete_records_request::TIMEOUT_MS,
    results: DELETE_RECORDS_RESPONSE.topics,
    result_name: DELETE_RECORDS_RESPONSE.name,
};

/// Requests whose every entry on a remapped topic must be refused
/// (CreatePartitions, DeleteRecords): the rest goes upstream, the refused
/// entries are answered here, in the client's order.
fn refuse_remapped_topics(r: &mut Request<'_, '_>, api: ApiKey, route: Route) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
    let version = header.api_version;
    let keys = match api {
        ApiKey::CreatePartitions => &CREATE_PARTITIONS,
        _ => &DELETE_RECORDS,
    };
    let mut refused: Vec<String> = Vec::new();
    let mut kept = Vec::new();
    {
        let view = ctx.cluster.read();
        for t in req.iter(keys.topics) {
            let name = t.read(keys.name).unwrap_or_default();
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
    // Only DeleteRecords names partitions.
    let names: Vec<(String, Vec<i32>)> = req
        .iter(keys.topics)
        .map(|t| {
            let parts = match api {
                ApiKey::DeleteRecords => t.iter(DELETE_RECORDS_REQUEST.partitions).filter_map(|p| p.read(DELETE_RECORDS_REQUEST.index)).collect(),
                _ => Vec::new(),
            };
            (t.read(keys.name).unwrap_or_default().to_string(), parts)
        })
        .collect();
    let finish = move |_ctx: &ProxyContext, version: i16, corr: i32, answer: Option<&[u8]>| -> Result<Vec<u8>, String> {
        let schema = response_schema(api as i16).expect("declared");
        let resp = answer_or_defaults(api, version, answer)?;
        let ts = members(&schema.body, keys.results);
        let mut out = Vec::new();
        for (name, parts) in &names {
            if refused.contains(name) {
                let mut t = codec::with_defaults(ts, version);
                t.write(keys.result_name, name.clone());
                if api == ApiKey::CreatePartitions {
                    use create_partitions_response::results;
                    t.write(results::ERROR_CODE, ErrorCode::INVALID_PARTITIONS);
                    t.write(results::ERROR_MESSAGE, reason(name));
                } else {
                    let shape = &DELETE_RECORDS_RESPONSE;
                    let ps = members(ts, shape.partitions);
                    let entries: Vec<Value> =
                        parts.iter().map(|&p| Value::Struct(split::error_entry(ps, shape, version, p, ErrorCode::POLICY_VIOLATION, ""))).collect();
                    t.write(shape.partitions, entries);
                }
                out.push(Value::Struct(t));
            } else if let Some(t) = resp.iter(keys.results).find(|t| t.read(keys.result_name) == Some(name)) {
                out.push(Value::Struct(t.clone()));
            }
        }
        let mut body = resp.clone();
        body.write(keys.results, out);
        encode_response(api as i16, version, corr, &[], &body).map_err(|e| e.to_string())
    };
    let mut out = req.clone();
    // DeleteRecords goes to the leader of what is left.
    let route = if api == ApiKey::DeleteRecords {
        kept.iter()
            .filter_map(Value::as_struct)
            .find_map(|t| {
                let p = t.iter(DELETE_RECORDS_REQUEST.partitions).next()?.read(DELETE_RECORDS_REQUEST.index)?;
                Some(Route::Leader { topic: t.read(keys.name)?.to_string(), partition: p })
            })
            .unwrap_or(route)
    } else {
        route
    };
    let nothing_left = kept.is_empty();
    out.write(keys.topics, kept);
    let wait = Duration::from_millis(req.read(keys.timeout_ms).unwrap_or(0).max(0) as u64);
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
