//! Requests that list partitions topic by topic (Produce, ListOffsets,
//! OffsetForLeaderEpoch) are rewritten virtual → physical. Kafka takes at
//! most one entry per partition in a request, and several virtual
//! partitions of one physical partition are several entries, so the
//! request is split into rounds: round `r` holds the `r`-th entry bound for
//! each (topic, physical partition). The rounds go upstream in order and
//! their answers are merged back into one response in the client's order.

use std::collections::HashMap;

use crate::kafka::api::ErrorCode;
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::kinds::{Array, Child, Str};
use crate::kafka::fields::{members, produce_request, produce_response, list_offsets_request, offset_for_leader_epoch_request, Field};
use crate::kafka::schema::{FieldType, StructSchema};

use super::mapping::{Decision, PhysicalPartition, TopicMapping, VirtualPartition};

/// The keys of a topics → partitions message: its topics array, a
/// topic's name, its partitions array and an entry's partition index.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub topics: Field<Array<Child>>,
    pub name: Field<Str>,
    pub partitions: Field<Array<Child>>,
    pub index: Field<i32>,
}

impl Shape {
    pub const fn of(topics: Field<Array<Child>>, name: Field<Str>, partitions: Field<Array<Child>>, index: Field<i32>) -> Shape {
        Shape { topics, name, partitions, index }
    }
}

pub const PRODUCE_REQUEST: Shape = {
    use produce_request::topic_data as t;
    Shape::of(produce_request::TOPIC_DATA, t::NAME, t::PARTITION_DATA, t::partition_data::INDEX)
};
pub const PRODUCE_RESPONSE: Shape = {
    use produce_response::responses as t;
    Shape::of(produce_response::RESPONSES, t::NAME, t::PARTITION_RESPONSES, t::partition_responses::INDEX)
};
pub const LIST_OFFSETS: Shape = {
    use list_offsets_request::topics as t;
    Shape::of(list_offsets_request::TOPICS, t::NAME, t::PARTITIONS, t::partitions::PARTITION_INDEX)
};
pub const LEADER_EPOCH: Shape = {
    use offset_for_leader_epoch_request::topics as t;
    Shape::of(offset_for_leader_epoch_request::TOPICS, t::TOPIC, t::PARTITIONS, t::partitions::PARTITION)
};

/// Where one entry of the client's request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Upstream { round: usize, physical: i32 },
    /// Answered by the proxy: refused with this error.
    Local { error_code: ErrorCode, message: String },
}

/// One client entry: the partition the client named and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub partition: i32,
    pub dest: Dest,
}

pub struct Split<'a> {
    /// Request bodies to send, in order.
    pub rounds: Vec<Struct<'a>>,
    /// Per client topic (name, placements in the client's order).
    pub topics: Vec<(String, Vec<Placement>)>,
    /// Whether any entry belonged to a remapped topic.
    pub remapped: bool,
}

/// A refusal of one entry: error code and the message to log and return.
pub type Refusal = (ErrorCode, String);

/// Rewrites one entry of a remapped topic after its index became physical:
/// (topic, entry, mapping, virtual, physical, k).
pub type EntryRewrite<'r, 'a> =
    &'r mut dyn FnMut(&str, &mut Struct<'a>, TopicMapping, VirtualPartition, PhysicalPartition, i32) -> Result<(), Refusal>;

