//! Fetch requests that name remapped topics, as two pure transforms: `plan`
//! turns the client's request into the upstream fetches, `answer` turns
//! their answers into the client's response.
//!
//! Every (topic, partition) the client names is answered exactly once, in
//! the order Kafka answers it: `FetchRequest.fetchData` keys partitions by
//! topic partition in request order (a partition named twice keeps its first
//! place and its last entry), `KafkaApis.handleFetchRequest` lists the
//! partitions it could not look up after the others, and
//! `FetchResponse.toMessage` puts only consecutive partitions of one topic in
//! one entry. So `[a:[1], b:[0], a:[0]]` (librdkafka rotates its fetch list
//! and asks like this) is answered in three entries, as asked.
//!
//! A physical partition is read once per distinct offset its virtual
//! partitions are asked at: round r carries each physical partition's r-th
//! lowest offset (Kafka takes one entry per partition per request). Siblings
//! at one offset, the steady state, cost one read; a caught-up sibling is not
//! starved by a lagging one's backlog. Each virtual partition is answered
//! from the lowest round whose data reaches its offset, so siblings that
//! diverged move to the same position and read together again.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::kafka::api::ErrorCode;
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::fetch_request::topics::{self as req_topic, partitions as req_part};
use crate::kafka::fields::fetch_request as request;
use crate::kafka::fields::fetch_response::responses::{self as resp_topic, partitions as resp_part};
use crate::kafka::fields::fetch_response::{self as response, node_endpoints};
use crate::kafka::fields::members;
use crate::kafka::schema::StructSchema;
use crate::remap::fetch::{classify, records_for, Classified, FilterStats, OwnerCache};
use crate::remap::mapping::{Decision, PhysicalPartition, VirtualPartition};
use crate::remap::split::{self, Shape};

/// How the request and the response name a topic: by name (v12 and older)
/// or by id (v13 and newer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Name(String),
    Id([u8; 16]),
}

impl TopicKey {
    fn of(t: &Struct<'_>, by_id: bool) -> TopicKey {
        if by_id {
            TopicKey::Id(t.read(resp_topic::TOPIC_ID).unwrap_or([0; 16]))
        } else {
            TopicKey::Name(t.read(resp_topic::TOPIC).unwrap_or_default().to_string())
        }
    }
}

/// A topic the request names, with what the proxy does with it.
#[derive(Debug, Clone)]
pub struct Topic {
    pub key: TopicKey,
    /// Its name, looked up for topics named by id ("" when unknown).
    pub name: String,
    pub decision: Decision,
}

/// Where a client partition's answer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A pass-through topic's partition: the broker's answer in round 0.
    Upstream,
    /// A virtual partition, asked from `offset`; `round` fetched its
    /// physical partition from exactly that offset.
    Virtual { physical: i32, offset: i64, round: usize },
    /// Answered here with this error.
    Refused { code: ErrorCode },
}

/// One partition of the client's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Index into `AnswerPlan::topics`.
    pub topic: usize,
    pub partition: i32,
    pub source: Source,
}

/// What `answer` needs to build the client's response.
#[derive(Debug, Clone)]
pub struct AnswerPlan {
    pub by_id: bool,
    pub topics: Vec<Topic>,
    /// In the order of the response.
    pub slots: Vec<Slot>,
}

pub struct FetchPlan<'a> {
    /// Upstream request bodies; the first also carries the pass-through
    /// topics as the client named them. Empty when every partition asked
    /// is answered here.
    pub rounds: Vec<Struct<'a>>,
    pub answer: AnswerPlan,
    /// (topic, why) for each partition refused here.
    pub refusals: Vec<(String, String)>,
}

/// One physical partition to read (of topic `topic`): its distinct fetch
/// offsets, ascending once planned, each with the upstream entry that reads
/// from it.
struct PhysicalRead<'a> {
    topic: usize,
    offsets: Vec<(i64, Struct<'a>)>,
}

/// A request topic entry's key, name (where known) and decision.
pub type Resolve<'r, 'a> = &'r dyn Fn(&Struct<'a>) -> (TopicKey, Option<String>, Decision);

