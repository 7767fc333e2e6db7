//! Requests of topics → partitions shape split into rounds by physical
//! partition (`remap::split`), sent to each round's leader, and merged back
//! into the client's answer: ListOffsets, OffsetForLeaderEpoch and Produce.

use std::cell::Cell;
use std::time::Duration;

use log::warn;

use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct};
use crate::kafka::fields::kinds::{Array, Child, Str, Uuid};
use crate::kafka::fields::Field;
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{decode_response, encode_response, response_schema};
use crate::proxy::plan::{Finish, Part, Plan};
use crate::proxy::route::Route;
use crate::proxy::session::Session;
use crate::proxy::ProxyContext;
use crate::remap::mapping::Decision;
use crate::remap::split::{self, Dest, EntryRewrite, Shape};

/// Whether a request names any topic that is not passed through (remapped
/// or mismatched): a cheap look at the names before any rewriting, so that
/// traffic on 1:1 topics costs nothing more when a rule exists. A topic
/// without a name is known by its `topic_id`, where the request has one.
pub fn names_remapped(ctx: &ProxyContext, req: &Struct<'_>, topics: Field<Array<Child>>, name: Field<Str>, topic_id: Option<Field<Uuid>>) -> bool {
    let view = ctx.cluster.read();
    req.iter(topics).any(|t| {
        let id = || topic_id.and_then(|f| t.read(f));
        let topic = match t.read(name) {
            Some(n) => Some(n),
            None => id().and_then(|id| view.topic_names.get(&id).map(String::as_str)),
        };
        let forgotten = || id().and_then(|id| ctx.mapper.remapped_name(&id));
        match topic {
            Some(n) => ctx.mapper.decide(n, &view) != Decision::PassThrough,
            None => forgotten().is_some(),
        }
    })
}

/// Looks at one partition entry of the merged answer: (topic, partition
/// as the client named it, entry).
pub type AnswerAdjust = Box<dyn Fn(&str, i32, &mut Struct<'_>)>;

/// Split a topics → partitions request into rounds, send them to the leader
/// of each round's first partition, merge the answers (and `adjust` each
/// entry of the merged answer). When `rewrite` asked for look-ups (it sets
/// `looking_up`), the split is dropped unreported: the request is planned
/// again once they are answered.
#[allow(clippy::too_many_arguments)]
pub fn split_plan<'a>(
    ctx: &ProxyContext,
    session: &mut Session,
    header: &RequestHeader<'_>,
    req: &Struct<'a>,
    api: ApiKey,
    request_shape: Shape,
    response_shape: Shape,
    broker_wait: Duration,
    expect_response: bool,
    rewrite: EntryRewrite<'_, 'a>,
    looking_up: &Cell<bool>,
    adjust: Option<AnswerAdjust>,
) -> Option<Plan> {
    let version = header.api_version;
    if !names_remapped(ctx, req, request_shape.topics, request_shape.name, None) {
        return None;
    }
    // Decided before the rewrite runs, and the view released: no lock is
    // held across the rewrite, which reads the producer-id table (locked
    // on its own). A fair lock held across another lock's wait once left
    // a waiting writer, and then every thread, stuck (issue 8).
    let decisions: std::collections::HashMap<String, Decision> = {
        let view = ctx.cluster.read();
        req.iter(request_shape.topics)
            .filter_map(|t| t.read(request_shape.name))
            .map(|name| (name.to_string(), ctx.mapper.decide(name, &view)))
            .collect()
    };
    let decide = |name: &str| {
        decisions.get(name).cloned().unwrap_or(Decision::PassThrough)
    };
    let s = split::split(req, &request_shape, &decide, rewrite);
    if !s.remapped {
        return None;
    }
    if looking_up.get() {
        return Some(Plan::AfterLookups);
    }
    for (topic, placements) in &s.topics {
        for p in placements {
            if let Dest::Local { message, .. } = &p.dest {
                warn!("{} from {}: {message} (topic {topic})", api.name(), session.peer());
                ctx.shared.metrics.requests_refused_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    ctx.shared.metrics.remapping_operations_total.fetch_add(
        s.topics.iter().map(|(_, p)| p.len() as u64).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let topics = s.topics;
    let merge = move |advertised: &crate::cluster::BrokerAddr, version: i16, correlation_id: i32, answers: Vec<Vec<u8>>| -> Result<Vec<u8>, String> {
        let schema = response_schema(api as i16).expect("declared");
        let mut decoded = Vec::with_capacity(answers.len());
        for a in &answers {
            decoded.push(decode_response(api as i16, version, a)?.body);
        }
        let template = decoded.first().cloned().unwrap_or_else(|| codec::with_defaults(&schema.body, version));
        let mut merged = split::merge(template, &decoded, &response_shape, &topics, version);
        if let Some(adjust) = &adjust {
            for t in merged.iter_mut(response_shape.topics) {
                let name = t.read(response_shape.name).unwrap_or_default().to_string();
                for e in t.iter_mut(response_shape.partitions) {
                    let partition = e.read(response_shape.index).unwrap_or(-1);
                    adjust(&name, partition, e);
                }
            }
        }
        // Leader hints (KIP-951) point at the proxy too.
        crate::remap::addresses::rewrite_brokers(&mut merged, advertised);
        encode_response(api as i16, version, correlation_id, &[], &merged).map_err(|e| e.to_string())
    };
    if s.rounds.is_empty() {
        return Some(match merge(&ctx.settings.advertised, version, header.correlation_id, Vec::new()) {
            Ok(bytes) if expect_response => Plan::Answer(bytes),
            Ok(_) => Plan::Forward { parts: Vec::new(), expect_response: false, finish: Finish::AsIs },
            Err(e) => Plan::Close(e),
        });
    }
    let mut parts = Vec::with_capacity(s.rounds.len());
    for round in &s.rounds {
        let route = round
            .iter(request_shape.topics)
            .find_map(|t| {
                let e = t.iter(request_shape.partitions).next()?;
                Some(Route::Leader { topic: t.read(request_shape.name)?.to_string(), partition: e.read(request_shape.index)? })
            })
            .unwrap_or(Route::Any);
        match Part::build(session, header.client_id.as_deref(), api as i16, version, round, route, broker_wait) {
            Ok(part) => parts.push(part),
            Err(e) => return Some(Plan::Close(e)),
        }
    }
    Some(Plan::Forward {
        parts,
        expect_response,
        finish: Finish::Merge(Box::new(move |ctx, version, correlation_id, answers| {
            merge(&ctx.settings.advertised, version, correlation_id, answers)
        })),
    })
}

/// A request split by physical partition and merged back with no other
/// rewrite (ListOffsets, OffsetForLeaderEpoch): the request and answer have
/// the same `shape`.
pub fn split_unchanged(r: &mut super::Request<'_, '_>, api: ApiKey, shape: Shape) -> Option<Plan> {
    let no_rewrite = &mut |_: &str, _: &mut Struct<'_>, _, _, _, _| Ok(());
    split_plan(r.ctx, r.session, r.header, r.body, api, shape, shape, Duration::ZERO, true, no_rewrite, &Cell::new(false), None)
}
