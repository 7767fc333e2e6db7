//! OffsetCommit. Pass-through: to the group's coordinator. On remapped
//! topics, k = 0 partitions commit to the group itself and k ≥ 1 ones to
//! derived groups, after the member is checked (the group's own commit, a
//! heartbeat, or a DescribeGroups for a standalone commit); a current
//! member's commits also keep the derived offsets from expiring
//! (`KeepAlive`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use log::{debug, warn};

use super::derived::{codes_response, decode_offsets, derived_ks, describe_group_part, filtered, main_group_of, part, partition_codes, remapped_placements, ReservedIds, Target, OFFSET_COMMIT};
use super::Request;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::offset_commit_request::topics::{self as commit_topic, partitions as commit_entry};
use crate::kafka::fields::offset_commit_request as commit_req;
use crate::kafka::fields::{heartbeat_request, heartbeat_response, members, offset_fetch_request as fetch_req};
use crate::kafka::message::{decode_response, request_schema};
use crate::proxy::plan::{Finish, Plan, Step};
use crate::proxy::route::Route;
use crate::proxy::ProxyContext;
use crate::remap::groups::{derived_group, refuses_member, DerivedOffset};
use crate::remap::offset_fetch::GroupOffsets;


/// To the coordinator of `group_id`, as it came.
pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    super::groups::to_coordinator(r)
}

/// How many correlation ids a refresh of a group's derived offsets needs:
/// a fetch and a commit per derived group.
fn keepalive_ids(max_k: i32) -> usize {
    2 * (max_k.max(1) - 1) as usize
}

/// Re-commits `group`'s derived offsets as they are (see `KeepAlive`):
/// OffsetFetch of each derived group, then OffsetCommit (generation -1, as
/// every derived commit) of what it holds. The client's `response` goes
/// back whatever they answer: the refresh is the proxy's bookkeeping.
fn keepalive_stage(
    ctx: &ProxyContext,
    group: String,
    commit_version: i16,
    client_id: Option<String>,
    mut ids: ReservedIds,
    fresh: BTreeSet<DerivedOffset>,
    response: Vec<u8>,
) -> Step {
    let max_k = ctx.mapper.max_ratio();
    // From v2 an OffsetFetch with null topics answers all of the group's.
    // v8 (groups) is preferred: Tansu 0.6 answers v2-v7 asked that way
    // with a null topics array, which no Kafka version sends.
    let fetch_version = match ctx.cluster.upstream_versions(ApiKey::OffsetFetch as i16) {
        Some((min, max)) if max >= 2 && min <= 8 => max.min(8),
        _ => return Step::Done(response),
    };
    let schema = &request_schema(ApiKey::OffsetFetch as i16).expect("declared").body;
    let mut fetches = Vec::new();
    for k in 1..max_k {
        let name = derived_group(&group, k);
        let mut body = codec::with_defaults(schema, fetch_version);
        if fetch_version >= 8 {
            let mut g = codec::with_defaults(members(schema, fetch_req::GROUPS), fetch_version);
            g.write(fetch_req::groups::GROUP_ID, name.clone());
            g.put_in(fetch_req::groups::MEMBER_ID, Value::String(None), fetch_version);
            g.write_in(fetch_req::groups::MEMBER_EPOCH, -1, fetch_version);
            g.put(fetch_req::groups::TOPICS, Value::Array(None));
            body.write(fetch_req::GROUPS, vec![Value::Struct(g)]);
        } else {
            body.write(fetch_req::GROUP_ID, name.clone());
            body.put(fetch_req::TOPICS, Value::Array(None));
        }
        match ids.part(client_id.as_deref(), ApiKey::OffsetFetch, fetch_version, &body, Route::Group(name)) {
            Ok(p) => fetches.push(p),
            Err(e) => {
                warn!("Derived offsets of group {group} not refreshed: {e}");
                return Step::Done(response);
            }
        }
    }
    if fetches.is_empty() {
        return Step::Done(response);
    }
    Step::More {
        parts: fetches,
        finish: Finish::Then(Box::new(move |_ctx, _v, _corr, answers| {
            let mut commits = Vec::new();
            let mut offsets = 0;
            for (k, answer) in (1..).zip(&answers) {
                let name = derived_group(&group, k);
                let held = match decode_offsets(fetch_version, answer) {
                    Ok(g) => g.into_iter().next().unwrap_or_default(),
                    Err(e) => {
                        warn!("Derived offsets of {name} not refreshed: unreadable OffsetFetch answer: {e}");
                        continue;
                    }
                };
                if held.error_code != error::NONE {
                    warn!("Derived offsets of {name} not refreshed: OffsetFetch answered error {}", held.error_code);
                    continue;
                }
                let body = match recommit_body(commit_version, &name, &held, &|topic, p| fresh.contains(&(k, topic.to_string(), p))) {
                    Some((body, n)) => {
                        offsets += n;
                        body
                    }
                    None => continue,
                };
                match ids.part(client_id.as_deref(), ApiKey::OffsetCommit, commit_version, &body, Route::Group(name.clone())) {
                    Ok(p) => commits.push(p),
                    Err(e) => warn!("Derived offsets of {name} not refreshed: {e}"),
                }
            }
            if commits.is_empty() {
                return Ok(Step::Done(response));
            }
            debug!("Re-committing {offsets} derived offsets of group {group} unchanged, so that they expire no earlier than the group's own");
            Ok(Step::More {
                parts: commits,
                finish: Finish::Merge(Box::new(move |_ctx, _v, _corr, answers| {
                    for answer in &answers {
                        match partition_codes(&OFFSET_COMMIT, commit_version, answer) {
                            Ok((_, codes)) => {
                                if let Some(((t, p), c)) = codes.iter().find(|(_, c)| **c != error::NONE) {
                                    warn!("Refreshing derived offsets of group {group}: {t}/{p} answered error {c}");
                                }
                            }
                            Err(e) => warn!("Refreshing derived offsets of group {group}: unreadable answer: {e}"),
                        }
                    }
                    Ok(response)
                })),
            })
        })),
    }
}

