//! DeleteGroups: the group first, then (only if it went) each derived
//! group; a derived group left behind is reported on its group.

use super::*;
use crate::kafka::api::error;
use crate::kafka::codec::Value;
use crate::kafka::fields::delete_groups_request as req;
use crate::kafka::fields::delete_groups_response::{self as resp, results};
use crate::proxy::route::Route;

const VERSION: i16 = 2;

fn result_answer(part: &Part, group: &str, code: i16) -> Vec<u8> {
    let mut a = response(ApiKey::DeleteGroups, VERSION);
    let mut r = element(a.schema, resp::RESULTS, VERSION);
    r.write(results::GROUP_ID, group.to_string());
    r.write(results::ERROR_CODE, code);
    a.write(resp::RESULTS, vec![r]);
    answer_to(part, ApiKey::DeleteGroups, VERSION, &a)
}

/// Delete group `g`, its derived groups answering `derived_codes` (k1..k4);
/// the client's code for `g`.
fn delete_g(derived_codes: [i16; 4]) -> i16 {
    let mut h = Harness::new();
    let mut body = request(ApiKey::DeleteGroups, VERSION);
    body.write(req::GROUPS_NAMES, vec![Value::str("g")]);
    let (parts, finish) = forwarded(h.plan(ApiKey::DeleteGroups, VERSION, &body).plan);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].route, Route::Group("g".into()), "the group itself first");

    let (derived, finish) = more(h.complete(finish, ApiKey::DeleteGroups, VERSION, vec![result_answer(&parts[0], "g", error::NONE)]));
    let routes: Vec<Route> = derived.iter().map(|p| p.route.clone()).collect();
    assert_eq!(routes, (1..=4).map(|k| Route::Group(format!("g.kpr-vp-k{k}"))).collect::<Vec<_>>(), "then each derived group");
    for (part, route) in derived.iter().zip(&routes) {
        let sent = request_of(part, ApiKey::DeleteGroups);
        let Route::Group(name) = route else { unreachable!() };
        assert_eq!(sent.items(req::GROUPS_NAMES), [Value::str(name.clone())], "one derived group per request");
    }
    let answers = derived
        .iter()
        .zip(derived_codes)
        .map(|(part, code)| {
            let Route::Group(name) = &part.route else { unreachable!() };
            result_answer(part, name, code)
        })
        .collect();
    let bytes = done(h.complete(finish, ApiKey::DeleteGroups, VERSION, answers));
    let shown = read_answer(ApiKey::DeleteGroups, VERSION, &bytes);
    let r = shown.iter(resp::RESULTS).next().expect("one result");
    assert_eq!(r.read(results::GROUP_ID), Some("g"));
    r.read(results::ERROR_CODE).unwrap()
}

#[test]
fn derived_groups_are_deleted_after_their_group() {
    // A derived group that never existed is fine.
    assert_eq!(delete_g([error::NONE, error::GROUP_ID_NOT_FOUND, error::NONE, error::GROUP_ID_NOT_FOUND]), error::NONE);
}

#[test]
fn a_derived_group_left_behind_is_reported_on_its_group() {
    assert_eq!(delete_g([error::NONE, error::NOT_COORDINATOR, error::NONE, error::NONE]), error::NOT_COORDINATOR);
}