/// Plan a Fetch. `None` when no topic is remapped: the request goes as it
/// came.
pub fn plan<'a>(req: &Struct<'a>, version: i16, resolve: Resolve<'_, 'a>) -> Option<FetchPlan<'a>> {
    let by_id = version >= 13;
    let mut topics: Vec<Topic> = Vec::new();
    // The request's first entry of each remapped topic, a template for the
    // upstream ones.
    let mut templates: HashMap<usize, Struct<'a>> = HashMap::new();
    // Round 0's topics in request order: pass-through entries as they came
    // (`Err`), each remapped topic once, where it is first named (`Ok`).
    let mut layout: Vec<Result<usize, Struct<'a>>> = Vec::new();
    let mut asked: Vec<(usize, i32, Struct<'a>)> = Vec::new();
    let mut asked_at: HashMap<(usize, i32), usize> = HashMap::new();
    for t in req.iter(request::TOPICS) {
        let (key, name, decision) = resolve(t);
        let ti = match topics.iter().position(|x| x.key == key) {
            Some(i) => i,
            None => {
                topics.push(Topic { key, name: name.unwrap_or_default(), decision });
                topics.len() - 1
            }
        };
        if topics[ti].decision == Decision::PassThrough {
            layout.push(Err(t.clone()));
        } else if let std::collections::hash_map::Entry::Vacant(first) = templates.entry(ti) {
            first.insert(t.clone());
            layout.push(Ok(ti));
        }
        for e in t.iter(req_topic::PARTITIONS) {
            let partition = e.read(req_part::PARTITION).unwrap_or(-1);
            match asked_at.get(&(ti, partition)) {
                // Named again: Kafka's map keeps the first place, the last entry.
                Some(&i) => asked[i].2 = e.clone(),
                None => {
                    asked_at.insert((ti, partition), asked.len());
                    asked.push((ti, partition, e.clone()));
                }
            }
        }
    }
    if templates.is_empty() {
        return None;
    }

    let mut reads: Vec<PhysicalRead<'a>> = Vec::new();
    let mut read_of: HashMap<(usize, i32), usize> = HashMap::new();
    let mut served = Vec::new();
    let mut refused = Vec::new();
    let mut refusals = Vec::new();
    for (ti, partition, entry) in asked {
        let topic = &topics[ti];
        let refusal = match &topic.decision {
            Decision::PassThrough => {
                served.push(Slot { topic: ti, partition, source: Source::Upstream });
                continue;
            }
            Decision::Mismatch { rule, expected, actual } => (
                ErrorCode::INVALID_PARTITIONS,
                format!("Topic {} has {actual} physical partitions but {rule} expects {expected}", topic.name),
            ),
            Decision::Compacted { rule } => (ErrorCode::INVALID_CONFIG, crate::remap::mapping::compacted_message(&topic.name, rule)),
            Decision::Remap(m) => match m.locate(VirtualPartition(partition)) {
                None => (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, m.out_of_range_message(partition)),
                Some((p, _)) => {
                    let offset = entry.read(req_part::FETCH_OFFSET).unwrap_or(0);
                    let i = *read_of.entry((ti, p.0)).or_insert_with(|| {
                        reads.push(PhysicalRead { topic: ti, offsets: Vec::new() });
                        reads.len() - 1
                    });
                    let read = &mut reads[i];
                    match read.offsets.iter_mut().find(|(o, _)| *o == offset) {
                        Some((_, up)) => {
                            if let (Some(a), Some(b)) = (up.read(req_part::PARTITION_MAX_BYTES), entry.read(req_part::PARTITION_MAX_BYTES)) {
                                up.write(req_part::PARTITION_MAX_BYTES, a.max(b));
                            }
                        }
                        None => {
                            let mut up = entry.clone();
                            up.write(req_part::PARTITION, p.0);
                            read.offsets.push((offset, up));
                        }
                    }
                    served.push(Slot { topic: ti, partition, source: Source::Virtual { physical: p.0, offset, round: 0 } });
                    continue;
                }
            },
        };
        refusals.push((topic.name.clone(), refusal.1));
        refused.push(Slot { topic: ti, partition, source: Source::Refused { code: refusal.0 } });
    }
    for r in &mut reads {
        r.offsets.sort_by_key(|(o, _)| *o);
    }
    for slot in &mut served {
        if let Source::Virtual { physical, offset, round } = &mut slot.source {
            let read = &reads[read_of[&(slot.topic, *physical)]];
            *round = read.offsets.iter().position(|(o, _)| o == offset).expect("planned");
        }
    }

    let round_count = reads.iter().map(|r| r.offsets.len()).max().unwrap_or(0);
    let passes_through = layout.iter().any(Result::is_err);
    let mut rounds = Vec::new();
    for round in 0..round_count.max(usize::from(passes_through)) {
        let remapped_entry = |ti: usize| -> Option<Struct<'a>> {
            let parts: Vec<Value<'a>> = reads
                .iter()
                .filter(|r| r.topic == ti)
                .filter_map(|r| r.offsets.get(round).map(|(_, e)| Value::Struct(e.clone())))
                .collect();
            if parts.is_empty() {
                return None;
            }
            let mut t = templates[&ti].clone();
            t.write(req_topic::PARTITIONS, parts);
            Some(t)
        };
        let entries: Vec<Value<'a>> = if round == 0 {
            layout
                .iter()
                .filter_map(|l| match l {
                    Err(t) => Some(t.clone()),
                    Ok(ti) => remapped_entry(*ti),
                })
                .map(Value::Struct)
                .collect()
        } else {
            layout.iter().filter_map(|l| l.as_ref().ok().and_then(|ti| remapped_entry(*ti))).map(Value::Struct).collect()
        };
        let mut body = req.clone();
        body.write(request::TOPICS, entries);
        // Sessionless, so that every answer names every partition asked.
        body.write_in(request::SESSION_ID, 0, version);
        body.write_in(request::SESSION_EPOCH, -1, version);
        body.write_in(request::FORGOTTEN_TOPICS_DATA, Vec::<Value>::new(), version);
        if round > 0 {
            // The broker answers a connection's requests in order: round 0
            // has waited already, and a later round holding back data that
            // round 0 found would delay the client by max_wait_ms.
            body.write(request::MAX_WAIT_MS, 0);
        }
        if round_count > 1 {
            // The client's response must stay about max_bytes (Kafka's
            // limit is soft: a partition's first batch always comes), or a
            // consumer at librdkafka's receive.message.max.bytes drops the
            // connection: the rounds share it.
            if let Some(max_bytes) = req.read(request::MAX_BYTES) {
                let share = (max_bytes.max(1) as i64 + round_count as i64 - 1) / round_count as i64;
                body.write(request::MAX_BYTES, share as i32);
            }
        }
        rounds.push(body);
    }
    served.extend(refused);
    Some(FetchPlan { rounds, answer: AnswerPlan { by_id, topics, slots: served }, refusals })
}