/// Split `req`. `rewrite` is called for each entry of a remapped topic after
/// its index is set to the physical partition (produce re-tags records
/// there) and may refuse it.
pub fn split<'a>(req: &Struct<'a>, shape: &Shape, decide: &dyn Fn(&str) -> Decision, rewrite: EntryRewrite<'_, 'a>) -> Split<'a> {
    let mut rounds_entries: Vec<Vec<(usize, Struct<'a>)>> = Vec::new();
    let mut topics = Vec::new();
    let mut remapped = false;
    for (ti, topic) in req.iter(shape.topics).enumerate() {
        let name = topic.read(shape.name).unwrap_or_default().to_string();
        let decision = decide(&name);
        let mut occurrences: HashMap<i32, usize> = HashMap::new();
        let mut placements = Vec::new();
        for entry in topic.iter(shape.partitions) {
            let partition = entry.read(shape.index).unwrap_or(-1);
            let mut entry = entry.clone();
            let physical = match &decision {
                Decision::PassThrough => Ok(partition),
                Decision::Mismatch { rule, expected, actual } => {
                    remapped = true;
                    Err((
                        ErrorCode::INVALID_PARTITIONS,
                        format!("Topic {name} has {actual} physical partitions but {rule} expects {expected}"),
                    ))
                }
                Decision::Compacted { rule } => {
                    remapped = true;
                    Err((ErrorCode::INVALID_CONFIG, super::mapping::compacted_message(&name, rule)))
                }
                Decision::Remap(m) => {
                    remapped = true;
                    match m.locate(VirtualPartition(partition)) {
                        None => Err((ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, m.out_of_range_message(partition))),
                        Some((p, k)) => {
                            entry.write(shape.index, p.0);
                            rewrite(&name, &mut entry, *m, VirtualPartition(partition), p, k).map(|()| p.0)
                        }
                    }
                }
            };
            let dest = match physical {
                Ok(p) => {
                    let n = occurrences.entry(p).or_insert(0);
                    let round = *n;
                    *n += 1;
                    if rounds_entries.len() <= round {
                        rounds_entries.resize_with(round + 1, Vec::new);
                    }
                    rounds_entries[round].push((ti, entry));
                    Dest::Upstream { round, physical: p }
                }
                Err((error_code, message)) => Dest::Local { error_code, message },
            };
            placements.push(Placement { partition, dest });
        }
        topics.push((name, placements));
    }
    let template: Vec<&Struct<'a>> = req.iter(shape.topics).collect();
    let rounds = rounds_entries
        .into_iter()
        .map(|entries| {
            let mut body = req.clone();
            let mut out: Vec<Struct<'a>> = Vec::new();
            let mut out_index: HashMap<usize, usize> = HashMap::new();
            for (ti, entry) in entries {
                let slot = *out_index.entry(ti).or_insert_with(|| {
                    let mut t = template[ti].clone();
                    t.write(shape.partitions, Vec::<Value>::new());
                    out.push(t);
                    out.len() - 1
                });
                out[slot].items_mut(shape.partitions).expect("set above").push(Value::Struct(entry));
            }
            body.write(shape.topics, out);
            body
        })
        .collect();
    Split { rounds, topics, remapped }
}

/// Build the client's response from the decoded answers of the rounds.
/// `template` supplies the top-level fields (the first answer, or defaults
/// when every entry was refused locally).
pub fn merge<'a>(
    mut template: Struct<'a>,
    answers: &[Struct<'a>],
    shape: &Shape,
    topics: &[(String, Vec<Placement>)],
    version: i16,
) -> Struct<'a> {
    let topic_schema: &'a StructSchema = members(template.schema, shape.topics);
    let entry_schema: &'a StructSchema = members(topic_schema, shape.partitions);
    let find = |round: usize, name: &str, physical: i32| -> Option<Struct<'a>> {
        answers
            .get(round)?
            .iter(shape.topics)
            .filter(|t| t.read(shape.name) == Some(name))
            .flat_map(|t| t.iter(shape.partitions))
            .find(|e| e.read(shape.index) == Some(physical))
            .cloned()
    };
    let mut out_topics = Vec::with_capacity(topics.len());
    for (name, placements) in topics {
        let mut t = codec::with_defaults(topic_schema, version);
        t.write(shape.name, name.clone());
        let entries = placements
            .iter()
            .map(|pl| {
                let entry = match &pl.dest {
                    Dest::Upstream { round, physical } => match find(*round, name, *physical) {
                        Some(mut e) => {
                            e.write(shape.index, pl.partition);
                            e
                        }
                        None => error_entry(entry_schema, shape, version, pl.partition, ErrorCode::UNKNOWN_SERVER_ERROR, "the broker did not answer for this partition"),
                    },
                    Dest::Local { error_code, message } => error_entry(entry_schema, shape, version, pl.partition, *error_code, message),
                };
                Value::Struct(entry)
            })
            .collect::<Vec<_>>();
        t.write(shape.partitions, entries);
        out_topics.push(t);
    }
    template.write(shape.topics, out_topics);
    merge_shared_fields(&mut template, answers);
    template
}

