//! Requests of topics → partitions shape split into rounds by physical
//! partition (`remap::split`), one part per round for its leader, and the
//! rounds' answers merged back under the client's partitions: the helpers
//! Produce plans and answers with, and the whole of ListOffsets and
//! OffsetForLeaderEpoch, whose answers need no other rewrite. They return
//! what they build; each handler's answer function is its own (no closure
//! here calls one of a handler's).

use std::cell::Cell;
use std::time::Duration;

use log::warn;

use crate::cluster::BrokerAddr;
use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct};
use crate::kafka::fields::kinds::{Array, Child, Str, Uuid};
use crate::kafka::fields::Field;
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{decode_response, encode_response, response_schema};
use crate::proxy::plan::{Finish, MergeFn, Part, Plan};
use crate::proxy::route::Route;
use crate::proxy::session::Session;
use crate::proxy::ProxyContext;
use crate::remap::mapping::Decision;
use crate::remap::split::{self, Dest, EntryRewrite, Placement, Shape};

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

/// A request split into rounds: one part per round, for the leader of the
/// round's first partition, and where each of the client's entries went
/// (by topic, in the client's order), which the answers are merged by.
pub struct Rounds {
    pub parts: Vec<Part>,
    pub placements: Vec<(String, Vec<Placement>)>,
}

/// Split a topics → partitions request into rounds (`remap::split`),
/// `rewrite` seeing each entry of a remapped topic. `None`: it names no
/// remapped topic. `Err`: a plan to return instead, `Plan::AfterLookups`
/// when `rewrite` asked for look-ups (it sets `looking_up`; the split is
/// dropped unreported and the request planned again once they are
/// answered), or a close when a part cannot be encoded.
#[allow(clippy::too_many_arguments)]
pub fn split_rounds<'a>(
    ctx: &ProxyContext,
    session: &mut Session,
    header: &RequestHeader<'_>,
    req: &Struct<'a>,
    api: ApiKey,
    shape: &Shape,
    broker_wait: Duration,
    rewrite: EntryRewrite<'_, 'a>,
    looking_up: &Cell<bool>,
) -> Option<Result<Rounds, Plan>> {
    if !names_remapped(ctx, req, shape.topics, shape.name, None) {
        return None;
    }
    // Decided before the rewrite runs, and the view released: no lock is
    // held across the rewrite, which reads the producer-id table (locked
    // on its own). A fair lock held across another lock's wait once left
    // a waiting writer, and then every thread, stuck (issue 8).
    let decisions: std::collections::HashMap<String, Decision> = {
        let view = ctx.cluster.read();
        req.iter(shape.topics)
            .filter_map(|t| t.read(shape.name))
            .map(|name| (name.to_string(), ctx.mapper.decide(name, &view)))
            .collect()
    };
    let decide = |name: &str| {
        decisions.get(name).cloned().unwrap_or(Decision::PassThrough)
    };
    let s = split::split(req, shape, &decide, rewrite);
    if !s.remapped {
        return None;
    }
    if looking_up.get() {
        return Some(Err(Plan::AfterLookups));
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
    let mut parts = Vec::with_capacity(s.rounds.len());
    for round in &s.rounds {
        let route = round
            .iter(shape.topics)
            .find_map(|t| {
                let e = t.iter(shape.partitions).next()?;
                Some(Route::Leader { topic: t.read(shape.name)?.to_string(), partition: e.read(shape.index)? })
            })
            .unwrap_or(Route::Any);
        match Part::build(session, header.client_id.as_deref(), api as i16, header.api_version, round, route, broker_wait) {
            Ok(part) => parts.push(part),
            Err(e) => return Some(Err(Plan::Close(e))),
        }
    }
    Some(Ok(Rounds { parts, placements: s.topics }))
}

/// The plan for split rounds: sent, the client's answer built from theirs
/// by the handler's `answer`; when no entry went upstream (every one
/// refused here), `answer` builds it at once from none.
pub fn plan_rounds(ctx: &ProxyContext, header: &RequestHeader<'_>, parts: Vec<Part>, expect_response: bool, answer: MergeFn) -> Plan {
    if !parts.is_empty() {
        return Plan::Forward { parts, expect_response, finish: Finish::Merge(answer) };
    }
    match answer(ctx, header.api_version, header.correlation_id, Vec::new()) {
        Ok(bytes) if expect_response => Plan::Answer(bytes),
        Ok(_) => Plan::Forward { parts: Vec::new(), expect_response: false, finish: Finish::AsIs },
        Err(e) => Plan::Close(e),
    }
}

/// The rounds' answers decoded and merged under the client's partitions
/// (`remap::split::merge`); with no answers, the schema's defaults around
/// the entries refused here.
pub fn merge_answers<'a>(
    api: ApiKey,
    version: i16,
    shape: &Shape,
    placements: &[(String, Vec<Placement>)],
    answers: &'a [Vec<u8>],
) -> Result<Struct<'a>, String> {
    let mut decoded = Vec::with_capacity(answers.len());
    for a in answers {
        decoded.push(decode_response(api as i16, version, a)?.body);
    }
    let schema = response_schema(api as i16).expect("declared");
    let template = decoded.first().cloned().unwrap_or_else(|| codec::with_defaults(&schema.body, version));
    Ok(split::merge(template, &decoded, shape, placements, version))
}

/// A request split by physical partition and merged back with no other
/// rewrite (ListOffsets, OffsetForLeaderEpoch): the request and answer have
/// the same `shape`.
pub fn split_unchanged(r: &mut super::Request<'_, '_>, api: ApiKey, shape: Shape) -> Option<Plan> {
    let no_rewrite = &mut |_: &str, _: &mut Struct<'_>, _, _, _, _| Ok(());
    let split = split_rounds(r.ctx, r.session, r.header, r.body, api, &shape, Duration::ZERO, no_rewrite, &Cell::new(false));
    let Rounds { parts, placements } = match split? {
        Ok(rounds) => rounds,
        Err(plan) => return Some(plan),
    };
    let answer = move |ctx: &ProxyContext, version, correlation_id, answers| {
        unchanged_answer(&ctx.settings.advertised, api, &shape, &placements, version, correlation_id, answers)
    };
    Some(plan_rounds(r.ctx, r.header, parts, true, Box::new(answer)))
}

/// The client's answer to a request split by `split_unchanged`.
pub fn unchanged_answer(
    advertised: &BrokerAddr,
    api: ApiKey,
    shape: &Shape,
    placements: &[(String, Vec<Placement>)],
    version: i16,
    correlation_id: i32,
    answers: Vec<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut merged = merge_answers(api, version, shape, placements, &answers)?;
    crate::remap::addresses::rewrite_brokers(&mut merged, advertised);
    encode_response(api as i16, version, correlation_id, &[], &merged).map_err(|e| e.to_string())
}
