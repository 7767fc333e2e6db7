//! OffsetCommit: the group's own commit first (it checks the member), then
//! the k ≥ 1 partitions to their derived groups; a refused member commits
//! nothing derived.

use super::*;
use crate::kafka::api::error;
use crate::kafka::fields::offset_commit_request::{self as req, topics};
use crate::kafka::fields::offset_commit_response::{self as resp, topics as committed};
use crate::proxy::route::Route;

const VERSION: i16 = 8;

/// A member's commit of v1 (k = 0) at 10 and v7 (k = 3) at 70.
fn commit() -> Struct<'static> {
    let mut body = request(ApiKey::OffsetCommit, VERSION);
    body.write(req::GROUP_ID, "g");
    body.write(req::GENERATION_ID_OR_MEMBER_EPOCH, 3);
    body.write(req::MEMBER_ID, "member-1");
    let mut t = element(body.schema, req::TOPICS, VERSION);
    t.write(topics::NAME, EVENTS);
    let partitions: Vec<Struct<'static>> = [(1, 10i64), (7, 70)]
        .into_iter()
        .map(|(v, offset)| {
            let mut p = element(t.schema, topics::PARTITIONS, VERSION);
            p.write(topics::partitions::PARTITION_INDEX, v);
            p.write(topics::partitions::COMMITTED_OFFSET, offset);
            p
        })
        .collect();
    t.write(topics::PARTITIONS, partitions);
    body.write(req::TOPICS, vec![t]);
    body
}

/// What a part commits: (partition, offset), and the generation it gives.
fn committed_by(part: &Part) -> (Vec<(i32, i64)>, Option<i32>) {
    let sent = request_of(part, ApiKey::OffsetCommit);
    let entries = sent
        .iter(req::TOPICS)
        .flat_map(|t| t.iter(topics::PARTITIONS))
        .map(|p| (p.read(topics::partitions::PARTITION_INDEX).unwrap(), p.read(topics::partitions::COMMITTED_OFFSET).unwrap()))
        .collect();
    (entries, sent.read(req::GENERATION_ID_OR_MEMBER_EPOCH))
}

/// The broker's answer to a commit part: `code` for each partition.
fn codes_answer(part: &Part, code: i16) -> Vec<u8> {
    let (entries, _) = committed_by(part);
    let mut a = response(ApiKey::OffsetCommit, VERSION);
    let mut t = element(a.schema, resp::TOPICS, VERSION);
    t.write(committed::NAME, EVENTS);
    let partitions: Vec<Struct<'static>> = entries
        .iter()
        .map(|(p, _)| {
            let mut e = element(t.schema, committed::PARTITIONS, VERSION);
            e.write(committed::partitions::PARTITION_INDEX, *p);
            e.write(committed::partitions::ERROR_CODE, code);
            e
        })
        .collect();
    t.write(committed::PARTITIONS, partitions);
    a.write(resp::TOPICS, vec![t]);
    answer_to(part, ApiKey::OffsetCommit, VERSION, &a)
}

/// A derived group holding no offsets, as OffsetFetch v8 (groups) says.
fn empty_offset_fetch_answer(part: &Part) -> Vec<u8> {
    use crate::kafka::fields::offset_fetch_response as fetched;
    const FETCH_VERSION: i16 = 8;
    let (header, _) = crate::kafka::header::RequestHeader::parse(part.frame.bytes()).expect("a header");
    assert_eq!((header.api_key, header.api_version), (ApiKey::OffsetFetch as i16, FETCH_VERSION));
    let Route::Group(name) = &part.route else { panic!("to a group") };
    let mut a = response(ApiKey::OffsetFetch, FETCH_VERSION);
    let mut g = element(a.schema, fetched::GROUPS, FETCH_VERSION);
    g.write(fetched::groups::GROUP_ID, name.clone());
    a.write(fetched::GROUPS, vec![g]);
    answer_to(part, ApiKey::OffsetFetch, FETCH_VERSION, &a)
}

fn client_codes(bytes: &[u8]) -> Vec<(i32, i16)> {
    let shown = read_answer(ApiKey::OffsetCommit, VERSION, bytes);
    shown
        .iter(resp::TOPICS)
        .flat_map(|t| t.iter(committed::PARTITIONS))
        .map(|p| (p.read(committed::partitions::PARTITION_INDEX).unwrap(), p.read(committed::partitions::ERROR_CODE).unwrap()))
        .collect()
}

#[test]
fn a_members_commit_goes_to_its_group_then_to_the_derived_group() {
    let mut h = Harness::new();
    let (parts, finish) = forwarded(h.plan(ApiKey::OffsetCommit, VERSION, &commit()).plan);
    assert_eq!(parts.len(), 1, "the group's own commit checks the member first");
    assert_eq!(parts[0].route, Route::Group("g".into()));
    assert_eq!(committed_by(&parts[0]), (vec![(1, 10)], Some(3)));

    let (derived, finish) = more(h.complete(finish, ApiKey::OffsetCommit, VERSION, vec![codes_answer(&parts[0], error::NONE)]));
    assert_eq!(derived.len(), 1);
    assert_eq!(derived[0].route, Route::Group("g.kpr-vp-k3".into()));
    assert_eq!(committed_by(&derived[0]), (vec![(1, 70)], Some(-1)), "a derived group has no members: generation -1");

    let step = h.complete(finish, ApiKey::OffsetCommit, VERSION, vec![codes_answer(&derived[0], error::NONE)]);
    // A current member's commit also re-commits the derived offsets it did
    // not just write (`KeepAlive`): each derived group is read first.
    let (reads, finish) = more(step);
    let routes: Vec<Route> = reads.iter().map(|p| p.route.clone()).collect();
    assert_eq!(routes, (1..=4).map(|k| Route::Group(format!("g.kpr-vp-k{k}"))).collect::<Vec<_>>());
    let nothing_held = reads.iter().map(empty_offset_fetch_answer).collect();
    let bytes = done(h.complete(finish, ApiKey::OffsetCommit, VERSION, nothing_held));
    assert_eq!(client_codes(&bytes), vec![(1, error::NONE), (7, error::NONE)]);
}

#[test]
fn a_member_the_group_refuses_commits_nothing_derived() {
    let mut h = Harness::new();
    let (parts, finish) = forwarded(h.plan(ApiKey::OffsetCommit, VERSION, &commit()).plan);
    let step = h.complete(finish, ApiKey::OffsetCommit, VERSION, vec![codes_answer(&parts[0], error::ILLEGAL_GENERATION)]);
    let bytes = done(step);
    assert_eq!(client_codes(&bytes), vec![(1, error::ILLEGAL_GENERATION), (7, error::ILLEGAL_GENERATION)]);
}
