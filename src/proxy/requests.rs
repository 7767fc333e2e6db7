//! One function decides, per API, what happens to a client request: where
//! it goes, whether it is rewritten, and how its answer comes back.

use std::cell::Cell;
use std::time::Duration;

use super::lookups::{Lookup, Needs};
use super::plan::{Finish, Part, PartFrame, Plan};
use super::route::Route;
use super::session::{extra_wait, Session};
use super::ProxyContext;
use crate::cluster::CoordinatorKind;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{encode_response, request_schema, response_schema};
use crate::kafka::schema::registry;
use crate::remap::addresses;

/// APIs the proxy never offers: brokers' SASL needs the security layer
/// (not built yet), and KIP-848's group heartbeat would have the broker
/// assign physical partitions.
const NOT_OFFERED: &[ApiKey] = &[ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];

/// APIs that name partitions but whose virtual ↔ physical mapping is not
/// built: left out while any rule remaps, rather than passed through blind.
/// Clients fall back (the Java admin describes topics through Metadata).
const NOT_REMAPPED: &[ApiKey] = &[ApiKey::DescribeProducers, ApiKey::DescribeTopicPartitions];

/// The versions of an API the proxy offers clients: what it handles,
/// intersected with what the cluster speaks. `None`: not offered.
pub fn offered_versions(ctx: &ProxyContext, api: ApiKey) -> Option<(i16, i16)> {
    if NOT_OFFERED.contains(&api) {
        return None;
    }
    if ctx.mapper.remaps_anything() && NOT_REMAPPED.contains(&api) {
        return None;
    }
    let ours = registry().supported_versions(api as i16)?;
    if api == ApiKey::ApiVersions {
        // Answered by the proxy itself.
        return Some((ours.min, ours.max));
    }
    let (umin, umax) = ctx.cluster.upstream_versions(api as i16)?;
    let (min, max) = (ours.min.max(umin), ours.max.min(umax));
    (min <= max).then_some((min, max))
}

