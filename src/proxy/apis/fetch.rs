//! Fetch. Pass-through: the client's frame to the leader (or, for a client
//! with a rack id, the replica that leader prefers) of its first partition.
//! Remapped topics: sessionless upstream fetches, one per distinct offset a
//! physical partition is asked at (`remap::fetch_plan`), split by the broker
//! each partition is read from, and each partition the client named
//! answered once from its own position (`fetch_plan::answer`).

use std::time::Duration;

use log::warn;

use super::passthrough::{endpoints_rewrite, forward as forward_as_is};
use super::split::names_remapped;
use super::Request;
use crate::kafka::api::ApiKey;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::fetch_request::{self as request, topics as req_topic};
use crate::kafka::fields::fetch_response::{self as response, responses as resp_topic};
use crate::kafka::message::{decode_response, encode_response, response_schema};
use crate::proxy::plan::{Finish, Part, Plan};
use crate::proxy::route::{self, Route};
use crate::proxy::session::extra_wait;
use crate::proxy::ProxyContext;
use crate::remap::addresses;
use crate::remap::fetch_answers::combine_fetch_answers;
use crate::remap::fetch_plan::{self, TopicKey};
use crate::remap::mapping::Decision;

pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    let (ctx, req) = (r.ctx, r.body);
    // A client with a rack id (v11+) may be told by a rack-aware
    // leader to read from a replica; following it means reaching the
    // proxy again, so the proxy itself routes the partition there.
    let rack = req.read(request::RACK_ID).filter(|r| !r.is_empty()).map(str::to_string);
    let route = fetch_route(ctx, req, rack.as_deref());
    let wait = extra_wait(req.read(request::MAX_WAIT_MS).unwrap_or(0));
    let route = match (&route, &r.session.last_fetch_addr) {
        (Route::Any, Some(addr)) => Route::Address(addr.clone()),
        _ => route,
    };
    let finish = match rack {
        Some(rack) => follow_preferred_replicas(rack, r.version() >= 16),
        None => endpoints_rewrite(r.version() >= 16),
    };
    forward_as_is(r, route, wait, finish)
}

fn fetch_route(ctx: &ProxyContext, req: &Struct<'_>, rack: Option<&str>) -> Route {
    req.iter(request::TOPICS)
        .find_map(|t| {
            let topic = match t.read(req_topic::TOPIC) {
                Some(name) => name.to_string(),
                None => ctx.cluster.topic_name(&t.read(req_topic::TOPIC_ID)?)?,
            };
            let p = t.iter(req_topic::PARTITIONS).next()?;
            Some(route::fetch_from(ctx, rack, topic, p.read(req_topic::partitions::PARTITION)?))
        })
        .unwrap_or(Route::Any)
}

/// The answer to a pass-through fetch from a client in `rack`: forwarded as
/// it came (addresses rewritten from v16), its preferred read replicas and
/// errors noted for routing that rack's next fetches.
fn follow_preferred_replicas(rack: String, has_endpoints: bool) -> Finish {
    Finish::Rewrite(Box::new(move |ctx, _v, body| {
        for t in body.iter(response::RESPONSES) {
            route::note_fetch_topic(ctx, &rack, t);
        }
        Ok(has_endpoints && addresses::rewrite_brokers(body, &ctx.settings.advertised))
    }))
}

