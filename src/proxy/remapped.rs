//! Plans for requests that name remapped topics. Each function returns
//! `None` when the request names none, so it is forwarded as it came.

use std::cell::Cell;
use std::time::Duration;

use log::warn;

use super::lookups::{Lookup, Needs};
use super::plan::{single_request, Finish, Part, Plan};
use super::route::Route;
use super::session::Session;
use super::ProxyContext;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::header::{parse_response_header, RequestHeader};
use crate::kafka::message::{encode_response, response_schema};
use crate::remap::fetch_plan::{self, set_if_present, TopicKey};
use crate::remap::mapping::{Decision, VirtualPartition};
use crate::remap::split::{self, Dest, EntryRewrite, Shape};


/// Whether a request names any topic that is not passed through (remapped
/// or mismatched): a cheap look at the names before any rewriting, so that
/// traffic on 1:1 topics costs nothing more when a rule exists.
pub fn names_remapped(ctx: &ProxyContext, req: &Struct<'_>, topics: &str, name: &str) -> bool {
    let view = ctx.cluster.read();
    req.structs(topics).any(|t| {
        let topic = match t.str(name) {
            Some(n) => Some(n),
            None => t.uuid("topic_id").and_then(|id| view.topic_names.get(&id).map(String::as_str)),
        };
        let forgotten = || t.uuid("topic_id").and_then(|id| ctx.mapper.remapped_name(&id));
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
    if !names_remapped(ctx, req, request_shape.topics, request_shape.name) {
        return None;
    }
    // Decided before the rewrite runs, and the view released: no lock is
    // held across the rewrite, which reads the producer-id table (locked
    // on its own). A fair lock held across another lock's wait once left
    // a waiting writer, and then every thread, stuck (issue 8).
    let decisions: std::collections::HashMap<String, Decision> = {
        let view = ctx.cluster.read();
        req.structs(request_shape.topics)
            .filter_map(|t| t.str(request_shape.name))
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
            let (_, _, body) = parse_response_header(a, api as i16, version).map_err(|e| e.to_string())?;
            decoded.push(codec::decode(schema, version, body).map_err(|e| format!("malformed {} answer: {e}", api.name()))?);
        }
        let template = decoded.first().cloned().unwrap_or_else(|| codec::with_defaults(&schema.body, version));
        let mut merged = split::merge(template, &decoded, &response_shape, &topics, version);
        if let Some(adjust) = &adjust {
            for t in merged.structs_mut(response_shape.topics) {
                let name = t.str(response_shape.name).unwrap_or_default().to_string();
                for e in t.structs_mut(response_shape.partitions) {
                    let partition = e.i32(response_shape.index).unwrap_or(-1);
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
            .structs(request_shape.topics)
            .find_map(|t| {
                let e = t.structs(request_shape.partitions).next()?;
                Some(Route::Leader { topic: t.str(request_shape.name)?.to_string(), partition: e.i32(request_shape.index)? })
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

/// CreateTopics: a topic under a rule with V > P is created with P
/// physical partitions when the client asks for V (or the broker default,
/// -1); any other count is refused, naming the rule. Under the default rule
/// other counts pass through (such topics are not remapped), except exactly
/// P, which would silently be remapped. A topic that would be remapped and
/// asks for `cleanup.policy` compact is refused (POLICY_VIOLATION).
pub fn create_topics(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    if !ctx.mapper.remaps_anything() {
        return None;
    }
    let version = header.api_version;
    let mut refused: Vec<(usize, i16, String)> = Vec::new();
    let mut created_as: Vec<(String, i32)> = Vec::new();
    let mut out = req.clone();
    let mut changed = false;
    let mut kept = Vec::new();
    for (i, t) in req.structs("topics").enumerate() {
        let name = t.str("name").unwrap_or_default().to_string();
        let mut t = t.clone();
        let rule = if name.starts_with("__") { None } else { ctx.mapper.rule_for(&name) };
        if let Some(rule) = rule.filter(|r| !r.is_passthrough()) {
            let (v, p) = (rule.virtual_partitions as i32, rule.physical_partitions as i32);
            let asked = t.i32("num_partitions").unwrap_or(-1);
            let default_rule = matches!(rule.source, crate::config::RuleSource::Default);
            if asked == v || (asked == -1 && !default_rule) {
                let policy = t.structs("configs").filter(|c| c.str("name") == Some("cleanup.policy")).last().map(|c| c.str("value"));
                if let Some(value) = policy {
                    if crate::remap::mapping::CleanupPolicy::from_value(value) == crate::remap::mapping::CleanupPolicy::Compact {
                        // Kafka answers a topic its CreateTopicPolicy rejects with POLICY_VIOLATION.
                        refused.push((
                            i,
                            error::POLICY_VIOLATION,
                            format!(
                                "Topic {name} falls under {} and asks for cleanup.policy={}: compacted topics cannot be \
                                 remapped, because compaction is per physical partition and would erase one virtual \
                                 partition's records with a sibling's of the same key",
                                rule.name(),
                                value.unwrap_or_default()
                            ),
                        ));
                        changed = true;
                        continue;
                    }
                }
                if !t.array("assignments").is_empty() {
                    refused.push((i, error::INVALID_REQUEST, format!("Topic {name} falls under {}: manual replica assignments are not supported for remapped topics", rule.name())));
                    changed = true;
                    continue;
                }
                t.set("num_partitions", Value::Int32(p));
                created_as.push((name.clone(), v));
                changed = true;
            } else if !default_rule || asked == p {
                refused.push((
                    i,
                    error::INVALID_PARTITIONS,
                    format!(
                        "Topic {name} falls under {} ({v} virtual on {p} physical partitions): create it with {v} partitions, not {asked}",
                        rule.name()
                    ),
                ));
                changed = true;
                continue;
            }
        }
        kept.push(Value::Struct(t));
    }
    if !changed {
        return None;
    }
    for (_, _, msg) in &refused {
        warn!("CreateTopics from {}: {msg}", session.peer());
    }
    out.set("topics", Value::Array(Some(kept)));
    let names: Vec<String> = req.structs("topics").map(|t| t.str("name").unwrap_or_default().to_string()).collect();
    let finish = move |_ctx: &ProxyContext, version: i16, corr: i32, answer: Option<&[u8]>| -> Result<Vec<u8>, String> {
        let schema = response_schema(ApiKey::CreateTopics as i16).expect("declared");
        let resp = match answer {
            Some(a) => {
                let (_, _, body) = parse_response_header(a, ApiKey::CreateTopics as i16, version).map_err(|e| e.to_string())?;
                codec::decode(schema, version, body).map_err(|e| e.to_string())?
            }
            None => codec::with_defaults(&schema.body, version),
        };
        let ts = codec::element_schema(&schema.body, "topics");
        let mut results = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some((_, code, msg)) = refused.iter().find(|(j, _, _)| *j == i) {
                let mut t = codec::with_defaults(ts, version);
                t.set("name", Value::str(name.clone()));
                t.set("error_code", Value::Int16(*code));
                if t.has_field("error_message") && ts.fields[ts.index_of("error_message").unwrap()].versions.contains(version) {
                    t.set("error_message", Value::str(msg.clone()));
                }
                if ts.index_of("num_partitions").is_some_and(|j| ts.fields[j].versions.contains(version)) {
                    t.set("num_partitions", Value::Int32(-1));
                    t.set("replication_factor", Value::Int16(-1));
                    t.set("configs", Value::Array(None));
                }
                results.push(Value::Struct(t));
            } else if let Some(mut t) = resp.structs("topics").find(|t| t.str("name") == Some(name)).cloned() {
                if let Some((_, v)) = created_as.iter().find(|(n, _)| n == name) {
                    if t.i16("error_code") == Some(error::NONE) && t.i32("num_partitions").is_some() {
                        t.set("num_partitions", Value::Int32(*v));
                    }
                }
                results.push(Value::Struct(t));
            }
        }
        let mut body = resp.clone();
        body.set("topics", Value::Array(Some(results)));
        encode_response(ApiKey::CreateTopics as i16, version, corr, &[], &body).map_err(|e| e.to_string())
    };
    let wait = Duration::from_millis(req.i32("timeout_ms").unwrap_or(0).max(0) as u64);
    let body = (!out.array("topics").is_empty()).then_some(&out);
    Some(single_request(
        ctx,
        session,
        header.client_id.as_deref(),
        ApiKey::CreateTopics as i16,
        version,
        header.correlation_id,
        body,
        Route::Controller,
        wait,
        Box::new(finish),
    ))
}

/// Requests whose every entry on a remapped topic must be refused
/// (CreatePartitions, DeleteRecords): the rest goes upstream, the refused
/// entries are answered here, in the client's order.
pub fn refuse_remapped_topics(
    ctx: &ProxyContext,
    session: &mut Session,
    header: &RequestHeader<'_>,
    req: &Struct<'_>,
    api: ApiKey,
    route: Route,
) -> Option<Plan> {
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
        let resp = match answer {
            Some(a) => {
                let (_, _, body) = parse_response_header(a, api as i16, version).map_err(|e| e.to_string())?;
                codec::decode(schema, version, body).map_err(|e| e.to_string())?
            }
            None => codec::with_defaults(&schema.body, version),
        };
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

/// AddPartitionsToTxn (v0-3, the clients' form): k = 0 virtual partitions
/// are their physical partitions and pass; any k ≥ 1 partition refuses the
/// request, as Kafka refuses a request with one bad partition: that one
/// gets the error, the others OPERATION_NOT_ATTEMPTED.
pub fn add_partitions_to_txn(ctx: &ProxyContext, session: &Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    const OPERATION_NOT_ATTEMPTED: i16 = 55;
    let version = header.api_version;
    if version > 3 {
        return None;
    }
    let view = ctx.cluster.read();
    let mut results: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    let mut any_bad = false;
    for t in req.structs("v3_and_below_topics") {
        let name = t.str("name").unwrap_or_default().to_string();
        let decision = ctx.mapper.decide(&name, &view);
        let parts = t
            .array("partitions")
            .iter()
            .filter_map(|v| if let Value::Int32(i) = v { Some(*i) } else { None })
            .map(|v| {
                let code = match &decision {
                    Decision::PassThrough => error::NONE,
                    refused @ (Decision::Mismatch { .. } | Decision::Compacted { .. }) => {
                        refused.refusal_code().unwrap_or(error::INVALID_PARTITIONS)
                    }
                    Decision::Remap(m) => match m.locate(VirtualPartition(v)) {
                        None => error::UNKNOWN_TOPIC_OR_PARTITION,
                        Some((_, 0)) => error::NONE,
                        Some((_, _)) => error::INVALID_TXN_STATE,
                    },
                };
                if code != error::NONE {
                    any_bad = true;
                    warn!(
                        "Refusing AddPartitionsToTxn from {}: partition {v} of {name} is a virtual partition beyond 0..P-1; \
                         transactions are supported on 1:1 topics and partitions 0..P-1 of remapped topics only",
                        session.peer()
                    );
                }
                (v, code)
            })
            .collect();
        results.push((name, parts));
    }
    if !any_bad {
        return None;
    }
    let schema = response_schema(ApiKey::AddPartitionsToTxn as i16).expect("declared");
    let mut body = codec::with_defaults(&schema.body, version);
    let ts = codec::element_schema(&schema.body, "results_by_topic_v3_and_below");
    let ps = codec::element_schema(ts, "results_by_partition");
    let topics = results
        .into_iter()
        .map(|(name, parts)| {
            let mut t = codec::with_defaults(ts, version);
            t.set("name", Value::str(name));
            let entries = parts
                .into_iter()
                .map(|(p, code)| {
                    let mut e = codec::with_defaults(ps, version);
                    e.set("partition_index", Value::Int32(p));
                    e.set("partition_error_code", Value::Int16(if code == error::NONE { OPERATION_NOT_ATTEMPTED } else { code }));
                    Value::Struct(e)
                })
                .collect();
            t.set("results_by_partition", Value::Array(Some(entries)));
            Value::Struct(t)
        })
        .collect();
    body.set("results_by_topic_v3_and_below", Value::Array(Some(topics)));
    Some(match encode_response(ApiKey::AddPartitionsToTxn as i16, version, header.correlation_id, &[], &body) {
        Ok(b) => Plan::Answer(b),
        Err(e) => Plan::Close(e.to_string()),
    })
}

/// Derived producer ids through the producer-id topic the instances share,
/// as far as this process has read it; the rest is asked for in `needs`
/// (written or read on a look-up thread), and the request planned again.
struct BrokerProducerIds<'c, 'n> {
    ctx: &'c ProxyContext,
    needs: &'c mut Needs<'n>,
    /// Set once anything was asked for.
    looking_up: &'c Cell<bool>,
}

/// What a produce entry gets while its producer ids are looked up: never
/// seen by the client, since the plan is made again once they are known.
const LOOKING_UP: &str = "producer ids are being looked up";

impl BrokerProducerIds<'_, '_> {
    fn log(&self) -> Result<&crate::upstream::producer_log::ProducerLog, String> {
        self.ctx.producer_log.as_deref().ok_or_else(|| "no producer-id topic (no rule remaps)".to_string())
    }
}

impl crate::remap::produce::ProducerIdSource for BrokerProducerIds<'_, '_> {
    fn sequence_base(&mut self, derived: i64, topic: &str, physical: i32, first_seen: i32) -> Result<i32, String> {
        if let Some(base) = self.log()?.known_sequence_base(derived, topic, physical) {
            return Ok(base);
        }
        let lookup = Lookup::SequenceBase { derived, topic: topic.to_string(), partition: physical, first_seen };
        self.needs.ask(lookup)?;
        self.looking_up.set(true);
        Err(LOOKING_UP.into())
    }

    fn derived(&mut self, client: (i64, i16), k: i32) -> Result<(i64, i16), String> {
        if let Some(ids) = self.log()?.known_derived(client, k) {
            return Ok(ids);
        }
        self.needs.ask(Lookup::DerivedProducerId { client, k })?;
        self.looking_up.set(true);
        Err(LOOKING_UP.into())
    }
}

/// Produce naming remapped topics.
pub fn produce(
    ctx: &ProxyContext,
    session: &mut Session,
    needs: &mut Needs<'_>,
    header: &RequestHeader<'_>,
    req: &Struct<'_>,
) -> Option<Plan> {
    let acks = req.i16("acks").unwrap_or(-1);
    let wait = Duration::from_millis(req.i32("timeout_ms").unwrap_or(0).max(0) as u64);
    let mut stats = crate::remap::produce::TagStats::default();
    let looking_up = Cell::new(false);
    let mut ids = BrokerProducerIds { ctx, needs, looking_up: &looking_up };
    // The entries the proxy tagged (k >= 1, or a k = 0 batch re-tagged):
    // when the broker finds them too large, the tag may be why.
    let tagged: std::rc::Rc<std::cell::RefCell<Vec<(String, i32, i32)>>> = Default::default();
    let tagged_seen = tagged.clone();
    let plan = split_plan(
        ctx,
        session,
        header,
        req,
        ApiKey::Produce,
        split::PRODUCE_REQUEST,
        split::PRODUCE_RESPONSE,
        wait,
        acks != 0,
        &mut |topic, entry, m, v, p, k| {
            let before = stats.batches;
            let result = crate::remap::produce::rewrite_entry(topic, entry, &m, v, p, k, &mut ids, &mut stats);
            if stats.batches > before {
                tagged.borrow_mut().push((topic.to_string(), v.0, m.physical_count));
            }
            result
        },
        &looking_up,
        Some(Box::new(move |topic, v, entry| explain_too_large(&tagged_seen.borrow(), topic, v, entry))),
    );
    if looking_up.get() {
        return plan;
    }
    let m = &ctx.shared.metrics;
    m.batches_tagged_total.fetch_add(stats.batches, std::sync::atomic::Ordering::Relaxed);
    m.records_tagged_total.fetch_add(stats.records, std::sync::atomic::Ordering::Relaxed);
    // Each refused entry was logged once by `split_plan` (its message names
    // the topic, virtual partition and both CRCs).
    m.corrupt_batches_total.fetch_add(stats.corrupt, std::sync::atomic::Ordering::Relaxed);
    plan
}

/// A tagged entry the broker refused as too large gets a message saying
/// that the tag adds bytes to each record (Produce v8+ has the field),
/// logged once per topic: the same records fit on untagged partitions.
fn explain_too_large(tagged: &[(String, i32, i32)], topic: &str, v: i32, entry: &mut Struct<'_>) {
    use std::sync::{Mutex, OnceLock};
    static LOGGED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let code = entry.i16("error_code").unwrap_or(error::NONE);
    if code != error::MESSAGE_TOO_LARGE && code != error::RECORD_LIST_TOO_LARGE {
        return;
    }
    let Some(&(_, _, physical_count)) = tagged.iter().find(|(t, tv, _)| t == topic && *tv == v) else { return };
    let message = crate::remap::produce::too_large_message(topic, VirtualPartition(v), physical_count);
    if LOGGED.get_or_init(Default::default).lock().is_ok_and(|mut seen| seen.insert(topic.to_string())) {
        warn!("Produce: {message} (logged once per topic)");
    }
    // Below v8 the field is not in the version, and the encoder skips it.
    if entry.has_field("error_message") {
        entry.set("error_message", Value::str(message));
    }
}

/// Fetch naming remapped topics: sessionless upstream fetches (so the proxy
/// always sees every partition asked for), one per distinct offset a
/// physical partition is asked at (`fetch_plan`), then each partition the
/// client named answered once, from its own position.
pub fn fetch(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    let version = header.api_version;
    if !names_remapped(ctx, req, "topics", "topic") {
        return None;
    }
    let planned = {
        let view = ctx.cluster.read();
        let resolve = |t: &Struct<'_>| {
            let (key, name) = match t.str("topic") {
                Some(n) if version < 13 => (TopicKey::Name(n.to_string()), Some(n.to_string())),
                _ => {
                    let id = t.uuid("topic_id").unwrap_or([0; 16]);
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
            let (_, _, body) = parse_response_header(a, ApiKey::Fetch as i16, version).map_err(|e| e.to_string())?;
            let mut answer = codec::decode(schema, version, body).map_err(|e| format!("malformed Fetch answer: {e}"))?;
            for t in answer.structs_mut("responses") {
                if let Some(rack) = &ctx.settings.client_rack {
                    super::route::note_fetch_topic(ctx, rack, t);
                }
                // The proxy follows a preferred read replica itself: the
                // client, which sees virtual partitions, must not.
                for p in t.structs_mut("partitions") {
                    set_if_present(p, "preferred_read_replica", Value::Int32(-1), version);
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
    let wait = Duration::from_millis(req.i32("max_wait_ms").unwrap_or(0).max(0) as u64);
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
        set_if_present(&mut round, "rack_id", Value::str(rack.clone().unwrap_or_default()), version);
        let destinations = fetch_destinations(ctx, rack.as_deref(), round.array("topics"));
        let bodies: Vec<(Route, Struct<'_>)> = if destinations.is_empty() {
            vec![(Route::Any, round.clone())]
        } else {
            destinations
                .into_iter()
                .map(|(route, topics)| {
                    let mut body = round.clone();
                    body.set("topics", Value::Array(Some(topics)));
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
        let name = match t.str("topic") {
            Some(n) => Some(n.to_string()),
            None => t.uuid("topic_id").and_then(|id| ctx.cluster.topic_name(&id).or_else(|| ctx.mapper.remapped_name(&id))),
        };
        for e in t.structs("partitions") {
            let route = match (&name, e.i32("partition")) {
                (Some(n), Some(p)) => super::route::fetch_from(ctx, rack, n.clone(), p),
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
                x.as_struct().is_some_and(|x| x.str("topic") == t.str("topic") && x.uuid("topic_id") == t.uuid("topic_id"))
            };
            match entries.iter_mut().rev().find(|x| same_topic(x)).and_then(Value::as_struct_mut) {
                Some(topic) => topic.array_mut("partitions").expect("a fetch topic has partitions").push(Value::Struct(e.clone())),
                None => {
                    let mut topic = t.clone();
                    topic.set("partitions", Value::Array(Some(vec![Value::Struct(e.clone())])));
                    entries.push(Value::Struct(topic));
                }
            }
        }
    }
    groups.into_iter().map(|(_, route, topics)| (route, topics)).collect()
}

/// Several decoded Fetch answers as one: their topics and partitions
/// together, the largest throttle, the first top-level error.
fn combine_fetch_answers<'a>(version: i16, mut decoded: impl Iterator<Item = Struct<'a>>) -> Option<Struct<'a>> {
    let mut combined = decoded.next()?;
    for other in decoded {
        let throttle = combined.i32("throttle_time_ms").unwrap_or(0).max(other.i32("throttle_time_ms").unwrap_or(0));
        set_if_present(&mut combined, "throttle_time_ms", Value::Int32(throttle), version);
        if combined.i16("error_code") == Some(error::NONE) {
            if let Some(code) = other.i16("error_code") {
                set_if_present(&mut combined, "error_code", Value::Int16(code), version);
            }
        }
        let topics = combined.array_mut("responses").expect("a Fetch answer has responses");
        for t in other.structs("responses") {
            let same = |x: &Value<'_>| {
                x.as_struct().is_some_and(|x| x.str("topic") == t.str("topic") && x.uuid("topic_id") == t.uuid("topic_id"))
            };
            match topics.iter_mut().find(|x| same(x)).and_then(Value::as_struct_mut) {
                Some(mine) => mine.array_mut("partitions").expect("a topic has partitions").extend(t.array("partitions").iter().cloned()),
                None => topics.push(Value::Struct(t.clone())),
            }
        }
    }
    Some(combined)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION: i16 = 12;

    /// A Fetch answer of `partitions` (topic, index, error), with a throttle.
    fn answer(throttle: i32, partitions: &[(&str, i32, i16)]) -> Vec<u8> {
        let schema = response_schema(ApiKey::Fetch as i16).unwrap();
        let ts = codec::element_schema(&schema.body, "responses");
        let ps = codec::element_schema(ts, "partitions");
        let mut body = codec::with_defaults(&schema.body, VERSION);
        body.set("throttle_time_ms", Value::Int32(throttle));
        let mut topics: Vec<Value<'_>> = Vec::new();
        for &(topic, index, code) in partitions {
            let mut p = codec::with_defaults(ps, VERSION);
            p.set("partition_index", Value::Int32(index));
            p.set("error_code", Value::Int16(code));
            let found = topics.iter_mut().filter_map(Value::as_struct_mut).find(|t| t.str("topic") == Some(topic));
            match found {
                Some(t) => t.array_mut("partitions").unwrap().push(Value::Struct(p)),
                None => {
                    let mut t = codec::with_defaults(ts, VERSION);
                    t.set("topic", Value::str(topic));
                    t.set("partitions", Value::Array(Some(vec![Value::Struct(p)])));
                    topics.push(Value::Struct(t));
                }
            }
        }
        body.set("responses", Value::Array(Some(topics)));
        encode_response(ApiKey::Fetch as i16, VERSION, 9, &[], &body).unwrap()
    }

    #[test]
    fn answers_of_a_split_fetch_combine_into_one() {
        let a = answer(5, &[("t", 0, error::NONE), ("u", 2, error::NONE)]);
        let b = answer(20, &[("t", 1, error::NOT_LEADER_OR_FOLLOWER), ("v", 0, error::NONE)]);
        let schema = response_schema(ApiKey::Fetch as i16).unwrap();
        let (_, _, body_a) = parse_response_header(&a, ApiKey::Fetch as i16, VERSION).unwrap();
        let (_, _, body_b) = parse_response_header(&b, ApiKey::Fetch as i16, VERSION).unwrap();
        let decoded = [codec::decode(schema, VERSION, body_a).unwrap(), codec::decode(schema, VERSION, body_b).unwrap()];
        let body = combine_fetch_answers(VERSION, decoded.into_iter()).unwrap();
        assert_eq!(body.i32("throttle_time_ms"), Some(20));
        let seen: Vec<(String, i32, i16)> = body
            .structs("responses")
            .flat_map(|t| {
                let name = t.str("topic").unwrap().to_string();
                t.structs("partitions")
                    .map(move |p| (name.clone(), p.i32("partition_index").unwrap(), p.i16("error_code").unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("t".to_string(), 0, error::NONE),
                ("t".to_string(), 1, error::NOT_LEADER_OR_FOLLOWER),
                ("u".to_string(), 2, error::NONE),
                ("v".to_string(), 0, error::NONE),
            ]
        );
    }
}
