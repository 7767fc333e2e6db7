//! CreateTopics: a topic under a rule is created with its physical count
//! and answered with its virtual one; a count that fits no rule is refused
//! by the proxy.

use super::*;
use crate::kafka::api::error;
use crate::kafka::fields::create_topics_request::{self as req, topics};
use crate::kafka::fields::create_topics_response::{self as resp, topics as created};
use crate::proxy::route::Route;

const VERSION: i16 = 5;

#[test]
fn a_ruled_topic_is_created_physical_and_answered_virtual() {
    let mut h = Harness::new();
    let mut body = request(ApiKey::CreateTopics, VERSION);
    let asked: Vec<Struct<'static>> = [(ORDERS, 12), (EVENTS, 7)]
        .into_iter()
        .map(|(name, count)| {
            let mut t = element(body.schema, req::TOPICS, VERSION);
            t.write(topics::NAME, name);
            t.write(topics::NUM_PARTITIONS, count);
            t.write(topics::REPLICATION_FACTOR, 1i16);
            t
        })
        .collect();
    body.write(req::TOPICS, asked);
    let planned = h.plan(ApiKey::CreateTopics, VERSION, &body);
    assert_eq!(planned.asked, vec![Lookup::Topics(vec![ORDERS.into()])], "a topic the view lacks is looked up first");
    // The cluster answered that it has no such topic.
    h.ctx.cluster.note_missing(ORDERS);
    let (parts, finish) = forwarded(h.plan(ApiKey::CreateTopics, VERSION, &body).plan);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].route, Route::Controller);
    let sent = request_of(&parts[0], ApiKey::CreateTopics);
    let sent_topics: Vec<(&str, i32)> =
        sent.iter(req::TOPICS).map(|t| (t.read(topics::NAME).unwrap(), t.read(topics::NUM_PARTITIONS).unwrap())).collect();
    assert_eq!(sent_topics, vec![(ORDERS, 3)], "orders (12:3) is created with 3; events with 7 is refused here");

    let mut answer = response(ApiKey::CreateTopics, VERSION);
    let mut t = element(answer.schema, resp::TOPICS, VERSION);
    t.write(created::NAME, ORDERS);
    t.write(created::NUM_PARTITIONS, 3);
    t.write(created::REPLICATION_FACTOR, 1i16);
    answer.write(resp::TOPICS, vec![t]);
    let answer = answer_to(&parts[0], ApiKey::CreateTopics, VERSION, &answer);
    let bytes = done(h.complete(finish, ApiKey::CreateTopics, VERSION, vec![answer]));
    let shown = read_answer(ApiKey::CreateTopics, VERSION, &bytes);
    let results: Vec<(&str, i16, i32)> = shown
        .iter(resp::TOPICS)
        .map(|t| (t.read(created::NAME).unwrap(), t.read(created::ERROR_CODE).unwrap(), t.read(created::NUM_PARTITIONS).unwrap()))
        .collect();
    assert_eq!(results, vec![(ORDERS, error::NONE, 12), (EVENTS, error::INVALID_PARTITIONS, -1)], "in the client's order");
}
