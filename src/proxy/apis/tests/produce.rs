//! Produce: split per physical partition, k ≥ 1 records tagged, answers
//! merged back under the virtual partitions; an idempotent k ≥ 1 batch
//! waits for its derived producer id.

use std::borrow::Cow;

use super::*;
use crate::kafka::fields::produce_request::{self as req, topic_data};
use crate::kafka::fields::produce_response::{self as resp, responses};
use crate::kafka::records::{self, build_batch, BuildOptions, Item, RecordData, TAG_HEADER};
use crate::kafka::api::ErrorCode;
use crate::proxy::route::Route;

const VERSION: i16 = 9;

fn batch(value: &str, producer_id: i64) -> Vec<u8> {
    let record = RecordData { value: Some(value.as_bytes().to_vec()), ..Default::default() };
    let (producer_epoch, base_sequence) = if producer_id >= 0 { (0, 0) } else { (-1, -1) };
    build_batch(&[record], &BuildOptions { producer_id, producer_epoch, base_sequence, ..Default::default() })
}

/// A produce of one batch per (virtual partition, value) to `topic`.
fn produce(topic: &str, entries: &[(i32, Vec<u8>)]) -> Struct<'static> {
    let mut body = request(ApiKey::Produce, VERSION);
    body.write(req::ACKS, -1i16);
    body.write(req::TIMEOUT_MS, 1000);
    let mut t = element(body.schema, req::TOPIC_DATA, VERSION);
    t.write(topic_data::NAME, topic.to_string());
    let partitions: Vec<Struct<'static>> = entries
        .iter()
        .map(|(v, data)| {
            let mut p = element(t.schema, topic_data::PARTITION_DATA, VERSION);
            p.write(topic_data::partition_data::INDEX, *v);
            p.write(topic_data::partition_data::RECORDS, Some(Cow::Owned(data.clone())));
            p
        })
        .collect();
    t.write(topic_data::PARTITION_DATA, partitions);
    body.write(req::TOPIC_DATA, vec![t]);
    body
}

/// The value of the single record of `data`, and its `kpr.vp` tag.
fn record_and_tag(data: &[u8]) -> (String, Option<String>) {
    let Some(Ok(Item::Batch(b))) = records::batches(data).next() else { panic!("one whole batch") };
    let tag = records::first_record_header(&b, TAG_HEADER).expect("readable").map(|t| String::from_utf8(t).expect("ASCII"));
    let recs = records::records(&b).expect("readable records");
    (String::from_utf8(recs[0].value.clone().expect("a value")).expect("UTF-8"), tag)
}