pub fn plan(
    ctx: &ProxyContext,
    session: &mut Session,
    needs: &mut Needs<'_>,
    header: &RequestHeader<'_>,
    body: &[u8],
    frame: &[u8],
) -> Plan {
    let Some(api) = header.api() else {
        return Plan::Close(format!("unknown API key {}", header.api_key));
    };
    let version = header.api_version;
    if api == ApiKey::ApiVersions {
        return Plan::Answer(api_versions_response(ctx, version, header.correlation_id));
    }
    match offered_versions(ctx, api) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        Some(_) if api == ApiKey::Produce && version < 3 => {
            return Plan::Close(format!(
                "Produce v{version} carries record formats older than v2, which kpr-proxy does not accept (use a Kafka 0.11+ client)"
            ))
        }
        _ => return Plan::Close(format!("{} v{version} is not offered by this proxy", api.name())),
    }
    let schema = request_schema(api as i16).expect("offered APIs have schemas");
    let req = match codec::decode_prefix(schema, version, body) {
        Ok((r, 0)) => r,
        Ok((r, trailing)) => {
            log::debug!("{} v{version} request from {} has {trailing} trailing bytes (ignored, as Kafka does)", api.name(), session.peer());
            r
        }
        Err(e) => return Plan::Close(format!("malformed {} v{version} request: {e}", api.name())),
    };
    let forward = |route: Route, wait: Duration, finish: Finish| Plan::Forward {
        parts: vec![Part { route, frame: PartFrame::Original, correlation_id: header.correlation_id, broker_wait: wait }],
        expect_response: true,
        finish,
    };
    let none = Duration::ZERO;
    if ctx.mapper.remaps_anything() {
        // Whether a topic is remapped depends on what the cluster holds and
        // on the topic's cleanup policy: what the proxy has not learnt yet
        // is looked up first (`lookups`), off this thread.
        if ask_what_remapping_needs(ctx, needs, &req) {
            return Plan::AfterLookups;
        }
        if let Some(plan) = remapped_plan(ctx, session, needs, header, &req, frame) {
            return plan;
        }
    }
    match api {
        ApiKey::Produce => {
            let route = first_partition(&req, "topic_data", "name", "partition_data", "index");
            let acks = req.i16("acks").unwrap_or(-1);
            let wait = extra_wait(req.i32("timeout_ms").unwrap_or(0));
            Plan::Forward {
                parts: vec![Part { route, frame: PartFrame::Original, correlation_id: header.correlation_id, broker_wait: wait }],
                expect_response: acks != 0,
                finish: endpoints_rewrite(version >= 10),
            }
        }
        ApiKey::Fetch => {
            // A client with a rack id (v11+) may be told by a rack-aware
            // leader to read from a replica; following it means reaching the
            // proxy again, so the proxy itself routes the partition there.
            let rack = req.str("rack_id").filter(|r| !r.is_empty()).map(str::to_string);
            let route = fetch_route(ctx, &req, rack.as_deref());
            let wait = extra_wait(req.i32("max_wait_ms").unwrap_or(0));
            let route = match (&route, &session.last_fetch_addr) {
                (Route::Any, Some(addr)) => Route::Address(addr.clone()),
                _ => route,
            };
            let finish = match rack {
                Some(rack) => follow_preferred_replicas(rack, version >= 16),
                None => endpoints_rewrite(version >= 16),
            };
            forward(route, wait, finish)
        }
        ApiKey::ListOffsets => forward(first_partition(&req, "topics", "name", "partitions", "partition_index"), none, Finish::AsIs),
        ApiKey::OffsetForLeaderEpoch => forward(first_partition(&req, "topics", "topic", "partitions", "partition"), none, Finish::AsIs),
        ApiKey::DeleteRecords => forward(first_partition(&req, "topics", "name", "partitions", "partition_index"), none, Finish::AsIs),
        ApiKey::DescribeProducers => {
            let route = req
                .structs("topics")
                .next()
                .and_then(|t| Some(Route::Leader { topic: t.str("name")?.to_string(), partition: first_i32(t.array("partition_indexes"))? }))
                .unwrap_or(Route::Any);
            forward(route, none, Finish::AsIs)
        }
        ApiKey::Metadata => forward(
            Route::Any,
            none,
            Finish::Rewrite(Box::new(|ctx, _v, body| {
                ctx.cluster.apply_metadata(body);
                let virtualized = ctx.mapper.remaps_anything()
                    && crate::remap::metadata::virtualize(body, &ctx.mapper, &ctx.cluster.read());
                // The proxy's own topic is internal to it: clients exclude
                // internal topics from pattern subscriptions.
                let hidden = ctx
                    .producer_log
                    .as_ref()
                    .is_some_and(|log| crate::remap::metadata::mark_internal(body, &log.settings.topic));
                Ok(addresses::rewrite_brokers(body, &ctx.settings.advertised) | virtualized | hidden)
            })),
        ),
        ApiKey::DescribeCluster => forward(
            Route::Any,
            none,
            Finish::Rewrite(Box::new(|ctx, _v, body| Ok(addresses::rewrite_brokers(body, &ctx.settings.advertised)))),
        ),
        ApiKey::FindCoordinator => {
            let kind = if req.i8("key_type") == Some(1) { CoordinatorKind::Transaction } else { CoordinatorKind::Group };
            let single_key = req.str("key").map(str::to_string);
            forward(
                Route::Any,
                none,
                Finish::Rewrite(Box::new(move |ctx, _v, body| {
                    remember_coordinators(ctx, kind, single_key.as_deref(), body);
                    Ok(addresses::rewrite_coordinators(body, &ctx.settings.advertised))
                })),
            )
        }
        ApiKey::JoinGroup => {
            let wait = req.i32("rebalance_timeout_ms").or(req.i32("session_timeout_ms")).unwrap_or(0);
            forward(group_route(req.str("group_id")), extra_wait(wait), Finish::AsIs)
        }
        ApiKey::SyncGroup => {
            // A follower's SyncGroup waits for the leader's assignment.
            let wait = Duration::from_secs(60);
            forward(group_route(req.str("group_id")), wait, Finish::AsIs)
        }
        ApiKey::OffsetCommit
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::TxnOffsetCommit
        | ApiKey::OffsetDelete => forward(group_route(req.str("group_id")), none, Finish::AsIs),
        ApiKey::OffsetFetch => {
            let group = req.str("group_id").or_else(|| req.structs("groups").next().and_then(|g| g.str("group_id")));
            forward(group_route(group), none, Finish::AsIs)
        }
        ApiKey::DescribeGroups => forward(group_route(first_str(req.array("groups"))), none, Finish::AsIs),
        ApiKey::DeleteGroups => forward(group_route(first_str(req.array("groups_names"))), none, Finish::AsIs),
        ApiKey::InitProducerId => {
            let route = req.str("transactional_id").map_or(Route::Any, |t| Route::Transaction(t.to_string()));
            forward(route, none, Finish::AsIs)
        }
        ApiKey::AddPartitionsToTxn => {
            let txn = req
                .str("v3_and_below_transactional_id")
                .or_else(|| req.structs("transactions").next().and_then(|t| t.str("transactional_id")));
            forward(txn.map_or(Route::Any, |t| Route::Transaction(t.to_string())), none, Finish::AsIs)
        }
        ApiKey::AddOffsetsToTxn | ApiKey::EndTxn => {
            let route = req.str("transactional_id").map_or(Route::Any, |t| Route::Transaction(t.to_string()));
            forward(route, none, Finish::AsIs)
        }
        ApiKey::CreateTopics | ApiKey::DeleteTopics | ApiKey::CreatePartitions => {
            let wait = extra_wait(req.i32("timeout_ms").unwrap_or(0));
            forward(Route::Controller, wait, Finish::AsIs)
        }
        ApiKey::DescribeConfigs | ApiKey::IncrementalAlterConfigs => forward(config_route(&req), none, Finish::AsIs),
        ApiKey::ListGroups if ctx.mapper.remaps_anything() => forward(
            Route::Any,
            none,
            Finish::Rewrite(Box::new(|_ctx, _v, body| Ok(super::groups::hide_derived_groups(body)))),
        ),
        ApiKey::ListGroups | ApiKey::DescribeTopicPartitions => forward(Route::Any, none, Finish::AsIs),
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {
            unreachable!("handled above or never offered")
        }
    }
}