/// The fields outside the partition entries come from every round, not
/// only the template's: the longest throttle (the client must wait out
/// whichever broker asked), and the leader hints of KIP-951 (Produce v10+
/// `node_endpoints`) of every round, once per node id, since the
/// partitions' `current_leader` may name any of them.
fn merge_shared_fields<'a>(template: &mut Struct<'a>, answers: &[Struct<'a>]) {
    // Produce, ListOffsets and OffsetForLeaderEpoch answers name these
    // fields alike (where they have them), each at its own position.
    const THROTTLE_TIME_MS: Field<i32> = Field::named(produce_response::THROTTLE_TIME_MS.name());
    const NODE_ENDPOINTS: Field<Array<Child>> = Field::named(produce_response::NODE_ENDPOINTS.name());
    use produce_response::node_endpoints::NODE_ID;
    if template.has(THROTTLE_TIME_MS) {
        if let Some(own) = template.read(THROTTLE_TIME_MS) {
            if let Some(longest) = answers.iter().filter_map(|a| a.read(THROTTLE_TIME_MS)).max() {
                template.write(THROTTLE_TIME_MS, longest.max(own));
            }
        }
    }
    if !template.has(NODE_ENDPOINTS) {
        return;
    }
    let mut nodes: Vec<Value<'a>> = template.items(NODE_ENDPOINTS).to_vec();
    let mut seen: Vec<i32> = nodes.iter().filter_map(Value::as_struct).filter_map(|n| n.read(NODE_ID)).collect();
    for a in answers {
        for n in a.iter(NODE_ENDPOINTS) {
            if let Some(id) = n.read(NODE_ID) {
                if !seen.contains(&id) {
                    seen.push(id);
                    nodes.push(Value::Struct(n.clone()));
                }
            }
        }
    }
    if !nodes.is_empty() {
        template.write(NODE_ENDPOINTS, nodes);
    }
}

