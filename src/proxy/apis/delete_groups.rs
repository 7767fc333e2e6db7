//! DeleteGroups. Pass-through: to the coordinator of the first group. While
//! any rule remaps, the groups are deleted, then the derived groups of
//! those that were (never before: a group that refuses deletion keeps all
//! its offsets); a derived group left behind is reported on its group.

use std::time::Duration;

use log::warn;

use super::passthrough::{first_str, forward as forward_as_is, group_route};
use super::Request;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::fields::delete_groups_response::{results, RESULTS};
use crate::kafka::fields::delete_groups_request::GROUPS_NAMES;
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{decode_response, encode_request, encode_response, request_schema};
use crate::proxy::plan::{CorrelationIds, Finish, Part, PartFrame, Plan, Step};
use crate::proxy::route::Route;
use crate::remap::groups::{derived_group, parse_derived};


pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    forward_as_is(r, group_route(first_str(r.body.items(GROUPS_NAMES))), Duration::ZERO, Finish::AsIs)
}


/// DeleteGroups: delete the groups, then the derived groups of those that
/// were deleted (never before: a group that refuses deletion keeps all its
/// offsets).
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, frame, session) = (r.ctx, r.header, r.frame, &mut *r.session);
    let max_k = ctx.mapper.max_ratio();
    if max_k <= 1 {
        return None;
    }
    let version = header.api_version;
    let client_id = header.client_id.as_deref().map(str::to_string);
    let first = Part {
        route: Route::Any,
        frame: PartFrame::Original,
        correlation_id: header.correlation_id,
        broker_wait: Duration::ZERO,
    };
    let groups: Vec<String> = {
        let Ok((_, body)) = RequestHeader::parse(frame) else { return None };
        let Ok(req) = codec::decode(request_schema(ApiKey::DeleteGroups as i16).expect("declared"), version, body) else { return None };
        req.items(GROUPS_NAMES).iter().filter_map(|v| if let Value::String(Some(s)) = v { Some(s.to_string()) } else { None }).collect()
    };
    let first = Part { route: groups.first().map_or(Route::Any, |g| Route::Group(g.clone())), ..first };
    let mut next_correlation = session.next_correlation_id();
    Some(Plan::Forward {
        parts: vec![first],
        expect_response: true,
        finish: Finish::Then(Box::new(move |_ctx, _v, corr, mut answers| {
            let mut answer = answers.pop().ok_or("no answer")?;
            let resp = decode_response(ApiKey::DeleteGroups as i16, version, &answer)?.body;
            // Derived groups go with a deleted group, and with one already
            // gone (a retry after a derived deletion failed).
            let deleted: Vec<String> = resp
                .iter(RESULTS)
                .filter(|r| matches!(r.read(results::ERROR_CODE), Some(error::NONE | error::GROUP_ID_NOT_FOUND)))
                .filter_map(|r| r.read(results::GROUP_ID).map(str::to_string))
                .collect();
            crate::proxy::plan::set_correlation_id(&mut answer, corr);
            if deleted.is_empty() {
                return Ok(Step::Done(answer));
            }
            let schema = &request_schema(ApiKey::DeleteGroups as i16).expect("declared").body;
            let mut parts = Vec::new();
            let mut asked: Vec<String> = Vec::new(); // the derived group of each part
            for g in &deleted {
                for k in 1..max_k {
                    let name = derived_group(g, k);
                    asked.push(name.clone());
                    let mut body = codec::with_defaults(schema, version);
                    body.write(GROUPS_NAMES, vec![Value::str(name.clone())]);
                    next_correlation = next_correlation.wrapping_add(1);
                    let frame = encode_request(ApiKey::DeleteGroups as i16, version, next_correlation, client_id.as_deref(), &body)
                        .map_err(|e| e.to_string())?;
                    parts.push(Part { route: Route::Group(name), frame: frame.into(), correlation_id: next_correlation, broker_wait: Duration::ZERO });
                }
            }
            // The client sees the answer for its own groups; a derived group
            // that never existed answers GROUP_ID_NOT_FOUND, which is fine.
            // Any other failure leaves offsets behind: the group's own
            // result carries it, so the deletion is not taken as done.
            Ok(Step::More {
                parts,
                finish: Finish::Merge(Box::new(move |_c, version, corr, answers| {
                    let failures = derived_deletion_failures(version, &asked, &answers);
                    if failures.is_empty() {
                        return Ok(answer);
                    }
                    report_derived_deletion_failures(version, corr, &answer, &failures)
                })),
            })
        })),
    })
}

/// (group, derived group, error) for each derived group whose deletion
/// failed with anything but GROUP_ID_NOT_FOUND; an answer that cannot be
/// read counts as UNKNOWN_SERVER_ERROR.
fn derived_deletion_failures(version: i16, asked: &[String], answers: &[Vec<u8>]) -> Vec<(String, String, i16)> {
    let mut out = Vec::new();
    for (derived, answer) in asked.iter().zip(answers) {
        let code = decode_response(ApiKey::DeleteGroups as i16, version, answer)
            .ok()
            // Each request named this one group: its one result is the answer.
            .map_or(error::UNKNOWN_SERVER_ERROR, |r| {
                r.body.iter(RESULTS).next().and_then(|g| g.read(results::ERROR_CODE)).unwrap_or(error::UNKNOWN_SERVER_ERROR)
            });
        if code != error::NONE && code != error::GROUP_ID_NOT_FOUND {
            let group = parse_derived(derived).map_or_else(|| derived.clone(), |(g, _)| g.to_string());
            out.push((group, derived.clone(), code));
        }
    }
    out
}

/// The client's DeleteGroups answer with each group whose derived groups
/// could not all be deleted answered with the first such error.
fn report_derived_deletion_failures(
    version: i16,
    corr: i32,
    answer: &[u8],
    failures: &[(String, String, i16)],
) -> Result<Vec<u8>, String> {
    let mut resp = decode_response(ApiKey::DeleteGroups as i16, version, answer)?.body;
    for r in resp.iter_mut(RESULTS) {
        let Some(group) = r.read(results::GROUP_ID).map(str::to_string) else { continue };
        let Some((_, derived, code)) = failures.iter().find(|(g, _, _)| *g == group) else { continue };
        warn!(
            "DeleteGroups: group {group} is deleted, but its derived group {derived} (offsets of virtual partitions with \
             k >= 1) was not: Kafka error code {code}; answering {group} with that error"
        );
        if r.read(results::ERROR_CODE) == Some(error::NONE) {
            r.write(results::ERROR_CODE, *code);
        }
    }
    encode_response(ApiKey::DeleteGroups as i16, version, corr, &[], &resp).map_err(|e| e.to_string())
}