fn first_partition(req: &Struct<'_>, topics: &str, name: &str, partitions: &str, index: &str) -> Route {
    req.structs(topics)
        .find_map(|t| {
            let p = t.structs(partitions).next()?;
            Some(Route::Leader { topic: t.str(name)?.to_string(), partition: p.i32(index)? })
        })
        .unwrap_or(Route::Any)
}

fn fetch_route(ctx: &ProxyContext, req: &Struct<'_>, rack: Option<&str>) -> Route {
    req.structs("topics")
        .find_map(|t| {
            let topic = match t.str("topic") {
                Some(name) => name.to_string(),
                None => ctx.cluster.topic_name(&t.uuid("topic_id")?)?,
            };
            let p = t.structs("partitions").next()?;
            Some(super::route::fetch_from(ctx, rack, topic, p.i32("partition")?))
        })
        .unwrap_or(Route::Any)
}

/// The answer to a pass-through fetch from a client in `rack`: forwarded as
/// it came (addresses rewritten from v16), its preferred read replicas and
/// errors noted for routing that rack's next fetches.
fn follow_preferred_replicas(rack: String, has_endpoints: bool) -> Finish {
    Finish::Rewrite(Box::new(move |ctx, _v, body| {
        for t in body.structs("responses") {
            super::route::note_fetch_topic(ctx, &rack, t);
        }
        Ok(has_endpoints && addresses::rewrite_brokers(body, &ctx.settings.advertised))
    }))
}

fn group_route(group: Option<&str>) -> Route {
    group.map_or(Route::Any, |g| Route::Group(g.to_string()))
}

