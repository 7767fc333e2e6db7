//! Metadata: forwarded to any broker, its answer learnt by the cluster view
//! and shown virtualized, with every broker at the proxy's address.

use super::*;
use crate::kafka::fields::metadata_request as req;
use crate::kafka::fields::metadata_response::{self as resp, brokers, topics};
use crate::proxy::plan::PartFrame;
use crate::proxy::route::Route;

const VERSION: i16 = 9;

/// The broker's answer: both brokers, and `events` with its 2 physical
/// partitions led by brokers 1 and 2.
fn physical_answer() -> Struct<'static> {
    let mut body = response(ApiKey::Metadata, VERSION);
    let listed: Vec<Struct<'static>> = [1, 2]
        .into_iter()
        .map(|node| {
            let mut b = element(body.schema, resp::BROKERS, VERSION);
            b.write(brokers::NODE_ID, node);
            b.write(brokers::HOST, "127.0.0.1");
            b.write(brokers::PORT, BROKER_PORT_BASE + node);
            b
        })
        .collect();
    body.write(resp::BROKERS, listed);
    let mut t = element(body.schema, resp::TOPICS, VERSION);
    t.write(topics::NAME, EVENTS);
    let partitions: Vec<Struct<'static>> = [(0, 1), (1, 2)]
        .into_iter()
        .map(|(index, leader)| {
            let mut p = element(t.schema, topics::PARTITIONS, VERSION);
            p.write(topics::partitions::PARTITION_INDEX, index);
            p.write(topics::partitions::LEADER_ID, leader);
            p.write(topics::partitions::REPLICA_NODES, vec![crate::kafka::codec::Value::Int32(leader)]);
            p.write(topics::partitions::ISR_NODES, vec![crate::kafka::codec::Value::Int32(leader)]);
            p
        })
        .collect();
    t.write(topics::PARTITIONS, partitions);
    body.write(resp::TOPICS, vec![t]);
    body
}

#[test]
fn metadata_shows_virtual_partitions_and_the_proxy_as_every_broker() {
    let mut h = Harness::new();
    let mut body = request(ApiKey::Metadata, VERSION);
    let mut t = element(body.schema, req::TOPICS, VERSION);
    t.write(req::topics::NAME, EVENTS);
    body.write(req::TOPICS, vec![t]);
    let (parts, finish) = forwarded(h.plan(ApiKey::Metadata, VERSION, &body).plan);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].route, Route::Any);
    assert!(matches!(parts[0].frame, PartFrame::Original), "the client's request goes as it came");

    let answer = answer_to(&parts[0], ApiKey::Metadata, VERSION, &physical_answer());
    let bytes = done(h.complete(finish, ApiKey::Metadata, VERSION, vec![answer]));
    let shown = read_answer(ApiKey::Metadata, VERSION, &bytes);
    for b in shown.iter(resp::BROKERS) {
        assert_eq!((b.read(brokers::HOST), b.read(brokers::PORT)), (Some(ADVERTISED.0), Some(ADVERTISED.1)));
    }
    let events = shown.iter(resp::TOPICS).find(|t| t.read(topics::NAME) == Some(EVENTS)).expect("events");
    let leaders: Vec<(i32, i32)> = events
        .iter(topics::PARTITIONS)
        .map(|p| (p.read(topics::partitions::PARTITION_INDEX).unwrap(), p.read(topics::partitions::LEADER_ID).unwrap()))
        .collect();
    let expected: Vec<(i32, i32)> = (0..10).map(|v| (v, if v % 2 == 0 { 1 } else { 2 })).collect();
    assert_eq!(leaders, expected, "10 virtual partitions, each led by its physical partition's leader");
    assert_eq!(h.ctx.cluster.read().topics[EVENTS].partitions.len(), 2, "the view keeps the physical count");
}