/// Fetch naming remapped topics: sessionless upstream fetches (so the proxy
/// always sees every partition asked for), one per distinct offset a
/// physical partition is asked at (`fetch_plan`), then each partition the
/// client named answered once, from its own position.
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
    let version = header.api_version;
    if !names_remapped(ctx, req, request::TOPICS, req_topic::TOPIC, Some(req_topic::TOPIC_ID)) {
        return None;
    }
    let planned = {
        let view = ctx.cluster.read();
        let resolve = |t: &Struct<'_>| {
            let (key, name) = match t.read(req_topic::TOPIC) {
                Some(n) if version < 13 => (TopicKey::Name(n.to_string()), Some(n.to_string())),
                _ => {
                    let id = t.read(req_topic::TOPIC_ID).unwrap_or([0; 16]);
                    (TopicKey::Id(id), view.topic_names.get(&id).cloned().or_else(|| ctx.mapper.remapped_name(&id)))
                }
            };
            let decision = name.as_deref().map_or(Decision::PassThrough, |n| ctx.mapper.decide(n, &view));
            (key, name, decision)
        };
        fetch_plan::plan(req, version, &resolve)?
    };
    for (topic, message) in &planned.refusals {
        warn!("Fetch from {}: {message} (topic {topic})", session.peer());
    }
    let answer_plan = planned.answer;
    // `parts_per_round`: how many upstream answers make each round's (a
    // round split by broker); empty: one each.
    let build = move |ctx: &ProxyContext, version: i16, corr: i32, answers: Vec<Vec<u8>>, parts_per_round: &[usize]| -> Result<Vec<u8>, String> {
        let schema = response_schema(ApiKey::Fetch as i16).expect("declared");
        let mut decoded = Vec::with_capacity(answers.len());
        for a in &answers {
            let mut answer = decode_response(ApiKey::Fetch as i16, version, a)?.body;
            for t in answer.iter_mut(response::RESPONSES) {
                if let Some(rack) = &ctx.settings.client_rack {
                    route::note_fetch_topic(ctx, rack, t);
                }
                // The proxy follows a preferred read replica itself: the
                // client, which sees virtual partitions, must not.
                for p in t.iter_mut(resp_topic::PARTITIONS) {
                    p.write_in(resp_topic::partitions::PREFERRED_READ_REPLICA, -1, version);
                }
            }
            decoded.push(answer);
        }
        let decoded = if parts_per_round.is_empty() {
            decoded
        } else {
            let mut parts = decoded.into_iter();
            let mut rounds = Vec::with_capacity(parts_per_round.len());
            for &n in parts_per_round {
                rounds.push(combine_fetch_answers(version, parts.by_ref().take(n)).ok_or("a round with no Fetch answer")?);
            }
            rounds
        };
        let mut stats = fetch_plan::AnswerStats::default();
        let mut resp = fetch_plan::answer(&answer_plan, &decoded, &schema.body, version, &ctx.owner_cache, &mut stats);
        crate::remap::addresses::rewrite_brokers(&mut resp, &ctx.settings.advertised);
        let metrics = &ctx.shared.metrics;
        use std::sync::atomic::Ordering::Relaxed;
        metrics.fetch_bytes_upstream_total.fetch_add(stats.upstream_bytes, Relaxed);
        metrics.fetch_bytes_returned_total.fetch_add(stats.filter.bytes_returned, Relaxed);
        metrics.batches_filtered_total.fetch_add(stats.filter.batches_filtered, Relaxed);
        metrics.batches_split_total.fetch_add(stats.filter.batches_split, Relaxed);
        metrics.corrupt_batches_total.fetch_add(stats.filter.corrupt_batches, Relaxed);
        encode_response(ApiKey::Fetch as i16, version, corr, &[], &resp).map_err(|e| e.to_string())
    };
    if planned.rounds.is_empty() {
        return Some(match build(ctx, version, header.correlation_id, Vec::new(), &[]) {
            Ok(bytes) => Plan::Answer(bytes),
            Err(e) => Plan::Close(e),
        });
    }
    // Every round waits behind the first on the broker's connection.
    let wait = Duration::from_millis(req.read(request::MAX_WAIT_MS).unwrap_or(0).max(0) as u64);
    // The client's rack id is never passed on: a preferred read replica is
    // per physical partition, which the client does not know. The proxy
    // fetches in its own rack (kafka.client_rack), or from leaders. Each
    // round's partitions led by (or preferring) different brokers go to
    // each broker apart; their answers are combined into the round's.
    let rack = ctx.settings.client_rack.clone();
    let mut parts = Vec::with_capacity(planned.rounds.len());
    let mut parts_per_round = Vec::with_capacity(planned.rounds.len());
    for round in &planned.rounds {
        let mut round = round.clone();
        round.write_in(request::RACK_ID, rack.clone().unwrap_or_default(), version);
        let destinations = fetch_destinations(ctx, rack.as_deref(), round.items(request::TOPICS));
        let bodies: Vec<(Route, Struct<'_>)> = if destinations.is_empty() {
            vec![(Route::Any, round.clone())]
        } else {
            destinations
                .into_iter()
                .map(|(route, topics)| {
                    let mut body = round.clone();
                    body.write(request::TOPICS, topics);
                    (route, body)
                })
                .collect()
        };
        parts_per_round.push(bodies.len());
        for (route, body) in &bodies {
            match Part::build(session, header.client_id.as_deref(), ApiKey::Fetch as i16, version, body, route.clone(), wait) {
                Ok(part) => parts.push(part),
                Err(e) => return Some(Plan::Close(e)),
            }
        }
    }
    let finish = move |ctx: &ProxyContext, version: i16, corr: i32, answers: Vec<Vec<u8>>| -> Result<Vec<u8>, String> {
        build(ctx, version, corr, answers, &parts_per_round)
    };
    Some(Plan::Forward { parts, expect_response: true, finish: Finish::Merge(Box::new(finish)) })
}

