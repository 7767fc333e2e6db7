//! The Fetch plan and answer on decoded requests and answers, no sockets.

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