#[test]
fn a_remapped_produce_is_split_per_physical_partition_tagged_and_merged_back() {
    let mut h = Harness::new();
    // v1 and v3 share physical partition 1 (k = 0 and k = 1); v4 is k = 2 on 0.
    let body = produce(EVENTS, &[(1, batch("to v1", -1)), (3, batch("to v3", -1)), (4, batch("to v4", -1))]);
    let planned = h.plan(ApiKey::Produce, VERSION, &body);
    assert!(planned.asked.is_empty(), "nothing to look up: {:?}", planned.asked);
    let (parts, finish) = forwarded(planned.plan);

    // Where each virtual partition's batch went: (part, physical partition).
    let mut placed: Vec<(String, usize, i32)> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let sent = request_of(part, ApiKey::Produce);
        let mut physical_seen = Vec::new();
        for t in sent.iter(req::TOPIC_DATA) {
            assert_eq!(t.read(topic_data::NAME), Some(EVENTS));
            for p in t.iter(topic_data::PARTITION_DATA) {
                let physical = p.read(topic_data::partition_data::INDEX).expect("an index");
                assert!((0..2).contains(&physical), "physical partition numbers go upstream, got {physical}");
                assert!(!physical_seen.contains(&physical), "one batch per physical partition per request");
                physical_seen.push(physical);
                let (value, tag) = record_and_tag(p.read(topic_data::partition_data::RECORDS).expect("records"));
                let expected_tag = match value.as_str() {
                    "to v1" => None,
                    "to v3" => Some("3".to_string()),
                    "to v4" => Some("4".to_string()),
                    other => panic!("unexpected record {other}"),
                };
                assert_eq!(tag, expected_tag, "k >= 1 records are tagged with their virtual partition, k = 0 ones are not");
                placed.push((value, i, physical));
            }
        }
        let first = sent.iter(req::TOPIC_DATA).next().and_then(|t| t.iter(topic_data::PARTITION_DATA).next());
        let first = first.and_then(|p| p.read(topic_data::partition_data::INDEX)).expect("an entry");
        assert_eq!(part.route, Route::Leader { topic: EVENTS.into(), partition: first }, "each round goes to its leader");
    }
    placed.sort();
    assert_eq!(
        placed.iter().map(|(v, _, p)| (v.as_str(), *p)).collect::<Vec<_>>(),
        vec![("to v1", 1), ("to v3", 1), ("to v4", 0)]
    );
    assert_eq!(parts.len(), 2, "v1 and v3 share a physical partition: two rounds");

    // Each physical partition answers base offset 100 * (part + 1) + p.
    let answers = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let sent = request_of(part, ApiKey::Produce);
            let mut body = response(ApiKey::Produce, VERSION);
            let mut r = element(body.schema, resp::RESPONSES, VERSION);
            r.write(responses::NAME, EVENTS);
            let rows = sent.iter(req::TOPIC_DATA).flat_map(|t| t.iter(topic_data::PARTITION_DATA)).map(|p| {
                let physical = p.read(topic_data::partition_data::INDEX).expect("an index");
                (physical, 100 * (i as i64 + 1) + physical as i64)
            });
            let (index, offset) = (responses::partition_responses::INDEX, responses::partition_responses::BASE_OFFSET);
            let entries = partition_entries(&r, responses::PARTITION_RESPONSES, index, offset, VERSION, rows);
            r.write(responses::PARTITION_RESPONSES, entries);
            body.write(resp::RESPONSES, vec![r]);
            answer_to(part, ApiKey::Produce, VERSION, &body)
        })
        .collect();
    let bytes = done(h.complete(finish, ApiKey::Produce, VERSION, answers));
    let merged = read_answer(ApiKey::Produce, VERSION, &bytes);
    let mut got: Vec<(i32, i64)> = merged
        .iter(resp::RESPONSES)
        .inspect(|r| assert_eq!(r.read(responses::NAME), Some(EVENTS)))
        .flat_map(|r| r.iter(responses::PARTITION_RESPONSES))
        .map(|e| {
            assert_eq!(e.read(responses::partition_responses::ERROR_CODE), Some(0));
            (e.read(responses::partition_responses::INDEX).unwrap(), e.read(responses::partition_responses::BASE_OFFSET).unwrap())
        })
        .collect();
    got.sort();
    let offset_of = |value: &str| {
        let (_, part, p) = placed.iter().find(|(v, _, _)| v == value).unwrap();
        100 * (*part as i64 + 1) + *p as i64
    };
    assert_eq!(got, vec![(1, offset_of("to v1")), (3, offset_of("to v3")), (4, offset_of("to v4"))], "virtual partitions, each with its round's offset");
}

#[test]
fn an_idempotent_k1_batch_with_an_unknown_derived_id_waits_for_it() {
    let mut h = Harness::new();
    let body = produce(EVENTS, &[(1, batch("k0", 42)), (3, batch("k1", 42))]);
    let planned = h.plan(ApiKey::Produce, VERSION, &body);
    assert!(matches!(planned.plan, Plan::AfterLookups), "planned again once the id is known");
    assert_eq!(planned.asked, vec![Lookup::DerivedProducerId { client: (42, 0), k: 1 }]);

    // Only k = 0: the client's own id, nothing to wait for.
    let body = produce(EVENTS, &[(1, batch("k0", 42))]);
    let planned = h.plan(ApiKey::Produce, VERSION, &body);
    assert!(planned.asked.is_empty());
    let (parts, _) = forwarded(planned.plan);
    assert_eq!(parts.len(), 1);
}

#[test]
fn a_plain_topic_goes_as_it_came_to_its_leader() {
    let mut h = Harness::new();
    let body = produce(PLAIN, &[(2, batch("plain", -1))]);
    let (parts, finish) = forwarded(h.plan(ApiKey::Produce, VERSION, &body).plan);
    assert_eq!(parts.len(), 1);
    assert!(matches!(parts[0].frame, crate::proxy::plan::PartFrame::Original), "the client's bytes, not re-encoded");
    assert_eq!(parts[0].route, Route::Leader { topic: PLAIN.into(), partition: 2 });
    assert!(matches!(finish, Finish::AsIs), "below v10 there are no leader hints to rewrite");
}

