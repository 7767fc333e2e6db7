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
use crate::kafka::fields::fetch_request::{self as request};
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

/// Set a field the version has (and not as a tagged field); others stay.
pub(crate) fn set_if_present(s: &mut Struct<'_>, name: &str, value: Value<'static>, version: i16) {
    if let Some(i) = s.schema.index_of(name) {
        let f = &s.schema.fields[i];
        if f.versions.contains(version) && !f.is_tagged_in(version) {
            s.fields[i] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::api::error;
    use crate::kafka::message::{request_schema, response_schema};
    use crate::kafka::records::{self, BuildOptions, RecordData};
    use crate::remap::mapping::TopicMapping;

    const MB: i32 = 1 << 20;

    fn decide(name: &str) -> Decision {
        match name {
            "plain" => Decision::PassThrough,
            "odd" => Decision::Mismatch { rule: "rule odd".into(), expected: 2, actual: 3 },
            _ => Decision::Remap(TopicMapping::new(8, 2)),
        }
    }

    fn resolve<'a>(t: &Struct<'a>) -> (TopicKey, Option<String>, Decision) {
        let name = t.read(req_topic::TOPIC).unwrap().to_string();
        (TopicKey::Name(name.clone()), Some(name.clone()), decide(&name))
    }

    /// A Fetch request: [(topic, [(partition, offset)])], as given.
    fn request(version: i16, entries: &[(&str, &[(i32, i64)])]) -> Struct<'static> {
        let schema = &request_schema(1).unwrap().body;
        let ts = members(schema, request::TOPICS);
        let ps = members(ts, req_topic::PARTITIONS);
        let mut req = codec::with_defaults(schema, version);
        req.write(request::MAX_WAIT_MS, 500);
        req.write(request::MAX_BYTES, MB);
        let topics = entries
            .iter()
            .map(|(name, parts)| {
                let mut t = codec::with_defaults(ts, version);
                t.write(req_topic::TOPIC, name.to_string());
                let parts = parts
                    .iter()
                    .map(|&(p, offset)| {
                        let mut e = codec::with_defaults(ps, version);
                        e.write(req_part::PARTITION, p);
                        e.write(req_part::FETCH_OFFSET, offset);
                        e.write(req_part::PARTITION_MAX_BYTES, MB);
                        Value::Struct(e)
                    })
                    .collect();
                t.put(req_topic::PARTITIONS, Value::Array(Some(parts)));
                Value::Struct(t)
            })
            .collect();
        req.put(request::TOPICS, Value::Array(Some(topics)));
        req
    }

    /// [(topic, [(partition, offset)])] of a request or its rounds.
    fn asks(req: &Struct<'_>) -> Vec<(String, Vec<(i32, i64)>)> {
        req.iter(request::TOPICS)
            .map(|t| {
                let parts = t.iter(req_topic::PARTITIONS).map(|e| (e.read(req_part::PARTITION).unwrap(), e.read(req_part::FETCH_OFFSET).unwrap())).collect();
                (t.read(req_topic::TOPIC).unwrap().to_string(), parts)
            })
            .collect()
    }

    /// One single-record batch at `offset`, tagged for `vp` (or untagged).
    fn batch(offset: i64, vp: Option<i32>) -> Vec<u8> {
        let headers = vp.map(|v| vec![(records::TAG_HEADER.to_string(), Some(v.to_string().into_bytes()))]).unwrap_or_default();
        let rec = RecordData { value: Some(format!("r{offset}").into_bytes()), headers, ..Default::default() };
        records::build_batch(&[rec], &BuildOptions { base_offset: offset, ..Default::default() })
    }

    struct Part {
        index: i32,
        error: i16,
        high_watermark: i64,
        log_start: i64,
        records: Option<Vec<u8>>,
    }

    fn part(index: i32, high_watermark: i64, batches: &[Vec<u8>]) -> Part {
        Part { index, error: 0, high_watermark, log_start: 0, records: Some(batches.concat()) }
    }

    /// A decoded Fetch answer: [(topic, [partition])].
    fn answer_body(version: i16, entries: Vec<(&str, Vec<Part>)>) -> Struct<'static> {
        let schema = &response_schema(1).unwrap().body;
        let ts = members(schema, response::RESPONSES);
        let ps = members(ts, resp_topic::PARTITIONS);
        let mut resp = codec::with_defaults(schema, version);
        let topics = entries
            .into_iter()
            .map(|(name, parts)| {
                let mut t = codec::with_defaults(ts, version);
                t.write(resp_topic::TOPIC, name.to_string());
                let parts = parts
                    .into_iter()
                    .map(|p| {
                        let mut e = codec::with_defaults(ps, version);
                        e.write(resp_part::PARTITION_INDEX, p.index);
                        e.write(resp_part::ERROR_CODE, p.error);
                        e.write(resp_part::HIGH_WATERMARK, p.high_watermark);
                        e.write(resp_part::LAST_STABLE_OFFSET, p.high_watermark);
                        if version >= 5 {
                            e.write(resp_part::LOG_START_OFFSET, p.log_start);
                        }
                        e.put(resp_part::RECORDS, Value::Records(p.records.map(Cow::Owned)));
                        Value::Struct(e)
                    })
                    .collect();
                t.put(resp_topic::PARTITIONS, Value::Array(Some(parts)));
                Value::Struct(t)
            })
            .collect();
        resp.put(response::RESPONSES, Value::Array(Some(topics)));
        resp
    }

    /// What the client gets for one partition: error and the offsets of
    /// the records it holds (empty batches hold none).
    #[derive(Debug, PartialEq, Eq)]
    struct Got {
        error: i16,
        offsets: Vec<i64>,
    }

    fn got(resp: &Struct<'_>) -> Vec<(String, Vec<(i32, Got)>)> {
        resp.iter(response::RESPONSES)
            .map(|t| {
                let parts = t
                    .iter(resp_topic::PARTITIONS)
                    .map(|e| {
                        let data: &[u8] = match e.value(resp_part::RECORDS) {
                            Value::Records(Some(d)) => d,
                            other => panic!("partition {:?}: records {other:?}", e.read(resp_part::PARTITION_INDEX)),
                        };
                        let offsets = records::batches(data)
                            .filter_map(|b| match b {
                                Ok(records::Item::Batch(b)) if b.header.records_count > 0 => Some(b.header.base_offset),
                                _ => None,
                            })
                            .collect();
                        (e.read(resp_part::PARTITION_INDEX).unwrap(), Got { error: e.read(resp_part::ERROR_CODE).unwrap(), offsets })
                    })
                    .collect();
                (t.read(resp_topic::TOPIC).unwrap().to_string(), parts)
            })
            .collect()
    }

    fn ok(offsets: &[i64]) -> Got {
        Got { error: 0, offsets: offsets.to_vec() }
    }

    /// The response's bytes, as the client gets them.
    fn run(plan: &AnswerPlan, answers: &[Struct<'static>], version: i16) -> Vec<u8> {
        let schema = &response_schema(1).unwrap().body;
        let resp = answer(plan, answers, schema, version, &OwnerCache::default(), &mut AnswerStats::default());
        crate::kafka::message::encode_response(1, version, 7, &[], &resp).unwrap()
    }

    fn decoded(bytes: &[u8], version: i16) -> Struct<'_> {
        crate::kafka::message::decode_response(1, version, bytes).unwrap().body
    }

    fn names(v: &[(String, Vec<(i32, i64)>)]) -> Vec<(&str, Vec<(i32, i64)>)> {
        v.iter().map(|(n, p)| (n.as_str(), p.clone())).collect()
    }

    /// librdkafka rotates its fetch list: `[ta:[1], tb:[0], ta:[0, 3]]`.
    /// Kafka answers in three entries, each with the partitions it asked
    /// (FetchResponse.toMessage groups only consecutive partitions of a
    /// topic); physical 1 of ta is read once for VPs 1 and 3.
    #[test]
    fn a_topic_named_twice_is_read_once_and_answered_in_its_entries() {
        for version in [4i16, 12] {
            let req = request(version, &[("ta", &[(1, 0)]), ("tb", &[(0, 0)]), ("ta", &[(0, 0), (3, 0)])]);
            let p = plan(&req, version, &resolve).unwrap();
            assert_eq!(p.rounds.len(), 1, "v{version}");
            assert_eq!(p.rounds[0].read(request::MAX_BYTES), Some(MB), "v{version}");
            assert_eq!(names(&asks(&p.rounds[0])), vec![("ta", vec![(1, 0), (0, 0)]), ("tb", vec![(0, 0)])], "v{version}");
            let answers = vec![answer_body(
                version,
                vec![
                    ("ta", vec![part(1, 2, &[batch(0, None), batch(1, Some(3))]), part(0, 1, &[batch(0, None)])]),
                    ("tb", vec![part(0, 1, &[batch(0, None)])]),
                ],
            )];
            let bytes = run(&p.answer, &answers, version);
        let resp = decoded(&bytes, version);
            assert_eq!(
                got(&resp),
                vec![
                    ("ta".to_string(), vec![(1, ok(&[0]))]),
                    ("tb".to_string(), vec![(0, ok(&[0]))]),
                    ("ta".to_string(), vec![(0, ok(&[0])), (3, ok(&[1]))]),
                ],
                "v{version}"
            );
        }
    }

    /// Kafka's fetchData map keeps a partition named twice at its first
    /// place with its last entry; two consecutive entries of one topic
    /// become one.
    #[test]
    fn a_partition_named_twice_is_answered_once_from_its_last_entry() {
        let req = request(4, &[("ta", &[(0, 5)]), ("ta", &[(3, 0), (0, 0)])]);
        let p = plan(&req, 4, &resolve).unwrap();
        assert_eq!(names(&asks(&p.rounds[0])), vec![("ta", vec![(0, 0), (1, 0)])]);
        let answers = vec![answer_body(4, vec![("ta", vec![part(0, 1, &[batch(0, None)]), part(1, 1, &[batch(0, Some(3))])])])];
        assert_eq!(got(&decoded(&run(&p.answer, &answers, 4), 4)), vec![("ta".to_string(), vec![(0, ok(&[0])), (3, ok(&[0]))])]);
    }

    /// Siblings of physical 0 at offsets 0, 10, 12 and 70 (beyond the high
    /// watermark 60): one read per distinct offset. VP 2's own read gives it
    /// its records though VP 0's read from 0 stops short of them; VP 4 is
    /// answered from VP 2's read, which reaches its offset (so both move on
    /// together); VP 6 gets OFFSET_OUT_OF_RANGE.
    #[test]
    fn siblings_at_different_offsets_each_read_from_their_own() {
        let req = request(4, &[("ta", &[(0, 0), (2, 10), (4, 12), (6, 70), (1, 0)])]);
        let p = plan(&req, 4, &resolve).unwrap();
        let rounds: Vec<_> = p.rounds.iter().map(asks).collect();
        assert_eq!(
            rounds.iter().map(|r| names(r)).collect::<Vec<_>>(),
            vec![
                vec![("ta", vec![(0, 0), (1, 0)])],
                vec![("ta", vec![(0, 10)])],
                vec![("ta", vec![(0, 12)])],
                vec![("ta", vec![(0, 70)])],
            ]
        );
        assert_eq!(p.rounds[0].read(request::MAX_WAIT_MS), Some(500));
        assert!(p.rounds[1..].iter().all(|r| r.read(request::MAX_WAIT_MS) == Some(0)), "later rounds must not wait again");
        let shares: Vec<i32> = p.rounds.iter().map(|r| r.read(request::MAX_BYTES).unwrap()).collect();
        assert_eq!(shares, vec![MB / 4; 4], "the rounds share the client's max_bytes");
        let answers = vec![
            answer_body(4, vec![("ta", vec![part(0, 60, &[batch(0, None), batch(1, None), batch(2, Some(4))]), part(1, 0, &[])])]),
            answer_body(4, vec![("ta", vec![part(0, 60, &[batch(10, Some(2)), batch(11, Some(2)), batch(12, Some(4)), batch(13, Some(6))])])]),
            answer_body(4, vec![("ta", vec![part(0, 60, &[batch(12, Some(4))])])]),
            answer_body(4, vec![("ta", vec![part(0, 60, &[])])]),
        ];
        let bytes = run(&p.answer, &answers, 4);
        let resp = decoded(&bytes, 4);
        assert_eq!(
            got(&resp),
            vec![(
                "ta".to_string(),
                vec![
                    (0, ok(&[0, 1])),
                    (2, ok(&[10, 11])),
                    (4, ok(&[12])),
                    (6, Got { error: error::OFFSET_OUT_OF_RANGE, offsets: vec![] }),
                    (1, ok(&[])),
                ]
            )]
        );
        // VP 4 read round 1's data from its offset: its batch and the empty
        // one standing in for VP 6's, so its next offset is VP 2's.
        let vp4 = resp.iter(response::RESPONSES).flat_map(|t| t.iter(resp_topic::PARTITIONS)).find(|e| e.read(resp_part::PARTITION_INDEX) == Some(4)).unwrap();
        let Value::Records(Some(data)) = vp4.value(resp_part::RECORDS) else { panic!() };
        let last = records::batches(data).filter_map(|b| match b {
            Ok(records::Item::Batch(b)) => Some(b.header.last_offset()),
            _ => None,
        });
        assert_eq!(last.max(), Some(13));
    }

    /// Offsets below the log start are Kafka's OFFSET_OUT_OF_RANGE too; a
    /// broker error is the virtual partition's own, without the physical
    /// partition's records.
    #[test]
    fn each_sibling_gets_its_own_error() {
        let req = request(5, &[("ta", &[(0, 5), (2, 20), (1, 0)])]);
        let p = plan(&req, 5, &resolve).unwrap();
        assert_eq!(p.rounds.len(), 2);
        let mut below = part(0, 30, &[]);
        below.log_start = 20;
        let mut not_leader = part(1, 30, &[batch(0, None)]);
        not_leader.error = 6;
        let mut in_range = part(0, 30, &[batch(20, Some(2))]);
        in_range.log_start = 20;
        let answers = vec![
            answer_body(5, vec![("ta", vec![below, not_leader])]),
            answer_body(5, vec![("ta", vec![in_range])]),
        ];
        let bytes = run(&p.answer, &answers, 5);
        let resp = decoded(&bytes, 5);
        assert_eq!(
            got(&resp),
            vec![(
                "ta".to_string(),
                vec![
                    (0, Got { error: error::OFFSET_OUT_OF_RANGE, offsets: vec![] }),
                    (2, ok(&[20])),
                    (1, Got { error: 6, offsets: vec![] }),
                ]
            )]
        );
    }

    /// Refused partitions carry an empty record set (Kafka's
    /// MemoryRecords.EMPTY) and come after the others, as KafkaApis lists
    /// the partitions it could not look up. Pass-through topics keep their
    /// entries and their answers as the broker sent them.
    #[test]
    fn refused_partitions_come_last_with_empty_record_sets() {
        let req = request(4, &[("ta", &[(99, 0), (0, 0)]), ("plain", &[(3, 0)]), ("odd", &[(1, 0)])]);
        let p = plan(&req, 4, &resolve).unwrap();
        assert_eq!(names(&asks(&p.rounds[0])), vec![("ta", vec![(0, 0)]), ("plain", vec![(3, 0)])]);
        assert_eq!(p.refusals.len(), 2);
        let mut plain = part(3, 1, &[]);
        plain.records = None; // as Tansu sends an empty answer: forwarded as it came
        let answers = vec![answer_body(4, vec![("ta", vec![part(0, 1, &[batch(0, None)])]), ("plain", vec![plain])])];
        let bytes = run(&p.answer, &answers, 4);
        let resp = decoded(&bytes, 4);
        let layout: Vec<(String, Vec<(i32, i16)>)> = resp
            .iter(response::RESPONSES)
            .map(|t| (t.read(resp_topic::TOPIC).unwrap().to_string(), t.iter(resp_topic::PARTITIONS).map(|e| (e.read(resp_part::PARTITION_INDEX).unwrap(), e.read(resp_part::ERROR_CODE).unwrap())).collect()))
            .collect();
        assert_eq!(
            layout,
            vec![
                ("ta".to_string(), vec![(0, 0)]),
                ("plain".to_string(), vec![(3, 0)]),
                ("ta".to_string(), vec![(99, error::UNKNOWN_TOPIC_OR_PARTITION)]),
                ("odd".to_string(), vec![(1, error::INVALID_PARTITIONS)]),
            ]
        );
        for e in resp.iter(response::RESPONSES).flat_map(|t| t.iter(resp_topic::PARTITIONS)) {
            let want = if e.read(resp_part::PARTITION_INDEX) == Some(3) { Value::Records(None) } else { e.value(resp_part::RECORDS).clone() };
            assert_eq!(e.value(resp_part::RECORDS), &want);
            if e.read(resp_part::ERROR_CODE) != Some(0) {
                assert_eq!(e.value(resp_part::RECORDS), &empty_records(), "{:?}", e.read(resp_part::PARTITION_INDEX));
            }
        }

        // Nothing to ask upstream: answered here.
        let req = request(4, &[("ta", &[(99, 0)])]);
        let p = plan(&req, 4, &resolve).unwrap();
        assert!(p.rounds.is_empty());
        let bytes = run(&p.answer, &[], 4);
        let resp = decoded(&bytes, 4);
        assert_eq!(got(&resp), vec![("ta".to_string(), vec![(99, Got { error: error::UNKNOWN_TOPIC_OR_PARTITION, offsets: vec![] })])]);
    }

    /// Kafka 3.7+ (Fetch v16) describes the leaders it names in
    /// `current_leader` in the top-level `node_endpoints`; a later round's
    /// must not be lost.
    #[test]
    fn leader_hints_of_every_round_are_kept() {
        let version = 16;
        let schema = &response_schema(1).unwrap().body;
        let ns = members(schema, response::NODE_ENDPOINTS);
        let node = |id: i32| {
            let mut n = codec::with_defaults(ns, version);
            n.write(node_endpoints::NODE_ID, id);
            n.write(node_endpoints::HOST, format!("b{id}"));
            Value::Struct(n)
        };
        let with_nodes = |ids: &[i32]| {
            let mut a = codec::with_defaults(schema, version);
            a.put(response::NODE_ENDPOINTS, Value::Array(Some(ids.iter().map(|&i| node(i)).collect())));
            a
        };
        let mut resp = with_nodes(&[1]);
        merge_node_endpoints(&mut resp, &[with_nodes(&[1, 2]), with_nodes(&[3])]);
        let ids: Vec<i32> = resp.iter(response::NODE_ENDPOINTS).map(|n| n.read(node_endpoints::NODE_ID).unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }

    #[test]
    fn requests_without_remapped_topics_go_as_they_came() {
        let req = request(4, &[("plain", &[(0, 0)])]);
        assert!(plan(&req, 4, &resolve).is_none());
    }
}