/// A response entry carrying only an error: offsets, epochs and the
/// preferred read replica -1, an empty record set, the message where the
/// version has a field for it.
pub fn error_entry<'a>(
    schema: &'a StructSchema,
    shape: &Shape,
    version: i16,
    partition: i32,
    code: impl Into<ErrorCode>,
    message: &str,
) -> Struct<'a> {
    let code = code.into().code();
    let mut e = codec::with_defaults(schema, version);
    e.write(shape.index, partition);
    for (i, f) in schema.fields.iter().enumerate() {
        if !f.versions.contains(version) || f.is_tagged_in(version) {
            continue;
        }
        match (f.name.as_str(), &f.ty) {
            ("error_code" | "partition_error_code", _) => e.fields[i] = Value::Int16(code),
            ("error_message", _) => e.fields[i] = Value::str(message),
            (_, FieldType::Int64) => e.fields[i] = Value::Int64(-1),
            ("leader_epoch" | "preferred_read_replica", FieldType::Int32) => e.fields[i] = Value::Int32(-1),
            // Kafka answers errors with an empty record set, never null:
            // librdkafka drops a partition whose set is null, and every
            // later partition of the response with it.
            (_, FieldType::Records) => e.fields[i] = Value::Records(Some(std::borrow::Cow::Borrowed(&[]))),
            _ => {}
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::api::error;
    use crate::kafka::fields::{fetch_response, list_offsets_request as lo_req, list_offsets_response as lo_resp};
    use crate::kafka::fields::{offset_for_leader_epoch_response as le_resp, produce_response as pr_resp};
    use crate::kafka::fields::offset_for_leader_epoch_request as le_req;
    use crate::kafka::fields::produce_response::responses::partition_responses as pr_part;
    use crate::kafka::message::{decode_response, request_schema, response_schema};

    fn list_offsets_request(version: i16, topic: &str, partitions: &[i32]) -> Struct<'static> {
        let schema = &request_schema(2).unwrap().body;
        let mut req = codec::with_defaults(schema, version);
        let ts = members(schema, lo_req::TOPICS);
        let ps = members(ts, lo_req::topics::PARTITIONS);
        let mut t = codec::with_defaults(ts, version);
        t.write(lo_req::topics::NAME, topic.to_string());
        let entries = partitions
            .iter()
            .map(|&p| {
                let mut e = codec::with_defaults(ps, version);
                e.write(lo_req::topics::partitions::PARTITION_INDEX, p);
                e.write(lo_req::topics::partitions::TIMESTAMP, -1);
                Value::Struct(e)
            })
            .collect();
        t.put(lo_req::topics::PARTITIONS, Value::Array(Some(entries)));
        req.put(lo_req::TOPICS, Value::Array(Some(vec![Value::Struct(t)])));
        req
    }

    #[test]
    fn siblings_of_one_physical_partition_go_to_separate_rounds() {
        let m = TopicMapping::new(20, 4);
        let req = list_offsets_request(7, "t", &[0, 4, 8, 1, 25]);
        let decide = |_: &str| Decision::Remap(m);
        let s = split(&req, &LIST_OFFSETS, &decide, &mut |_, _, _, _, _, _| Ok(()));
        assert_eq!(s.rounds.len(), 3, "0, 4 and 8 all live on physical 0");
        let indexes = |r: &Struct<'_>| -> Vec<i32> {
            r.iter(lo_req::TOPICS).flat_map(|t| t.iter(lo_req::topics::PARTITIONS)).map(|e| e.read(lo_req::topics::partitions::PARTITION_INDEX).unwrap()).collect()
        };
        assert_eq!(indexes(&s.rounds[0]), vec![0, 1]);
        assert_eq!(indexes(&s.rounds[1]), vec![0]);
        assert_eq!(indexes(&s.rounds[2]), vec![0]);
        assert_eq!(s.topics[0].1[4].dest, Dest::Local { error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, message: "Virtual partition 25 out of range (max: 19)".into() });

        // Answers: physical offsets per round; merged back under virtual numbers in client order.
        let schema = &response_schema(2).unwrap().body;
        let answer = |entries: &[(i32, i64)]| {
            let mut r = codec::with_defaults(schema, 7);
            let ts = members(schema, lo_resp::TOPICS);
            let ps = members(ts, lo_resp::topics::PARTITIONS);
            let mut t = codec::with_defaults(ts, 7);
            t.write(lo_resp::topics::NAME, "t");
            t.put(lo_resp::topics::PARTITIONS, Value::Array(Some(entries.iter().map(|&(p, o)| {
                let mut e = codec::with_defaults(ps, 7);
                e.write(lo_resp::topics::partitions::PARTITION_INDEX, p);
                e.write(lo_resp::topics::partitions::OFFSET, o);
                Value::Struct(e)
            }).collect())));
            r.put(lo_resp::TOPICS, Value::Array(Some(vec![Value::Struct(t)])));
            r
        };
        let answers = vec![answer(&[(0, 100), (1, 7)]), answer(&[(0, 100)]), answer(&[(0, 100)])];
        let merged = merge(answers[0].clone(), &answers, &LIST_OFFSETS, &s.topics, 7);
        let got: Vec<(i32, i16, i64)> = merged
            .iter(lo_resp::TOPICS)
            .flat_map(|t| t.iter(lo_resp::topics::PARTITIONS))
            .map(|e| (e.read(lo_resp::topics::partitions::PARTITION_INDEX).unwrap(), e.read(lo_resp::topics::partitions::ERROR_CODE).unwrap(), e.read(lo_resp::topics::partitions::OFFSET).unwrap()))
            .collect();
        assert_eq!(got, vec![(0, 0, 100), (4, 0, 100), (8, 0, 100), (1, 0, 7), (25, error::UNKNOWN_TOPIC_OR_PARTITION, -1)]);
    }

    /// Kafka's FetchResponse.partitionResponse answers an error with
    /// MemoryRecords.EMPTY and no preferred replica (-1); a null record set
    /// makes librdkafka drop the partition and every later one.
    #[test]
    fn fetch_error_entries_carry_an_empty_record_set() {
        use crate::kafka::message::encode_response;
        let schema = &response_schema(1).unwrap().body;
        let ts = members(schema, fetch_response::RESPONSES);
        let ps = members(ts, fetch_response::responses::PARTITIONS);
        let shape = {
            use fetch_response::responses as t;
            Shape::of(fetch_response::RESPONSES, t::TOPIC, t::PARTITIONS, t::partitions::PARTITION_INDEX)
        };
        for version in [4i16, 11, 12, 16] {
            let e = error_entry(ps, &shape, version, 7, error::UNKNOWN_TOPIC_OR_PARTITION, "");
            assert_eq!(e.value(fetch_response::responses::partitions::RECORDS), &Value::Records(Some(std::borrow::Cow::Borrowed(&[][..]))), "v{version}");
            if version >= 11 {
                assert_eq!(e.read(fetch_response::responses::partitions::PREFERRED_READ_REPLICA), Some(-1), "v{version}");
            }
            let mut body = codec::with_defaults(schema, version);
            let mut t = codec::with_defaults(ts, version);
            t.put(fetch_response::responses::PARTITIONS, Value::Array(Some(vec![Value::Struct(e)])));
            body.put(fetch_response::RESPONSES, Value::Array(Some(vec![Value::Struct(t)])));
            let bytes = encode_response(1, version, 1, &[], &body).unwrap();
            // The record set is the partition's last field: length 0
            // (compact: 1) then, from v12, the partition's tagged fields.
            let tail: &[u8] = if version >= 12 { &[1, 0, 0, 0] } else { &[0, 0, 0, 0] };
            assert!(bytes.ends_with(tail), "v{version}: {:?}", &bytes[bytes.len() - 8..]);
        }
    }

    #[test]
    fn pass_through_topics_keep_their_partitions() {
        let req = list_offsets_request(1, "plain", &[0, 1, 2]);
        let s = split(&req, &LIST_OFFSETS, &|_: &str| Decision::PassThrough, &mut |_, _, _, _, _, _| Ok(()));
        assert!(!s.remapped);
        assert_eq!(s.rounds.len(), 1);
        assert_eq!(s.rounds[0], req);
    }

    /// Tansu does not offer OffsetForLeaderEpoch, so its mapping is shown
    /// here on encoded bytes of every version: virtual partitions out,
    /// physical ones upstream, answers back under virtual numbers.
    #[test]
    fn offset_for_leader_epoch_maps_both_ways_in_every_version() {
        use crate::kafka::message::{encode_request, encode_response};
        let m = TopicMapping::new(8, 2);
        for version in 0..=4i16 {
            let schema = &request_schema(23).unwrap().body;
            let ts = members(schema, le_req::TOPICS);
            let ps = members(ts, le_req::topics::PARTITIONS);
            let mut req = codec::with_defaults(schema, version);
            let mut t = codec::with_defaults(ts, version);
            t.write(le_req::topics::TOPIC, "t");
            let entries = [5, 1, 2]
                .iter()
                .map(|&v| {
                    let mut e = codec::with_defaults(ps, version);
                    e.write(le_req::topics::partitions::PARTITION, v);
                    e.write(le_req::topics::partitions::LEADER_EPOCH, 9);
                    Value::Struct(e)
                })
                .collect();
            t.put(le_req::topics::PARTITIONS, Value::Array(Some(entries)));
            req.put(le_req::TOPICS, Value::Array(Some(vec![Value::Struct(t)])));
            // Through the wire and back, as the proxy receives it.
            let bytes = encode_request(23, version, 1, None, &req).unwrap();
            let (_, body) = crate::kafka::header::RequestHeader::parse(&bytes).unwrap();
            let decoded = codec::decode(request_schema(23).unwrap(), version, body).unwrap();
            let s = split(&decoded, &LEADER_EPOCH, &|_: &str| Decision::Remap(m), &mut |_, _, _, _, _, _| Ok(()));
            // 5 and 1 both live on physical 1, 2 on physical 0: two rounds.
            assert_eq!(s.rounds.len(), 2, "v{version}");
            let physical: Vec<Vec<i32>> = s
                .rounds
                .iter()
                .map(|r| r.iter(le_req::TOPICS).flat_map(|t| t.iter(le_req::topics::PARTITIONS)).map(|e| e.read(le_req::topics::partitions::PARTITION).unwrap()).collect())
                .collect();
            assert_eq!(physical, vec![vec![1, 0], vec![1]], "v{version}");
            let rs = &response_schema(23).unwrap().body;
            let rts = members(rs, le_resp::TOPICS);
            let rps = members(rts, le_resp::topics::PARTITIONS);
            let answer = |entries: &[(i32, i64)]| {
                let mut r = codec::with_defaults(rs, version);
                let mut t = codec::with_defaults(rts, version);
                t.write(le_resp::topics::TOPIC, "t");
                t.put(le_resp::topics::PARTITIONS, Value::Array(Some(entries.iter().map(|&(p, end)| {
                    let mut e = codec::with_defaults(rps, version);
                    e.write(le_resp::topics::partitions::PARTITION, p);
                    e.write(le_resp::topics::partitions::END_OFFSET, end);
                    Value::Struct(e)
                }).collect())));
                r.put(le_resp::TOPICS, Value::Array(Some(vec![Value::Struct(t)])));
                r
            };
            let answers = vec![answer(&[(1, 40), (0, 7)]), answer(&[(1, 40)])];
            let merged = merge(answers[0].clone(), &answers, &LEADER_EPOCH, &s.topics, version);
            let out = encode_response(23, version, 1, &[], &merged).unwrap();
            let back = decode_response(23, version, &out).unwrap().body;
            let got: Vec<(i32, i64)> = back
                .iter(le_resp::TOPICS)
                .flat_map(|t| t.iter(le_resp::topics::PARTITIONS))
                .map(|e| (e.read(le_resp::topics::partitions::PARTITION).unwrap(), e.read(le_resp::topics::partitions::END_OFFSET).unwrap()))
                .collect();
            assert_eq!(got, vec![(5, 40), (1, 40), (2, 7)], "v{version}");
        }
    }

    /// Two rounds of one client's Produce (VPs 0 and 2 both live on
    /// physical 0) are answered by brokers that each name a leader hint
    /// (KIP-951) and a throttle: the client's merged answer carries every
    /// round's node_endpoints (by node id, once each), each partition's own
    /// current_leader, and the longest throttle, as one Kafka answer would.
    #[test]
    fn merged_produce_answers_keep_every_rounds_leader_hints_and_the_longest_throttle() {
        use crate::kafka::message::{encode_response, request_schema};
        for version in [10i16, 11] {
            let m = TopicMapping::new(4, 2);
            let rs = &request_schema(0).unwrap().body;
            let rts = members(rs, produce_request::TOPIC_DATA);
            let rps = members(rts, produce_request::topic_data::PARTITION_DATA);
            let mut req = codec::with_defaults(rs, version);
            let mut t = codec::with_defaults(rts, version);
            t.write(produce_request::topic_data::NAME, "t");
            let entries = [0, 2, 3]
                .iter()
                .map(|&v| {
                    let mut e = codec::with_defaults(rps, version);
                    e.write(produce_request::topic_data::partition_data::INDEX, v);
                    Value::Struct(e)
                })
                .collect();
            t.put(produce_request::topic_data::PARTITION_DATA, Value::Array(Some(entries)));
            req.put(produce_request::TOPIC_DATA, Value::Array(Some(vec![Value::Struct(t)])));
            let s = split(&req, &PRODUCE_REQUEST, &|_: &str| Decision::Remap(m), &mut |_, _, _, _, _, _| Ok(()));
            assert_eq!(s.rounds.len(), 2, "VPs 0 and 2 share physical 0");

            let schema = &response_schema(0).unwrap().body;
            let ts = members(schema, pr_resp::RESPONSES);
            let ps = members(ts, pr_resp::responses::PARTITION_RESPONSES);
            let leader_schema = members(ps, pr_part::CURRENT_LEADER);
            let es = members(schema, pr_resp::NODE_ENDPOINTS);
            let answer = |entries: &[(i32, i64, i32)], nodes: &[(i32, &str)], throttle: i32| {
                let mut r = codec::with_defaults(schema, version);
                let mut t = codec::with_defaults(ts, version);
                t.write(pr_resp::responses::NAME, "t");
                t.put(pr_resp::responses::PARTITION_RESPONSES, Value::Array(Some(entries.iter().map(|&(p, offset, leader)| {
                    let mut e = codec::with_defaults(ps, version);
                    e.write(pr_part::INDEX, p);
                    e.write(pr_part::BASE_OFFSET, offset);
                    let mut l = codec::with_defaults(leader_schema, version);
                    l.write(pr_part::current_leader::LEADER_ID, leader);
                    l.write(pr_part::current_leader::LEADER_EPOCH, leader * 10);
                    e.put(pr_part::CURRENT_LEADER, Value::Struct(l));
                    Value::Struct(e)
                }).collect())));
                r.put(pr_resp::RESPONSES, Value::Array(Some(vec![Value::Struct(t)])));
                r.write(pr_resp::THROTTLE_TIME_MS, throttle);
                r.put(pr_resp::NODE_ENDPOINTS, Value::Array(Some(nodes.iter().map(|&(id, host)| {
                    let mut n = codec::with_defaults(es, version);
                    n.write(pr_resp::node_endpoints::NODE_ID, id);
                    n.write(pr_resp::node_endpoints::HOST, host.to_string());
                    n.write(pr_resp::node_endpoints::PORT, 9092);
                    n.put(pr_resp::node_endpoints::RACK, Value::String(None));
                    Value::Struct(n)
                }).collect())));
                r
            };
            let answers = vec![
                answer(&[(0, 10, 1), (1, 20, 1)], &[(1, "b1")], 3),
                answer(&[(0, 11, 2)], &[(2, "b2"), (1, "b1")], 7),
            ];
            let merged = merge(answers[0].clone(), &answers, &PRODUCE_RESPONSE, &s.topics, version);
            // Through the wire, as the client reads it.
            let bytes = encode_response(0, version, 1, &[], &merged).unwrap();
            let back = decode_response(0, version, &bytes).unwrap().body;
            let mut nodes: Vec<(i32, String)> = back
                .iter(pr_resp::NODE_ENDPOINTS)
                .map(|n| (n.read(pr_resp::node_endpoints::NODE_ID).unwrap(), n.read(pr_resp::node_endpoints::HOST).unwrap().to_string()))
                .collect();
            nodes.sort();
            assert_eq!(nodes, vec![(1, "b1".into()), (2, "b2".into())], "v{version}: node_endpoints of every round, once each");
            assert_eq!(back.read(pr_resp::THROTTLE_TIME_MS), Some(7), "v{version}: the longest throttle of the rounds");
            let leaders: Vec<(i32, i64, i32)> = back
                .iter(pr_resp::RESPONSES)
                .flat_map(|t| t.iter(pr_resp::responses::PARTITION_RESPONSES))
                .map(|e| (e.read(pr_part::INDEX).unwrap(), e.read(pr_part::BASE_OFFSET).unwrap(), e.read(pr_part::CURRENT_LEADER).unwrap().read(pr_part::current_leader::LEADER_ID).unwrap()))
                .collect();
            assert_eq!(leaders, vec![(0, 10, 1), (2, 11, 2), (3, 20, 1)], "v{version}");

            // An answer the proxy builds alone (every entry refused) has a
            // throttle of 0.
            let refused = split(&req, &PRODUCE_REQUEST, &|_: &str| Decision::Compacted { rule: "r".into() }, &mut |_, _, _, _, _, _| Ok(()));
            let alone = merge(codec::with_defaults(schema, version), &[], &PRODUCE_RESPONSE, &refused.topics, version);
            assert_eq!(alone.read(pr_resp::THROTTLE_TIME_MS), Some(0));
            assert!(alone.iter(pr_resp::RESPONSES).flat_map(|t| t.iter(pr_resp::responses::PARTITION_RESPONSES)).all(|e| e.read(pr_part::ERROR_CODE) == Some(error::INVALID_CONFIG)));
        }
    }
}