/// Round `round`'s canned answer: one entry per (physical partition,
/// error code, base offset) of [`EVENTS`], and the leader hint of broker
/// `node` (KIP-951, v10+) as the broker gives it, at its own address.
fn round_answer(version: i16, node: i32, entries: &[(i32, i16, i64)]) -> Vec<u8> {
    use responses::partition_responses as entry;
    let mut body = response(ApiKey::Produce, version);
    let mut r = element(body.schema, resp::RESPONSES, version);
    r.write(responses::NAME, EVENTS);
    let rows = entries.iter().map(|(physical, _, offset)| (*physical, *offset));
    let mut written = partition_entries(&r, responses::PARTITION_RESPONSES, entry::INDEX, entry::BASE_OFFSET, version, rows);
    for (e, (_, code, _)) in written.iter_mut().zip(entries) {
        e.write(entry::ERROR_CODE, *code);
    }
    r.write(responses::PARTITION_RESPONSES, written);
    body.write(resp::RESPONSES, vec![r]);
    let mut hint = element(body.schema, resp::NODE_ENDPOINTS, version);
    hint.write(resp::node_endpoints::NODE_ID, node);
    hint.write(resp::node_endpoints::HOST, "127.0.0.1");
    hint.write(resp::node_endpoints::PORT, BROKER_PORT_BASE + node);
    body.write(resp::NODE_ENDPOINTS, vec![hint]);
    crate::kafka::message::encode_response(ApiKey::Produce as i16, version, 5000 + node, &[], &body).expect("an encodable answer")
}

/// (virtual partition, error code, base offset, error message) of every
/// entry of a client answer, sorted.
fn entries_of(answer: &Struct<'_>) -> Vec<(i32, i16, i64, Option<String>)> {
    use responses::partition_responses as entry;
    let mut out: Vec<_> = answer
        .iter(resp::RESPONSES)
        .inspect(|r| assert_eq!(r.read(responses::NAME), Some(EVENTS)))
        .flat_map(|r| r.iter(responses::PARTITION_RESPONSES))
        .map(|e| {
            let message = e.read(entry::ERROR_MESSAGE).map(str::to_string);
            (e.read(entry::INDEX).unwrap(), e.read(entry::ERROR_CODE).unwrap(), e.read(entry::BASE_OFFSET).unwrap(), message)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_answer_merges_the_rounds_explains_a_tagged_too_large_entry_and_points_hints_at_the_proxy() {
    use crate::proxy::apis::produce::{answer, Tagged};
    use crate::remap::split::{Dest, Placement};
    const V: i16 = 10;
    let h = Harness::new();
    let too_large = ErrorCode::MESSAGE_TOO_LARGE.code();
    // v1 (k = 0, untagged) and v4 (k = 2) went in round 0, v3 (k = 1) in
    // round 1; the broker found both batches on physical partition 1 too large.
    let upstream = |partition, round, physical| Placement { partition, dest: Dest::Upstream { round, physical } };
    let placements = vec![(EVENTS.to_string(), vec![upstream(1, 0, 1), upstream(3, 1, 1), upstream(4, 0, 0)])];
    let tagged = vec![
        Tagged { topic: EVENTS.into(), virtual_partition: 3, physical_count: 2 },
        Tagged { topic: EVENTS.into(), virtual_partition: 4, physical_count: 2 },
    ];
    let answers = vec![round_answer(V, 1, &[(1, too_large, -1), (0, 0, 40)]), round_answer(V, 2, &[(1, too_large, -1)])];
    let bytes = answer(&h.ctx.settings.advertised, &placements, &tagged, V, CLIENT_CORRELATION, answers).expect("an answer");
    let merged = read_answer(ApiKey::Produce, V, &bytes);
    let explained = crate::remap::produce::too_large_message(EVENTS, crate::remap::mapping::VirtualPartition(3), 2);
    assert_eq!(
        entries_of(&merged),
        vec![(1, too_large, -1, None), (3, too_large, -1, Some(explained)), (4, 0, 40, None)],
        "virtual partitions back; only the tagged entry the broker refused gets the tag's explanation"
    );
    let hints: Vec<(i32, &str, i32)> = merged
        .iter(resp::NODE_ENDPOINTS)
        .map(|n| (n.read(resp::node_endpoints::NODE_ID).unwrap(), n.read(resp::node_endpoints::HOST).unwrap(), n.read(resp::node_endpoints::PORT).unwrap()))
        .collect();
    assert_eq!(hints, vec![(1, ADVERTISED.0, ADVERTISED.1), (2, ADVERTISED.0, ADVERTISED.1)], "every round's leader hint, at the proxy");
}

#[test]
fn with_every_entry_refused_here_the_answer_is_made_from_no_answers() {
    use crate::proxy::apis::produce::answer;
    use crate::remap::split::{Dest, Placement};
    let h = Harness::new();
    let refused = Dest::Local { error_code: ErrorCode::CORRUPT_MESSAGE, message: "bad CRC".into() };
    let placements = vec![(EVENTS.to_string(), vec![Placement { partition: 7, dest: refused }])];
    let bytes = answer(&h.ctx.settings.advertised, &placements, &[], VERSION, CLIENT_CORRELATION, Vec::new()).expect("an answer");
    let merged = read_answer(ApiKey::Produce, VERSION, &bytes);
    assert_eq!(entries_of(&merged), vec![(7, ErrorCode::CORRUPT_MESSAGE.code(), -1, Some("bad CRC".into()))]);
}