fn first_str<'v>(items: &'v [Value<'_>]) -> Option<&'v str> {
    match items.first() {
        Some(Value::String(Some(s))) => Some(s),
        _ => None,
    }
}

fn first_i32(items: &[Value<'_>]) -> Option<i32> {
    match items.first() {
        Some(Value::Int32(i)) => Some(*i),
        _ => None,
    }
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

fn endpoints_rewrite(has_endpoints: bool) -> Finish {
    if !has_endpoints {
        return Finish::AsIs;
    }
    Finish::Rewrite(Box::new(|ctx, _v, body| Ok(addresses::rewrite_brokers(body, &ctx.settings.advertised))))
}

fn remember_coordinators(ctx: &ProxyContext, kind: CoordinatorKind, single_key: Option<&str>, body: &Struct<'_>) {
    if let (Some(key), Some(node)) = (single_key, body.i32("node_id")) {
        if body.i16("error_code") == Some(error::NONE) && node >= 0 {
            ctx.cluster.set_coordinator(kind, key, node);
        }
    }
    for c in body.structs("coordinators") {
        if let (Some(key), Some(node), Some(error::NONE)) = (c.str("key"), c.i32("node_id"), c.i16("error_code")) {
            if node >= 0 {
                ctx.cluster.set_coordinator(kind, key, node);
            }
        }
    }
}

/// The proxy's own ApiVersions answer. A client asking for a version newer
/// than the proxy knows gets a v0 answer with UNSUPPORTED_VERSION and the
/// list, as Kafka does, so it can retry with a version both know.
pub fn api_versions_response(ctx: &ProxyContext, requested: i16, correlation_id: i32) -> Vec<u8> {
    let schema = response_schema(ApiKey::ApiVersions as i16).expect("declared");
    let ours = registry().supported_versions(ApiKey::ApiVersions as i16).expect("declared");
    let (version, code) = if ours.contains(requested) { (requested, error::NONE) } else { (0, error::UNSUPPORTED_VERSION) };
    let mut body = codec::with_defaults(&schema.body, version);
    body.set("error_code", Value::Int16(code));
    let key_schema = codec::element_schema(&schema.body, "api_keys");
    let keys: Vec<Value<'_>> = ApiKey::ALL
        .iter()
        .filter_map(|&api| {
            let (min, max) = offered_versions(ctx, api)?;
            // librdkafka before 2.10 compresses only when a broker
            // advertises Produce v2, so Produce is advertised from v0, as
            // Kafka 4 does (KAFKA-18659); requests older than v3 are still
            // refused when they come.
            let min = if api == ApiKey::Produce { 0 } else { min };
            let mut k = codec::with_defaults(key_schema, version);
            k.set("api_key", Value::Int16(api as i16));
            k.set("min_version", Value::Int16(min));
            k.set("max_version", Value::Int16(max));
            Some(Value::Struct(k))
        })
        .collect();
    body.set("api_keys", Value::Array(Some(keys)));
    encode_response(ApiKey::ApiVersions as i16, version, correlation_id, &[], &body).expect("well-formed ApiVersions response")
}

/// The plan for a request naming remapped topics, if it names any.
fn remapped_plan(
    ctx: &ProxyContext,
    session: &mut Session,
    needs: &mut Needs<'_>,
    header: &RequestHeader<'_>,
    req: &Struct<'_>,
    frame: &[u8],
) -> Option<Plan> {
    use super::{groups, remapped};
    use crate::remap::split;
    let api = header.api()?;
    match api {
        ApiKey::Produce => remapped::produce(ctx, session, needs, header, req),
        ApiKey::Fetch => remapped::fetch(ctx, session, header, req),
        ApiKey::ListOffsets => remapped::split_plan(
            ctx, session, header, req, api, split::LIST_OFFSETS, split::LIST_OFFSETS, Duration::ZERO, true,
            &mut |_, _, _, _, _, _| Ok(()), &Cell::new(false), None,
        ),
        ApiKey::OffsetForLeaderEpoch => remapped::split_plan(
            ctx, session, header, req, api, split::LEADER_EPOCH, split::LEADER_EPOCH, Duration::ZERO, true,
            &mut |_, _, _, _, _, _| Ok(()), &Cell::new(false), None,
        ),
        ApiKey::OffsetCommit => groups::offset_commit(ctx, session, header, req),
        ApiKey::OffsetFetch => groups::offset_fetch(ctx, session, header, req),
        ApiKey::OffsetDelete => groups::offset_delete(ctx, session, header, req),
        ApiKey::TxnOffsetCommit => groups::txn_offset_commit(ctx, header, req),
        ApiKey::DeleteGroups => groups::delete_groups(ctx, session, header, frame),
        ApiKey::CreateTopics => remapped::create_topics(ctx, session, header, req),
        ApiKey::CreatePartitions => remapped::refuse_remapped_topics(ctx, session, header, req, api, Route::Controller),
        ApiKey::DeleteRecords => remapped::refuse_remapped_topics(ctx, session, header, req, api, Route::Any),
        ApiKey::AddPartitionsToTxn => remapped::add_partitions_to_txn(ctx, session, header, req),
        _ => None,
    }
}

/// Ask for what deciding whether the request's topics are remapped needs:
/// metadata of topics the proxy has not seen (created since its last
/// refresh, or named by a client that skipped Metadata), of topic ids it
/// does not know (Fetch v13+: an id learnt elsewhere would otherwise pass
/// through with virtual partition numbers, and the broker would answer
/// with a physical partition's whole data, siblings' records included),
/// and the cleanup policy of topics a rule would remap (a compacted topic
/// must not be). Returns whether anything was asked: the request is
/// planned again once it is answered. Look-ups that failed are gone on
/// without, as before: the topic is treated as the view has it.
fn ask_what_remapping_needs(ctx: &ProxyContext, needs: &mut Needs<'_>, req: &Struct<'_>) -> bool {
    let names = topic_names(req);
    let unknown = ctx.cluster.unknown_topics(names.iter().copied());
    let mut asked = !unknown.is_empty() && needs.ask(Lookup::Topics(unknown)).is_ok();
    let ids = topic_ids(req);
    let unknown_ids = ctx.cluster.unknown_topic_ids(ids.iter().copied());
    asked |= !unknown_ids.is_empty() && needs.ask(Lookup::TopicIds(unknown_ids)).is_ok();
    if asked {
        return true;
    }
    let mut named: Vec<String> = names.into_iter().map(str::to_string).collect();
    {
        let view = ctx.cluster.read();
        named.extend(ids.iter().filter_map(|id| view.topic_names.get(id).cloned()));
    }
    let unknown_policies = crate::upstream::cleanup::unknown_policies(&ctx.cluster, &ctx.mapper, &named);
    !unknown_policies.is_empty() && needs.ask(Lookup::CleanupPolicies(unknown_policies)).is_ok()
}

/// The topic ids a Fetch (v13+) names.
fn topic_ids(req: &Struct<'_>) -> Vec<[u8; 16]> {
    if !req.has_field("topics") {
        return Vec::new();
    }
    req.structs("topics").filter(|t| t.has_field("topic_id")).filter_map(|t| t.uuid("topic_id")).collect()
}

/// The topic names a request names, in the places the remap-aware APIs
/// keep them.
fn topic_names<'r>(req: &'r Struct<'_>) -> Vec<&'r str> {
    let mut out = Vec::new();
    for (list, name) in [
        ("topic_data", "name"),
        ("topics", "name"),
        ("topics", "topic"),
        ("v3_and_below_topics", "name"),
    ] {
        if !req.has_field(list) {
            continue;
        }
        for t in req.structs(list) {
            if t.has_field(name) {
                out.extend(t.str(name));
            }
        }
    }
    if req.has_field("groups") {
        for g in req.structs("groups") {
            if g.has_field("topics") {
                out.extend(g.structs("topics").filter_map(|t| t.str("name")));
            }
        }
    }
    out
}