/// Bytes read upstream and what they became, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnswerStats {
    pub filter: FilterStats,
    pub upstream_bytes: u64,
}

const SHAPE: Shape = Shape::of(response::RESPONSES, resp_topic::TOPIC, resp_topic::PARTITIONS, resp_part::PARTITION_INDEX);

fn empty_records<'a>() -> Value<'a> {
    Value::Records(Some(Cow::Borrowed(&[])))
}

/// Build the client's response (body) from the decoded answers of the
/// rounds, in order. `schema` is the Fetch response body's.
pub fn answer<'a>(
    plan: &AnswerPlan,
    answers: &[Struct<'a>],
    schema: &'a StructSchema,
    version: i16,
    cache: &OwnerCache,
    stats: &mut AnswerStats,
) -> Struct<'a> {
    let topic_schema = members(schema, response::RESPONSES);
    let part_schema = members(topic_schema, resp_topic::PARTITIONS);
    let topic_index = |t: &Struct<'_>| {
        let key = TopicKey::of(t, plan.by_id);
        plan.topics.iter().position(|x| x.key == key)
    };

    // Each answered physical partition, and its batches classified once for
    // all the virtual partitions that read them.
    let mut entries: HashMap<(usize, usize, i32), &Struct<'a>> = HashMap::new();
    let mut classified: HashMap<(usize, usize, i32), Vec<Classified<'_>>> = HashMap::new();
    for (round, a) in answers.iter().enumerate() {
        for t in a.iter(response::RESPONSES) {
            let Some(ti) = topic_index(t) else { continue };
            let topic = &plan.topics[ti];
            let Decision::Remap(mapping) = &topic.decision else { continue };
            for pe in t.iter(resp_topic::PARTITIONS) {
                let physical = pe.read(resp_part::PARTITION_INDEX).unwrap_or(-1);
                if entries.contains_key(&(round, ti, physical)) {
                    continue;
                }
                entries.insert((round, ti, physical), pe);
                if pe.read(resp_part::ERROR_CODE) != Some(ErrorCode::NONE.code()) {
                    continue;
                }
                let data: &[u8] = pe.read(resp_part::RECORDS).unwrap_or_default();
                stats.upstream_bytes += data.len() as u64;
                let c = classify(data, &topic.name, PhysicalPartition(physical), mapping, cache, &mut stats.filter);
                classified.insert((round, ti, physical), c);
            }
        }
    }
    let reaches = |round: usize, ti: usize, physical: i32, offset: i64| {
        classified.get(&(round, ti, physical)).is_some_and(|c| c.iter().any(|b| b.batch.header.last_offset() >= offset))
    };

    // The broker's answers for pass-through topics, first one of each.
    let mut passed: HashMap<(usize, i32), &Struct<'a>> = HashMap::new();
    for t in answers.iter().take(1).flat_map(|a| a.iter(response::RESPONSES)) {
        let Some(ti) = topic_index(t) else { continue };
        if plan.topics[ti].decision != Decision::PassThrough {
            continue;
        }
        for pe in t.iter(resp_topic::PARTITIONS) {
            passed.entry((ti, pe.read(resp_part::PARTITION_INDEX).unwrap_or(-1))).or_insert(pe);
        }
    }

    let mut out: Vec<(usize, Vec<Value<'a>>)> = Vec::new();
    for slot in &plan.slots {
        let v = slot.partition;
        let entry = match &slot.source {
            Source::Upstream => match passed.get(&(slot.topic, v)) {
                Some(pe) => (*pe).clone(),
                // The broker chose not to answer it; neither does the proxy.
                None => continue,
            },
            Source::Refused { code } => split::error_entry(part_schema, &SHAPE, version, v, *code, ""),
            Source::Virtual { physical, offset, round } => {
                virtual_entry(part_schema, version, v, *physical, *offset, *round, slot.topic, &entries, &classified, &reaches, &mut stats.filter)
            }
        };
        match out.last_mut() {
            Some((ti, parts)) if *ti == slot.topic => parts.push(Value::Struct(entry)),
            _ => out.push((slot.topic, vec![Value::Struct(entry)])),
        }
    }

    let mut resp = answers.first().cloned().unwrap_or_else(|| codec::with_defaults(schema, version));
    let throttle = answers.iter().filter_map(|a| a.read(response::THROTTLE_TIME_MS)).max();
    if let Some(ms) = throttle {
        resp.write_in(response::THROTTLE_TIME_MS, ms, version);
    }
    let none = ErrorCode::NONE.code();
    if resp.read(response::ERROR_CODE) == Some(none) {
        if let Some(code) = answers.iter().filter_map(|a| a.read(response::ERROR_CODE)).find(|&c| c != none) {
            resp.write_in(response::ERROR_CODE, code, version);
        }
    }
    resp.write_in(response::SESSION_ID, 0, version);
    merge_node_endpoints(&mut resp, &answers[answers.len().min(1)..]);
    let topics_out = out
        .into_iter()
        .map(|(ti, parts)| {
            let topic = &plan.topics[ti];
            // The broker's own topic entry where there is one, so that its
            // tagged fields come through.
            let mut t = answers
                .first()
                .and_then(|a| a.iter(response::RESPONSES).find(|t| topic_index(t) == Some(ti)).cloned())
                .unwrap_or_else(|| {
                    let mut t = codec::with_defaults(topic_schema, version);
                    match &topic.key {
                        TopicKey::Name(n) => t.write_in(resp_topic::TOPIC, n.clone(), version),
                        TopicKey::Id(id) => t.write_in(resp_topic::TOPIC_ID, *id, version),
                    }
                    t
                });
            t.write(resp_topic::PARTITIONS, parts);
            Value::Struct(t)
        })
        .collect::<Vec<_>>();
    resp.write(response::RESPONSES, topics_out);
    resp
}

