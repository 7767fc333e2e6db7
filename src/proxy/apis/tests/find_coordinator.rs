//! FindCoordinator: forwarded to any broker; the coordinator is remembered
//! for routing and shown at the proxy's address.

use super::*;
use crate::cluster::CoordinatorKind;
use crate::kafka::fields::find_coordinator_request as req;
use crate::kafka::fields::find_coordinator_response as resp;
use crate::proxy::route::Route;

const VERSION: i16 = 3;

#[test]
fn the_coordinator_is_remembered_and_shown_at_the_proxy_address() {
    let mut h = Harness::new();
    let mut body = request(ApiKey::FindCoordinator, VERSION);
    body.write(req::KEY, "g");
    let (parts, finish) = forwarded(h.plan(ApiKey::FindCoordinator, VERSION, &body).plan);
    assert_eq!(parts[0].route, Route::Any);

    let mut found = response(ApiKey::FindCoordinator, VERSION);
    found.write(resp::NODE_ID, 2);
    found.write(resp::HOST, "127.0.0.1");
    found.write(resp::PORT, BROKER_PORT_BASE + 2);
    let answer = answer_to(&parts[0], ApiKey::FindCoordinator, VERSION, &found);
    let bytes = done(h.complete(finish, ApiKey::FindCoordinator, VERSION, vec![answer]));
    let shown = read_answer(ApiKey::FindCoordinator, VERSION, &bytes);
    assert_eq!(shown.read(resp::NODE_ID), Some(2));
    assert_eq!((shown.read(resp::HOST), shown.read(resp::PORT)), (Some(ADVERTISED.0), Some(ADVERTISED.1)));
    assert_eq!(h.ctx.cluster.coordinator(CoordinatorKind::Group, "g"), Some(2), "remembered for routing");
}