/// The upstream fetch's partitions grouped by the broker each must be
/// fetched from (its preferred read replica for `rack`, else its leader),
/// each group with its route, in request order.
fn fetch_destinations<'a>(ctx: &ProxyContext, rack: Option<&str>, topics: &[Value<'a>]) -> Vec<(Route, Vec<Value<'a>>)> {
    let mut groups: Vec<(Option<i32>, Route, Vec<Value<'a>>)> = Vec::new();
    for t in topics.iter().filter_map(Value::as_struct) {
        let name = match t.read(req_topic::TOPIC) {
            Some(n) => Some(n.to_string()),
            None => t.read(req_topic::TOPIC_ID).and_then(|id| ctx.cluster.topic_name(&id).or_else(|| ctx.mapper.remapped_name(&id))),
        };
        for e in t.iter(req_topic::PARTITIONS) {
            let route = match (&name, e.read(req_topic::partitions::PARTITION)) {
                (Some(n), Some(p)) => route::fetch_from(ctx, rack, n.clone(), p),
                _ => Route::Any,
            };
            let node = match &route {
                Route::Replica { node, .. } => Some(*node),
                Route::Leader { topic, partition } => ctx.cluster.leader_of(topic, *partition),
                _ => None,
            };
            let i = match groups.iter().position(|(n, _, _)| *n == node) {
                Some(i) => i,
                None => {
                    groups.push((node, route, Vec::new()));
                    groups.len() - 1
                }
            };
            let entries = &mut groups[i].2;
            let same_topic = |x: &Value<'a>| {
                x.as_struct().is_some_and(|x| x.read(req_topic::TOPIC) == t.read(req_topic::TOPIC) && x.read(req_topic::TOPIC_ID) == t.read(req_topic::TOPIC_ID))
            };
            match entries.iter_mut().rev().find(|x| same_topic(x)).and_then(Value::as_struct_mut) {
                Some(topic) => topic.items_mut(req_topic::PARTITIONS).expect("a fetch topic has partitions").push(Value::Struct(e.clone())),
                None => {
                    let mut topic = t.clone();
                    topic.write(req_topic::PARTITIONS, vec![Value::Struct(e.clone())]);
                    entries.push(Value::Struct(topic));
                }
            }
        }
    }
    groups.into_iter().map(|(_, route, topics)| (route, topics)).collect()
}