/// The answer of virtual partition `v`, asked from `offset`.
#[allow(clippy::too_many_arguments)]
fn virtual_entry<'a>(
    part_schema: &'a StructSchema,
    version: i16,
    v: i32,
    physical: i32,
    offset: i64,
    own_round: usize,
    ti: usize,
    entries: &HashMap<(usize, usize, i32), &Struct<'a>>,
    classified: &HashMap<(usize, usize, i32), Vec<Classified<'_>>>,
    reaches: &dyn Fn(usize, usize, i32, i64) -> bool,
    stats: &mut FilterStats,
) -> Struct<'a> {
    let Some(own) = entries.get(&(own_round, ti, physical)) else {
        return split::error_entry(part_schema, &SHAPE, version, v, ErrorCode::UNKNOWN_SERVER_ERROR, "");
    };
    if own.read(resp_part::ERROR_CODE) != Some(ErrorCode::NONE.code()) {
        // The broker's error is about this very offset; any records it sent
        // are the physical partition's, not this virtual partition's.
        let mut e = (*own).clone();
        e.write(resp_part::PARTITION_INDEX, v);
        e.put(resp_part::RECORDS, empty_records());
        return e;
    }
    // Kafka answers OFFSET_OUT_OF_RANGE to an offset beyond the log end
    // (LocalLog.read) or below the log start. Tansu 0.6 answers an offset
    // beyond the end without error, so the proxy checks against what the
    // answer shows: the high watermark, which a consumer's position never
    // passes.
    let high_watermark = own.read(resp_part::HIGH_WATERMARK).unwrap_or(-1);
    let log_start = if version >= 5 { own.read(resp_part::LOG_START_OFFSET).unwrap_or(-1) } else { -1 };
    if (high_watermark >= 0 && offset > high_watermark) || (log_start >= 0 && offset < log_start) {
        return split::error_entry(part_schema, &SHAPE, version, v, ErrorCode::OFFSET_OUT_OF_RANGE, "");
    }
    let source = (0..own_round).find(|&r| reaches(r, ti, physical, offset)).unwrap_or(own_round);
    let mut e = (*entries.get(&(source, ti, physical)).unwrap_or(own)).clone();
    e.write(resp_part::PARTITION_INDEX, v);
    match classified.get(&(source, ti, physical)).map(|c| records_for(c, v, offset, stats)) {
        Some(Ok(own)) => e.write(resp_part::RECORDS, Some(Cow::Owned(own))),
        None => e.put(resp_part::RECORDS, empty_records()),
        // Logged and counted when it was classified (see `CorruptBatch`).
        Some(Err(_corrupt)) => {
            e.write(resp_part::ERROR_CODE, ErrorCode::CORRUPT_MESSAGE);
            e.put(resp_part::RECORDS, empty_records());
        }
    }
    e
}

/// The leader hints (KIP-951 `node_endpoints`) of later rounds join the
/// first round's, each node once: a partition's `current_leader` may name a
/// node only a later round's answer describes.
fn merge_node_endpoints<'a>(resp: &mut Struct<'a>, later: &[Struct<'a>]) {
    let node_id = |v: &Value<'_>| v.as_struct().and_then(|n| n.read(node_endpoints::NODE_ID));
    for a in later {
        let Some(nodes) = a.read(response::NODE_ENDPOINTS) else { continue };
        for node in nodes {
            let Some(slot) = resp.value_mut(response::NODE_ENDPOINTS) else { return };
            match slot {
                Value::Array(Some(known)) => {
                    if !known.iter().any(|k| node_id(k) == node_id(node)) {
                        known.push(node.clone());
                    }
                }
                slot => *slot = Value::Array(Some(vec![node.clone()])),
            }
        }
    }
}

#[cfg(test)]
mod tests;
