//! `requests::plan` and `requests::take`: what deciding whether a request
//! is remapped needs is looked up first, the request parked in its
//! session meanwhile; a look-up that failed is gone on without.

use super::*;
use crate::kafka::fields::list_offsets_request::{self as req, topics};
use crate::proxy::route::Route;

const VERSION: i16 = 7;

fn list_offsets_of(topic: &str) -> Struct<'static> {
    let mut body = request(ApiKey::ListOffsets, VERSION);
    let mut t = element(body.schema, req::TOPICS, VERSION);
    t.write(topics::NAME, topic.to_string());
    let mut p = element(t.schema, topics::PARTITIONS, VERSION);
    p.write(topics::partitions::PARTITION_INDEX, 0);
    t.write(topics::PARTITIONS, vec![p]);
    body.write(req::TOPICS, vec![t]);
    body
}

#[test]
fn an_unknown_topic_is_looked_up_before_planning() {
    let mut h = Harness::new();
    let planned = h.plan(ApiKey::ListOffsets, VERSION, &list_offsets_of("fresh"));
    assert!(matches!(planned.plan, Plan::AfterLookups));
    assert_eq!(planned.asked, vec![Lookup::Topics(vec!["fresh".into()])]);
}

#[test]
fn a_failed_look_up_is_gone_on_without() {
    let mut h = Harness::new();
    h.failures = vec![(Lookup::Topics(vec!["fresh".into()]), "no broker answered".into())];
    let planned = h.plan(ApiKey::ListOffsets, VERSION, &list_offsets_of("fresh"));
    assert!(planned.asked.is_empty(), "not asked again: {:?}", planned.asked);
    let (parts, _) = forwarded(planned.plan);
    assert_eq!(parts[0].route, Route::Leader { topic: "fresh".into(), partition: 0 }, "passed through as the view has it");
}

#[test]
fn a_ruled_topic_whose_cleanup_policy_is_unknown_asks_for_it() {
    let mut h = Harness::new();
    h.ctx.cluster.write().topics.insert(ORDERS.into(), crate::cluster::TopicInfo {
        id: [9; 16],
        partitions: vec![Default::default(); 3],
        ..Default::default()
    });
    let planned = h.plan(ApiKey::ListOffsets, VERSION, &list_offsets_of(ORDERS));
    assert!(matches!(planned.plan, Plan::AfterLookups));
    assert_eq!(planned.asked, vec![Lookup::CleanupPolicies(vec![ORDERS.into()])]);
}

/// `requests::take`, the hand-over to the session: a request whose plan
/// needs look-ups is parked in its session, not answered or closed.
#[test]
fn take_parks_a_request_that_needs_look_ups_in_its_session() {
    let mut h = Harness::new();
    let frame = encode_request(ApiKey::ListOffsets as i16, VERSION, CLIENT_CORRELATION, Some("handler-test"), &list_offsets_of("fresh"))
        .expect("encodable request");
    let verdict = crate::proxy::requests::take(&h.ctx, &mut h.session, frame, 0);
    assert_eq!(verdict, crate::proxy::session::Verdict::Continue);
    assert!(h.session.has_deferred(), "parked until the topic is known");
}

#[test]
fn take_closes_the_connection_on_a_broken_header() {
    let mut h = Harness::new();
    let verdict = crate::proxy::requests::take(&h.ctx, &mut h.session, vec![0, 3], 0);
    assert!(
        matches!(&verdict, crate::proxy::session::Verdict::Close(why) if why.starts_with("malformed request header")),
        "{verdict:?}"
    );
    assert!(!h.session.has_deferred());
}
