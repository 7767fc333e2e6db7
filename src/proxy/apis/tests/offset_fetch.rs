//! OffsetFetch: k = 0 partitions asked of the group, k ≥ 1 ones of their
//! derived groups, the answers merged under the virtual partitions.

use super::*;
use crate::kafka::fields::offset_fetch_request::{self as req, topics};
use crate::kafka::fields::offset_fetch_response::{self as resp, topics as held};
use crate::kafka::codec::Value;
use crate::proxy::route::Route;

const VERSION: i16 = 7;

#[test]
fn offsets_of_a_group_and_its_derived_group_are_merged() {
    let mut h = Harness::new();
    let mut body = request(ApiKey::OffsetFetch, VERSION);
    body.write(req::GROUP_ID, "g");
    let mut t = element(body.schema, req::TOPICS, VERSION);
    t.write(topics::NAME, EVENTS);
    // v1: k = 0 on partition 1; v7: k = 3 on partition 1.
    t.write(topics::PARTITION_INDEXES, vec![Value::Int32(1), Value::Int32(7)]);
    body.write(req::TOPICS, vec![t]);
    let (parts, finish) = forwarded(h.plan(ApiKey::OffsetFetch, VERSION, &body).plan);
    let routes: Vec<&Route> = parts.iter().map(|p| &p.route).collect();
    assert_eq!(routes, vec![&Route::Group("g".into()), &Route::Group("g.kpr-vp-k3".into())]);

    // The group holds 11 at partition 1, its derived group k3 holds 77.
    let answers = parts
        .iter()
        .zip([11i64, 77])
        .map(|(part, offset)| {
            let sent = request_of(part, ApiKey::OffsetFetch);
            let asked: Vec<&Value> = sent.iter(req::TOPICS).flat_map(|t| t.items(topics::PARTITION_INDEXES)).collect();
            assert_eq!(asked, vec![&Value::Int32(1)], "physical partition 1 in both");
            let mut a = response(ApiKey::OffsetFetch, VERSION);
            let mut t = element(a.schema, resp::TOPICS, VERSION);
            t.write(held::NAME, EVENTS);
            let mut p = element(t.schema, held::PARTITIONS, VERSION);
            p.write(held::partitions::PARTITION_INDEX, 1);
            p.write(held::partitions::COMMITTED_OFFSET, offset);
            t.write(held::PARTITIONS, vec![p]);
            a.write(resp::TOPICS, vec![t]);
            answer_to(part, ApiKey::OffsetFetch, VERSION, &a)
        })
        .collect();
    let bytes = done(h.complete(finish, ApiKey::OffsetFetch, VERSION, answers));
    let merged = read_answer(ApiKey::OffsetFetch, VERSION, &bytes);
    let got: Vec<(i32, i64)> = merged
        .iter(resp::TOPICS)
        .flat_map(|t| t.iter(held::PARTITIONS))
        .map(|p| (p.read(held::partitions::PARTITION_INDEX).unwrap(), p.read(held::partitions::COMMITTED_OFFSET).unwrap()))
        .collect();
    assert_eq!(got, vec![(1, 11), (7, 77)]);
}