/// An OffsetCommit to derived group `name` of the offsets it holds,
/// unchanged, but those `fresh` selects; and how many. `None` when none is
/// left.
fn recommit_body(version: i16, name: &str, held: &GroupOffsets, fresh: &dyn Fn(&str, i32) -> bool) -> Option<(Struct<'static>, usize)> {
    let schema = &request_schema(ApiKey::OffsetCommit as i16).expect("declared").body;
    let ts = members(schema, commit_req::TOPICS);
    let ps = members(ts, commit_topic::PARTITIONS);
    let mut count = 0;
    let topics: Vec<Value<'static>> = held
        .topics
        .iter()
        .filter_map(|(topic, parts)| {
            let entries: Vec<Value<'static>> = parts
                .iter()
                .filter(|(p, c)| c.error_code == error::NONE && c.offset >= 0 && !fresh(topic, *p))
                .map(|(p, c)| {
                    let mut e = codec::with_defaults(ps, version);
                    e.write(commit_entry::PARTITION_INDEX, *p);
                    e.write(commit_entry::COMMITTED_OFFSET, c.offset);
                    e.write_in(commit_entry::COMMITTED_LEADER_EPOCH, c.leader_epoch, version);
                    // v1: -1 is "the broker's time", so the commit counts from now.
                    e.write_in(commit_entry::COMMIT_TIMESTAMP, -1, version);
                    e.put(commit_entry::COMMITTED_METADATA, Value::String(c.metadata.clone().map(std::borrow::Cow::Owned)));
                    Value::Struct(e.into_owned())
                })
                .collect();
            count += entries.len();
            (!entries.is_empty()).then(|| {
                let mut t = codec::with_defaults(ts, version);
                t.write(commit_topic::NAME, topic.clone());
                t.write(commit_topic::PARTITIONS, entries);
                Value::Struct(t.into_owned())
            })
        })
        .collect();
    if topics.is_empty() {
        return None;
    }
    let mut body = codec::with_defaults(schema, version);
    body.write(commit_req::GROUP_ID, name.to_string());
    body.write_in(commit_req::GENERATION_ID_OR_MEMBER_EPOCH, -1, version);
    body.write_in(commit_req::MEMBER_ID, "", version);
    body.put_in(commit_req::GROUP_INSTANCE_ID, Value::String(None), version);
    // v2-v4: -1 is the broker's offsets.retention.minutes (0 would expire at once).
    body.write_in(commit_req::RETENTION_TIME_MS, -1, version);
    body.write(commit_req::TOPICS, topics);
    Some((body.into_owned(), count))
}

