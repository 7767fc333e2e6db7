//! Fetch: one sessionless upstream read per physical partition and offset,
//! each virtual partition answered with its own records only.

use std::borrow::Cow;

use super::*;
use crate::kafka::fields::fetch_request::{self as req, topics};
use crate::kafka::fields::fetch_response::{self as resp, responses};
use crate::kafka::records::{self, build_batch, BuildOptions, Item, RecordData, TAG_HEADER};
use crate::proxy::route::Route;

const VERSION: i16 = 12;

/// The values of the records of `data`, empty batches skipped.
fn values(data: &[u8]) -> Vec<String> {
    records::batches(data)
        .flat_map(|item| {
            let Ok(Item::Batch(b)) = item else { panic!("whole batches") };
            records::records(&b).expect("readable")
        })
        .map(|r| String::from_utf8(r.value.expect("a value")).expect("UTF-8"))
        .collect()
}

#[test]
fn siblings_read_together_and_each_gets_its_own_records() {
    let mut h = Harness::new();
    let mut body = request(ApiKey::Fetch, VERSION);
    body.write(req::REPLICA_ID, -1);
    body.write(req::MAX_BYTES, 1 << 20);
    body.write(req::SESSION_EPOCH, -1);
    let mut t = element(body.schema, req::TOPICS, VERSION);
    t.write(topics::TOPIC, EVENTS);
    // v1 (k = 0) and v3 (k = 1) both live on physical partition 1.
    let partitions: Vec<Struct<'static>> = [1, 3]
        .into_iter()
        .map(|v| {
            let mut p = element(t.schema, topics::PARTITIONS, VERSION);
            p.write(topics::partitions::PARTITION, v);
            p.write(topics::partitions::FETCH_OFFSET, 5i64);
            p.write(topics::partitions::PARTITION_MAX_BYTES, 1 << 20);
            p
        })
        .collect();
    t.write(topics::PARTITIONS, partitions);
    body.write(req::TOPICS, vec![t]);
    let (parts, finish) = forwarded(h.plan(ApiKey::Fetch, VERSION, &body).plan);
    assert_eq!(parts.len(), 1, "siblings at one offset: one read");
    assert_eq!(parts[0].route, Route::Leader { topic: EVENTS.into(), partition: 1 });
    let sent = request_of(&parts[0], ApiKey::Fetch);
    assert_eq!(sent.read(req::SESSION_ID), Some(0), "sessionless upstream");
    let read: Vec<(i32, i64)> = sent
        .iter(req::TOPICS)
        .flat_map(|t| t.iter(topics::PARTITIONS))
        .map(|p| (p.read(topics::partitions::PARTITION).unwrap(), p.read(topics::partitions::FETCH_OFFSET).unwrap()))
        .collect();
    assert_eq!(read, vec![(1, 5)], "physical partition 1, read once");

    // Offset 5 untagged (v1), offset 6 tagged for v3.
    let recs = [("for v1", None, 0), ("for v3", Some("3"), 1)].map(|(value, tag, delta)| RecordData {
        value: Some(value.as_bytes().to_vec()),
        headers: tag.iter().map(|t| (TAG_HEADER.to_string(), Some(t.as_bytes().to_vec()))).collect(),
        offset_delta: delta,
        ..Default::default()
    });
    let batch = build_batch(&recs, &BuildOptions { base_offset: 5, ..Default::default() });
    let mut a = response(ApiKey::Fetch, VERSION);
    let mut r = element(a.schema, resp::RESPONSES, VERSION);
    r.write(responses::TOPIC, EVENTS);
    let mut p = element(r.schema, responses::PARTITIONS, VERSION);
    p.write(responses::partitions::PARTITION_INDEX, 1);
    p.write(responses::partitions::HIGH_WATERMARK, 7i64);
    p.write(responses::partitions::LAST_STABLE_OFFSET, 7i64);
    p.write(responses::partitions::PREFERRED_READ_REPLICA, -1);
    p.write(responses::partitions::RECORDS, Some(Cow::Owned(batch)));
    r.write(responses::PARTITIONS, vec![p]);
    a.write(resp::RESPONSES, vec![r]);
    let answer = answer_to(&parts[0], ApiKey::Fetch, VERSION, &a);
    let bytes = done(h.complete(finish, ApiKey::Fetch, VERSION, vec![answer]));
    let shown = read_answer(ApiKey::Fetch, VERSION, &bytes);
    let got: Vec<(i32, i16, Vec<String>)> = shown
        .iter(resp::RESPONSES)
        .flat_map(|t| t.iter(responses::PARTITIONS))
        .map(|p| {
            let data = p.read(responses::partitions::RECORDS).expect("a record set, never null");
            (p.read(responses::partitions::PARTITION_INDEX).unwrap(), p.read(responses::partitions::ERROR_CODE).unwrap(), values(data))
        })
        .collect();
    assert_eq!(got, vec![(1, 0, vec!["for v1".to_string()]), (3, 0, vec!["for v3".to_string()])]);
}
