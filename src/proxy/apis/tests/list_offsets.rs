//! ListOffsets: split per physical partition, answers merged back under
//! the virtual partitions the client named.

use super::*;
use crate::kafka::fields::list_offsets_request::{self as req, topics};
use crate::kafka::fields::list_offsets_response::{self as resp, topics as answered};
use crate::proxy::route::Route;

const VERSION: i16 = 7;

#[test]
fn list_offsets_is_split_per_physical_partition_and_merged_back() {
    let mut h = Harness::new();
    let mut body = request(ApiKey::ListOffsets, VERSION);
    body.write(req::REPLICA_ID, -1);
    let mut t = element(body.schema, req::TOPICS, VERSION);
    t.write(topics::NAME, EVENTS);
    let partitions: Vec<Struct<'static>> = [3, 1, 4]
        .into_iter()
        .map(|v| {
            let mut p = element(t.schema, topics::PARTITIONS, VERSION);
            p.write(topics::partitions::PARTITION_INDEX, v);
            p.write(topics::partitions::TIMESTAMP, -1i64);
            p
        })
        .collect();
    t.write(topics::PARTITIONS, partitions);
    body.write(req::TOPICS, vec![t]);
    let (parts, finish) = forwarded(h.plan(ApiKey::ListOffsets, VERSION, &body).plan);
    assert_eq!(parts.len(), 2, "v3 and v1 both live on physical partition 1: two rounds");

    // Each round answers offset 1000 * (round + 1) + physical partition.
    let mut answers = Vec::new();
    for (round, part) in parts.iter().enumerate() {
        let sent = request_of(part, ApiKey::ListOffsets);
        let physical: Vec<i32> = sent.iter(req::TOPICS).flat_map(|t| t.iter(topics::PARTITIONS)).map(|p| p.read(topics::partitions::PARTITION_INDEX).unwrap()).collect();
        assert!(physical.iter().all(|p| (0..2).contains(p)), "physical partitions upstream: {physical:?}");
        assert_eq!(part.route, Route::Leader { topic: EVENTS.into(), partition: physical[0] });
        let mut a = response(ApiKey::ListOffsets, VERSION);
        let mut t = element(a.schema, resp::TOPICS, VERSION);
        t.write(answered::NAME, EVENTS);
        let rows = physical.iter().map(|&p| (p, 1000 * (round as i64 + 1) + p as i64));
        let (index, offset) = (answered::partitions::PARTITION_INDEX, answered::partitions::OFFSET);
        let entries = partition_entries(&t, answered::PARTITIONS, index, offset, VERSION, rows);
        t.write(answered::PARTITIONS, entries);
        a.write(resp::TOPICS, vec![t]);
        answers.push(answer_to(part, ApiKey::ListOffsets, VERSION, &a));
    }
    let bytes = done(h.complete(finish, ApiKey::ListOffsets, VERSION, answers));
    let merged = read_answer(ApiKey::ListOffsets, VERSION, &bytes);
    let got: Vec<(i32, i64)> = merged
        .iter(resp::TOPICS)
        .flat_map(|t| t.iter(answered::PARTITIONS))
        .map(|e| (e.read(answered::partitions::PARTITION_INDEX).unwrap(), e.read(answered::partitions::OFFSET).unwrap()))
        .collect();
    let mut by_v = got.clone();
    by_v.sort();
    assert_eq!(by_v.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 3, 4], "each virtual partition named, once");
    for (v, offset) in got {
        assert_eq!(offset % 1000, (v % 2) as i64, "v{v} answered from its own physical partition");
    }
}