/// How a commit's member is checked before its derived part is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MemberCheck {
    /// The group's own commit, which the broker validates.
    MainCommit,
    /// A heartbeat standing in for it when only derived partitions are
    /// named; the version it is sent in.
    Heartbeat(i16),
    None,
}

/// OffsetCommit touching remapped topics.
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
    let version = header.api_version;
    let (placements, group) = remapped_placements(ctx, &OFFSET_COMMIT, req)?;
    let (main, main_count) = filtered(req, &OFFSET_COMMIT.request, &placements, &|t| if let Target::Main(p) = t { Some(*p) } else { None });
    let ks = derived_ks(&placements);
    let mut derived_parts = Vec::new();
    for &k in &ks {
        let (mut body, _) = filtered(req, &OFFSET_COMMIT.request, &placements, &|t| match t {
            Target::Derived(kk, p) if *kk == k => Some(*p),
            _ => None,
        });
        let name = derived_group(&group, k);
        body.write(commit_req::GROUP_ID, name.clone());
        body.write_in(commit_req::GENERATION_ID_OR_MEMBER_EPOCH, -1, version);
        body.write_in(commit_req::MEMBER_ID, "", version);
        body.put_in(commit_req::GROUP_INSTANCE_ID, Value::String(None), version);
        match part(session, header, ApiKey::OffsetCommit, version, &body, Route::Group(name)) {
            Ok(p) => derived_parts.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
    }
    let generation = req.read(commit_req::GENERATION_ID_OR_MEMBER_EPOCH).unwrap_or(-1);
    let member = req.read(commit_req::MEMBER_ID).unwrap_or_default().to_string();
    let instance = req.read(commit_req::GROUP_INSTANCE_ID).map(str::to_string);
    // Kafka validates the member when any of these is given
    // (`ClassicGroup.validateOffsetCommit`); without them the commit is
    // standalone.
    let needs_check = generation >= 0 || !member.is_empty() || instance.is_some();
    let mut stage1 = Vec::new();
    let member_check = if main_count > 0 {
        match part(session, header, ApiKey::OffsetCommit, version, &main, Route::Group(group.clone())) {
            Ok(p) => stage1.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
        MemberCheck::MainCommit
    } else if needs_check && !derived_parts.is_empty() {
        let hb_version = match ctx.cluster.upstream_versions(ApiKey::Heartbeat as i16) {
            Some((_, max)) => max.min(4),
            None => 0,
        };
        let mut hb = codec::with_defaults(&request_schema(ApiKey::Heartbeat as i16).expect("declared").body, hb_version);
        hb.write(heartbeat_request::GROUP_ID, group.clone());
        hb.write(heartbeat_request::GENERATION_ID, generation);
        hb.write(heartbeat_request::MEMBER_ID, member.clone());
        match &instance {
            Some(i) => hb.write_in(heartbeat_request::GROUP_INSTANCE_ID, i.clone(), hb_version),
            None => hb.put_in(heartbeat_request::GROUP_INSTANCE_ID, Value::String(None), hb_version),
        }
        match part(session, header, ApiKey::Heartbeat, hb_version, &hb, Route::Group(group.clone())) {
            Ok(p) => stage1.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
        MemberCheck::Heartbeat(hb_version)
    } else {
        MemberCheck::None
    };
    // A standalone commit is accepted by Kafka only while the group has no
    // members; derived groups never have any, so the group is asked. Its
    // own commit (above, in parallel) is the broker's to judge.
    let describe_version = if !needs_check && !derived_parts.is_empty() {
        match describe_group_part(ctx, session, header, &group) {
            Ok((p, v)) => {
                stage1.push(p);
                Some(v)
            }
            Err(e) => return Some(Plan::Close(e)),
        }
    } else {
        None
    };
    let max_k = ctx.mapper.max_ratio();
    let keepalive = (needs_check && max_k > 1 && ctx.derived_keepalive.is_due(&group, Instant::now()))
        .then(|| ReservedIds::take(session, keepalive_ids(max_k)));
    let client_id = header.client_id.as_deref().map(str::to_string);
    let committed_group = group.clone();
    let placements_final = placements.clone();
    let finish_all = move |main_codes: BTreeMap<(String, i32), i16>, refusal: Option<i16>, derived_answers: Vec<Vec<u8>>, ks: Vec<i32>, correlation_id: i32| -> Result<Vec<u8>, String> {
        let mut derived_codes: BTreeMap<(i32, String, i32), i16> = BTreeMap::new();
        for (k, answer) in ks.iter().zip(&derived_answers) {
            let (_, codes) = partition_codes(&OFFSET_COMMIT, version, answer)?;
            for ((t, p), c) in codes {
                derived_codes.insert((*k, t, p), c);
            }
        }
        codes_response(&OFFSET_COMMIT, version, correlation_id, 0, &placements_final, &|name, target| match target {
            Target::Main(p) => *main_codes.get(&(name.to_string(), *p)).unwrap_or(&error::UNKNOWN_SERVER_ERROR),
            Target::Derived(k, p) => refusal.unwrap_or_else(|| *derived_codes.get(&(*k, name.to_string(), *p)).unwrap_or(&error::UNKNOWN_SERVER_ERROR)),
            Target::Local(c) => *c,
        })
    };
    if stage1.is_empty() {
        // Nothing went upstream: every partition is answered here.
        return Some(match finish_all(BTreeMap::new(), None, Vec::new(), Vec::new(), header.correlation_id) {
            Ok(bytes) => Plan::Answer(bytes),
            Err(e) => Plan::Close(e),
        });
    }
    Some(Plan::Forward {
        parts: stage1,
        expect_response: true,
        finish: Finish::Then(Box::new(move |ctx, _v, corr, answers| {
            let mut answers = answers.into_iter();
            let (main_codes, member_error) = match member_check {
                MemberCheck::MainCommit => {
                    let answer = answers.next().ok_or("no answer")?;
                    let (_, codes) = partition_codes(&OFFSET_COMMIT, version, &answer)?;
                    let refusal = codes.values().copied().find(|c| refuses_member(*c) || *c == error::REBALANCE_IN_PROGRESS);
                    (codes, refusal)
                }
                MemberCheck::Heartbeat(hb_version) => {
                    let answer = answers.next().ok_or("no answer")?;
                    let hb = decode_response(ApiKey::Heartbeat as i16, hb_version, &answer)?.body;
                    // REBALANCE_IN_PROGRESS from a heartbeat still means member and generation are current.
                    let code = hb.read(heartbeat_response::ERROR_CODE).unwrap_or(0);
                    (BTreeMap::new(), if code == error::NONE || code == error::REBALANCE_IN_PROGRESS { None } else { Some(code) })
                }
                MemberCheck::None => (BTreeMap::new(), None),
            };
            if let Some(code) = member_error {
                warn!("Commit of derived offsets for group {group} refused: the member is not current (error {code})");
            }
            let standalone_refusal = match describe_version {
                Some(v) => main_group_of(v, &answers.next().ok_or("no answer")?)?.standalone_commit_refusal(),
                None => None,
            };
            if let Some(code) = standalone_refusal {
                warn!(
                    "Commit of derived offsets for group {group} without member id and generation refused with error {code}: \
                     Kafka accepts such commits only while the group has no members"
                );
            }
            let refusal = member_error.or(standalone_refusal);
            // A current member's commit keeps the derived offsets alive,
            // once its own derived commits are done (and left out).
            let keepalive = keepalive.filter(|_| member_error.is_none());
            let then = move |ctx: &ProxyContext, response: Vec<u8>| match keepalive {
                Some(ids) => match ctx.derived_keepalive.claim(&group, Instant::now()) {
                    Some(fresh) => keepalive_stage(ctx, group, version, client_id, ids, fresh, response),
                    None => Step::Done(response),
                },
                None => Step::Done(response),
            };
            if refusal.is_some() || derived_parts.is_empty() {
                return finish_all(main_codes, refusal, Vec::new(), Vec::new(), corr).map(|r| then(ctx, r));
            }
            Ok(Step::More {
                parts: derived_parts,
                finish: Finish::Then(Box::new(move |ctx, _v, corr, answers| {
                    let mut committed = Vec::new();
                    for (k, answer) in ks.iter().zip(&answers) {
                        if let Ok((_, codes)) = partition_codes(&OFFSET_COMMIT, version, answer) {
                            committed.extend(codes.into_iter().filter(|(_, c)| *c == error::NONE).map(|((t, p), _)| (*k, t, p)));
                        }
                    }
                    ctx.derived_keepalive.committed(&committed_group, committed, Instant::now());
                    finish_all(main_codes, None, answers, ks, corr).map(|r| then(ctx, r))
                })),
            })
        })),
    })
}
