//! Group APIs on remapped topics: committed offsets of k ≥ 1 virtual
//! partitions live in derived groups (see `remap::groups`). Each function
//! returns `None` when the request touches no remapped topic, so it goes
//! upstream as the bytes that came.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::plan::{CorrelationIds, Finish, Part, PartFrame, Plan, Step};
use super::route::Route;
use super::session::Session;
use super::ProxyContext;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::header::{parse_response_header, RequestHeader};
use crate::kafka::message::{encode_request, encode_response, request_schema, response_schema};
use crate::remap::groups::{derived_group, parse_derived, refuses_member, DeleteVerdict, DerivedOffset, MainGroup, GROUP_SUBSCRIBED_TO_TOPIC};
use crate::remap::mapping::{Decision, VirtualPartition};

/// Where one partition of a group request goes.
#[derive(Debug, Clone)]
enum Target {
    /// The group itself, at this physical partition.
    Main(i32),
    /// Derived group k, at this physical partition.
    Derived(i32, i32),
    Local(i16),
}

/// Client topics with, per partition named, where it goes.
type Placements = Vec<(String, Vec<(i32, Target)>)>;

/// Error code per (topic, physical partition).
type PartitionCodes = BTreeMap<(String, i32), i16>;

/// Topics and partitions an OffsetFetch asks about; `None` is "all".
type TopicPartitions = Option<Vec<(String, Vec<i32>)>>;

fn place(ctx: &ProxyContext, topic: &str, partition: i32, remapped: &mut bool) -> Target {
    let view = ctx.cluster.read();
    match ctx.mapper.decide(topic, &view) {
        Decision::PassThrough => Target::Main(partition),
        refused @ (Decision::Mismatch { .. } | Decision::Compacted { .. }) => {
            *remapped = true;
            Target::Local(refused.refusal_code().unwrap_or(error::INVALID_PARTITIONS))
        }
        Decision::Remap(m) => {
            *remapped = true;
            match m.locate(VirtualPartition(partition)) {
                None => {
                    warn!("{} (topic {topic})", m.out_of_range_message(partition));
                    Target::Local(error::UNKNOWN_TOPIC_OR_PARTITION)
                }
                Some((p, 0)) => Target::Main(p.0),
                Some((p, k)) => Target::Derived(k, p.0),
            }
        }
    }
}

/// Set a field only in versions that have it.
fn set_if(s: &mut Struct<'_>, name: &str, value: Value<'static>, version: i16) {
    if let Some(i) = s.schema.index_of(name) {
        let f = &s.schema.fields[i];
        if f.versions.contains(version) && !f.is_tagged_in(version) {
            s.fields[i] = value;
        }
    }
}

/// A copy of `req` keeping, per topic, only the partition entries `keep`
/// selects (rewritten by it); topics left empty are dropped.
fn filtered<'a>(
    req: &Struct<'a>,
    placements: &Placements,
    index_field: &str,
    keep: &dyn Fn(&Target) -> Option<i32>,
) -> (Struct<'a>, usize) {
    let mut out = req.clone();
    let mut count = 0;
    let mut topics = Vec::new();
    for (t, (_, parts)) in req.structs("topics").zip(placements) {
        let mut t = t.clone();
        let entries: Vec<Value<'a>> = t
            .structs("partitions")
            .zip(parts)
            .filter_map(|(e, (_, target))| {
                let p = keep(target)?;
                let mut e = e.clone();
                e.set(index_field, Value::Int32(p));
                Some(Value::Struct(e))
            })
            .collect();
        if !entries.is_empty() {
            count += entries.len();
            t.set("partitions", Value::Array(Some(entries)));
            topics.push(Value::Struct(t));
        }
    }
    out.set("topics", Value::Array(Some(topics)));
    (out, count)
}

fn part(session: &mut Session, header: &RequestHeader<'_>, api: ApiKey, version: i16, body: &Struct<'_>, route: Route) -> Result<Part, String> {
    Part::build(session, header.client_id.as_deref(), api as i16, version, body, route, Duration::ZERO)
}

/// Error code per (topic, physical partition) from an OffsetCommit or
/// OffsetDelete answer.
fn partition_codes(api: ApiKey, version: i16, answer: &[u8]) -> Result<(i16, PartitionCodes), String> {
    let (_, _, body) = parse_response_header(answer, api as i16, version).map_err(|e| e.to_string())?;
    let resp = codec::decode(response_schema(api as i16).expect("declared"), version, body).map_err(|e| e.to_string())?;
    let mut codes = BTreeMap::new();
    for t in resp.structs("topics") {
        for p in t.structs("partitions") {
            if let (Some(name), Some(i), Some(c)) = (t.str("name"), p.i32("partition_index"), p.i16("error_code")) {
                codes.insert((name.to_string(), i), c);
            }
        }
    }
    let top = if resp.has_field("error_code") { resp.i16("error_code").unwrap_or(0) } else { 0 };
    Ok((top, codes))
}

/// Build an OffsetCommit/OffsetDelete response: one error code per client
/// partition, looked up where it went.
fn codes_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    top_error: i16,
    placements: &Placements,
    code_of: &dyn Fn(&str, &Target) -> i16,
) -> Result<Vec<u8>, String> {
    let schema = &response_schema(api as i16).expect("declared").body;
    let mut body = codec::with_defaults(schema, version);
    if body.has_field("error_code") {
        set_if(&mut body, "error_code", Value::Int16(top_error), version);
    }
    let ts = codec::element_schema(schema, "topics");
    let ps = codec::element_schema(ts, "partitions");
    let topics = placements
        .iter()
        .map(|(name, parts)| {
            let mut t = codec::with_defaults(ts, version);
            t.set("name", Value::str(name.clone()));
            let entries = parts
                .iter()
                .map(|(v, target)| {
                    let mut e = codec::with_defaults(ps, version);
                    e.set("partition_index", Value::Int32(*v));
                    e.set("error_code", Value::Int16(code_of(name, target)));
                    Value::Struct(e)
                })
                .collect();
            t.set("partitions", Value::Array(Some(entries)));
            Value::Struct(t)
        })
        .collect();
    body.set("topics", Value::Array(Some(topics)));
    encode_response(api as i16, version, correlation_id, &[], &body).map_err(|e| e.to_string())
}

fn placements_of(ctx: &ProxyContext, req: &Struct<'_>) -> (Placements, bool) {
    let mut remapped = false;
    let placements = req
        .structs("topics")
        .map(|t| {
            let name = t.str("name").unwrap_or_default().to_string();
            let parts = t
                .structs("partitions")
                .map(|e| {
                    let v = e.i32("partition_index").unwrap_or(-1);
                    (v, place(ctx, &name, v, &mut remapped))
                })
                .collect();
            (name, parts)
        })
        .collect();
    (placements, remapped)
}

fn derived_ks(placements: &Placements) -> Vec<i32> {
    let mut ks: Vec<i32> = placements
        .iter()
        .flat_map(|(_, ps)| ps.iter())
        .filter_map(|(_, t)| if let Target::Derived(k, _) = t { Some(*k) } else { None })
        .collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// Correlation ids taken from the session while planning, for requests a
/// later stage builds (stages do not see the session).
struct ReservedIds(std::vec::IntoIter<i32>);

impl ReservedIds {
    fn take(session: &mut Session, n: usize) -> ReservedIds {
        ReservedIds((0..n).map(|_| session.next_correlation_id()).collect::<Vec<_>>().into_iter())
    }

    fn part(&mut self, client_id: Option<&str>, api: ApiKey, version: i16, body: &Struct<'_>, route: Route) -> Result<Part, String> {
        let correlation_id = self.0.next().ok_or("no correlation id left for a later stage")?;
        let frame = encode_request(api as i16, version, correlation_id, client_id, body).map_err(|e| e.to_string())?;
        Ok(Part { route, frame: frame.into(), correlation_id, broker_wait: Duration::ZERO })
    }
}

/// A DescribeGroups of `group`, to judge admin actions on its derived
/// groups by (see `MainGroup`), and the version it is sent in.
fn describe_group_part(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, group: &str) -> Result<(Part, i16), String> {
    let version = ctx.cluster.upstream_versions(ApiKey::DescribeGroups as i16).map_or(0, |(_, max)| max.min(5));
    let mut body = codec::with_defaults(&request_schema(ApiKey::DescribeGroups as i16).expect("declared").body, version);
    body.set("groups", Value::Array(Some(vec![Value::str(group)])));
    Ok((part(session, header, ApiKey::DescribeGroups, version, &body, Route::Group(group.to_string()))?, version))
}

fn main_group_of(version: i16, answer: &[u8]) -> Result<MainGroup, String> {
    let (_, _, body) = parse_response_header(answer, ApiKey::DescribeGroups as i16, version).map_err(|e| e.to_string())?;
    let resp = codec::decode(response_schema(ApiKey::DescribeGroups as i16).expect("declared"), version, body).map_err(|e| e.to_string())?;
    let g = resp.structs("groups").next().ok_or("DescribeGroups answered no group")?;
    Ok(MainGroup {
        error_code: g.i16("error_code").unwrap_or(error::NONE),
        state: g.str("group_state").unwrap_or_default().to_string(),
        protocol_type: g.str("protocol_type").unwrap_or_default().to_string(),
        member_metadata: g
            .structs("members")
            .map(|m| match m.get("member_metadata") {
                Value::Bytes(Some(b)) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect(),
    })
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
            let mut g = codec::with_defaults(codec::element_schema(schema, "groups"), fetch_version);
            g.set("group_id", Value::str(name.clone()));
            set_if(&mut g, "member_id", Value::String(None), fetch_version);
            set_if(&mut g, "member_epoch", Value::Int32(-1), fetch_version);
            g.set("topics", Value::Array(None));
            body.set("groups", Value::Array(Some(vec![Value::Struct(g)])));
        } else {
            body.set("group_id", Value::str(name.clone()));
            body.set("topics", Value::Array(None));
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
                        match partition_codes(ApiKey::OffsetCommit, commit_version, answer) {
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
    let ts = codec::element_schema(schema, "topics");
    let ps = codec::element_schema(ts, "partitions");
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
                    e.set("partition_index", Value::Int32(*p));
                    e.set("committed_offset", Value::Int64(c.offset));
                    set_if(&mut e, "committed_leader_epoch", Value::Int32(c.leader_epoch), version);
                    // v1: -1 is "the broker's time", so the commit counts from now.
                    set_if(&mut e, "commit_timestamp", Value::Int64(-1), version);
                    e.set("committed_metadata", Value::String(c.metadata.clone().map(std::borrow::Cow::Owned)));
                    Value::Struct(e.into_owned())
                })
                .collect();
            count += entries.len();
            (!entries.is_empty()).then(|| {
                let mut t = codec::with_defaults(ts, version);
                t.set("name", Value::str(topic.clone()));
                t.set("partitions", Value::Array(Some(entries)));
                Value::Struct(t.into_owned())
            })
        })
        .collect();
    if topics.is_empty() {
        return None;
    }
    let mut body = codec::with_defaults(schema, version);
    body.set("group_id", Value::str(name));
    set_if(&mut body, "generation_id_or_member_epoch", Value::Int32(-1), version);
    set_if(&mut body, "member_id", Value::str(""), version);
    set_if(&mut body, "group_instance_id", Value::String(None), version);
    // v2-v4: -1 is the broker's offsets.retention.minutes (0 would expire at once).
    set_if(&mut body, "retention_time_ms", Value::Int64(-1), version);
    body.set("topics", Value::Array(Some(topics)));
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
pub fn offset_commit(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    let version = header.api_version;
    let (placements, remapped) = placements_of(ctx, req);
    if !remapped {
        return None;
    }
    let group = req.str("group_id").unwrap_or_default().to_string();
    let (main, main_count) = filtered(req, &placements, "partition_index", &|t| if let Target::Main(p) = t { Some(*p) } else { None });
    let ks = derived_ks(&placements);
    let mut derived_parts = Vec::new();
    for &k in &ks {
        let (mut body, _) = filtered(req, &placements, "partition_index", &|t| match t {
            Target::Derived(kk, p) if *kk == k => Some(*p),
            _ => None,
        });
        let name = derived_group(&group, k);
        body.set("group_id", Value::str(name.clone()));
        set_if(&mut body, "generation_id_or_member_epoch", Value::Int32(-1), version);
        set_if(&mut body, "member_id", Value::str(""), version);
        set_if(&mut body, "group_instance_id", Value::String(None), version);
        match part(session, header, ApiKey::OffsetCommit, version, &body, Route::Group(name)) {
            Ok(p) => derived_parts.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
    }
    let generation = req.i32("generation_id_or_member_epoch").unwrap_or(-1);
    let member = req.str("member_id").unwrap_or_default().to_string();
    let instance = req.str("group_instance_id").map(str::to_string);
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
        hb.set("group_id", Value::str(group.clone()));
        hb.set("generation_id", Value::Int32(generation));
        hb.set("member_id", Value::str(member.clone()));
        match &instance {
            Some(i) => set_if(&mut hb, "group_instance_id", Value::str(i.clone()), hb_version),
            None => set_if(&mut hb, "group_instance_id", Value::String(None), hb_version),
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
            let (_, codes) = partition_codes(ApiKey::OffsetCommit, version, answer)?;
            for ((t, p), c) in codes {
                derived_codes.insert((*k, t, p), c);
            }
        }
        codes_response(ApiKey::OffsetCommit, version, correlation_id, 0, &placements_final, &|name, target| match target {
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
                    let (_, codes) = partition_codes(ApiKey::OffsetCommit, version, &answer)?;
                    let refusal = codes.values().copied().find(|c| refuses_member(*c) || *c == REBALANCE_IN_PROGRESS);
                    (codes, refusal)
                }
                MemberCheck::Heartbeat(hb_version) => {
                    let answer = answers.next().ok_or("no answer")?;
                    let (_, _, body) = parse_response_header(&answer, ApiKey::Heartbeat as i16, hb_version).map_err(|e| e.to_string())?;
                    let hb = codec::decode(response_schema(ApiKey::Heartbeat as i16).expect("declared"), hb_version, body).map_err(|e| e.to_string())?;
                    // REBALANCE_IN_PROGRESS from a heartbeat still means member and generation are current.
                    let code = hb.i16("error_code").unwrap_or(0);
                    (BTreeMap::new(), if code == error::NONE || code == REBALANCE_IN_PROGRESS { None } else { Some(code) })
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
                        if let Ok((_, codes)) = partition_codes(ApiKey::OffsetCommit, version, answer) {
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

const REBALANCE_IN_PROGRESS: i16 = 27;

/// OffsetDelete touching remapped topics. The group's own part goes to the
/// broker with a DescribeGroups of the group; derived partitions are then
/// deleted only where Kafka would delete the group's own (derived groups
/// have no members, so Kafka would delete theirs unasked).
pub fn offset_delete(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    let version = header.api_version;
    let (placements, remapped) = placements_of(ctx, req);
    if !remapped {
        return None;
    }
    let group = req.str("group_id").unwrap_or_default().to_string();
    let ks = derived_ks(&placements);
    let mut stage1 = Vec::new();
    let (main, main_count) = filtered(req, &placements, "partition_index", &|t| if let Target::Main(p) = t { Some(*p) } else { None });
    if main_count > 0 {
        match part(session, header, ApiKey::OffsetDelete, version, &main, Route::Group(group.clone())) {
            Ok(p) => stage1.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
    }
    let describe_version = if ks.is_empty() {
        None
    } else {
        match describe_group_part(ctx, session, header, &group) {
            Ok((p, v)) => {
                stage1.push(p);
                Some(v)
            }
            Err(e) => return Some(Plan::Close(e)),
        }
    };
    // The derived parts, per k; sent in the next stage, for the topics the
    // group's answer lets go.
    let mut ids = ReservedIds::take(session, ks.len());
    let client_id = header.client_id.as_deref().map(str::to_string);
    let respond = move |placements: &Placements, top: i16, main_codes: &PartitionCodes, derived: &BTreeMap<(i32, String, i32), i16>, corr: i32| {
        codes_response(ApiKey::OffsetDelete, version, corr, top, placements, &|name, target| match target {
            Target::Main(p) => *main_codes.get(&(name.to_string(), *p)).unwrap_or(&top),
            Target::Derived(k, p) => *derived.get(&(*k, name.to_string(), *p)).unwrap_or(&error::NONE),
            Target::Local(c) => *c,
        })
    };
    if stage1.is_empty() {
        return Some(match respond(&placements, error::NONE, &BTreeMap::new(), &BTreeMap::new(), header.correlation_id) {
            Ok(bytes) => Plan::Answer(bytes),
            Err(e) => Plan::Close(e),
        });
    }
    Some(Plan::Forward {
        parts: stage1,
        expect_response: true,
        finish: Finish::Then(Box::new(move |_ctx, _v, corr, answers| {
            let mut answers = answers.into_iter();
            let (main_top, main_codes) = if main_count > 0 {
                partition_codes(ApiKey::OffsetDelete, version, &answers.next().ok_or("no answer")?)?
            } else {
                (error::NONE, BTreeMap::new())
            };
            let verdict = match describe_version {
                Some(v) => main_group_of(v, &answers.next().ok_or("no answer")?)?.offset_delete_verdict(),
                None => DeleteVerdict::Subscribed(Default::default()),
            };
            // The group's own answer wins: a group-level error deletes
            // nothing, and a topic it keeps is kept in every derived group.
            let refusal = |topic: &str| -> Option<i16> {
                if main_top != error::NONE {
                    return Some(main_top);
                }
                if main_codes.iter().any(|((t, _), c)| t == topic && *c == GROUP_SUBSCRIBED_TO_TOPIC) {
                    return Some(GROUP_SUBSCRIBED_TO_TOPIC);
                }
                verdict.refusal(topic)
            };
            let top = match (main_top, &verdict) {
                (error::NONE, DeleteVerdict::Refuse(code)) => *code,
                (top, _) => top,
            };
            let mut codes: BTreeMap<(i32, String, i32), i16> = BTreeMap::new();
            for (name, parts) in &placements {
                if let Some(code) = refusal(name) {
                    for (_, target) in parts {
                        if let Target::Derived(k, p) = target {
                            codes.insert((*k, name.clone(), *p), code);
                        }
                    }
                }
            }
            if !codes.is_empty() {
                warn!(
                    "OffsetDelete of group {group}: offsets of virtual partitions with k >= 1 kept, as Kafka keeps the group's own \
                     (error per (k, topic, physical partition): {codes:?})"
                );
            }
            let mut parts = Vec::new();
            let mut sources = Vec::new();
            let schema = &request_schema(ApiKey::OffsetDelete as i16).expect("declared").body;
            let ts = codec::element_schema(schema, "topics");
            let ps = codec::element_schema(ts, "partitions");
            for &k in &ks {
                // OffsetDelete has no flexible version, so no tagged fields to carry.
                let topics: Vec<Value<'static>> = placements
                    .iter()
                    .filter(|(name, _)| refusal(name).is_none())
                    .filter_map(|(name, parts)| {
                        let entries: Vec<Value<'static>> = parts
                            .iter()
                            .filter_map(|(_, target)| match target {
                                Target::Derived(kk, p) if *kk == k => {
                                    let mut e = codec::with_defaults(ps, version);
                                    e.set("partition_index", Value::Int32(*p));
                                    Some(Value::Struct(e))
                                }
                                _ => None,
                            })
                            .collect();
                        (!entries.is_empty()).then(|| {
                            let mut t = codec::with_defaults(ts, version);
                            t.set("name", Value::str(name.clone()));
                            t.set("partitions", Value::Array(Some(entries)));
                            Value::Struct(t)
                        })
                    })
                    .collect();
                if topics.is_empty() {
                    continue;
                }
                let name = derived_group(&group, k);
                let mut body = codec::with_defaults(schema, version);
                body.set("group_id", Value::str(name.clone()));
                body.set("topics", Value::Array(Some(topics)));
                parts.push(ids.part(client_id.as_deref(), ApiKey::OffsetDelete, version, &body, Route::Group(name))?);
                sources.push(k);
            }
            if parts.is_empty() {
                return respond(&placements, top, &main_codes, &codes, corr).map(Step::Done);
            }
            Ok(Step::More {
                parts,
                finish: Finish::Merge(Box::new(move |_ctx, _v, corr, answers| {
                    for (k, answer) in sources.iter().zip(&answers) {
                        // A derived group that holds nothing answers for itself
                        // (GROUP_ID_NOT_FOUND): nothing was there to delete.
                        let (_, derived) = partition_codes(ApiKey::OffsetDelete, version, answer)?;
                        for ((t, p), c) in derived {
                            codes.insert((*k, t, p), c);
                        }
                    }
                    respond(&placements, top, &main_codes, &codes, corr)
                })),
            })
        })),
    })
}

/// One partition's committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone)]
struct Committed {
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    error_code: i16,
}

/// One group's answer in any OffsetFetch version.
#[derive(Debug, Default)]
struct GroupOffsets {
    error_code: i16,
    topics: Vec<(String, Vec<(i32, Committed)>)>,
}

/// The groups of an OffsetFetch request, whatever its version: (group,
/// topics or None for all).
fn offset_fetch_groups(req: &Struct<'_>) -> Vec<(String, TopicPartitions)> {
    let topics_of = |s: &Struct<'_>| -> Option<Vec<(String, Vec<i32>)>> {
        match s.get("topics") {
            Value::Array(Some(ts)) => Some(
                ts.iter()
                    .filter_map(Value::as_struct)
                    .map(|t| {
                        let parts = t.array("partition_indexes").iter().filter_map(|v| if let Value::Int32(i) = v { Some(*i) } else { None }).collect();
                        (t.str("name").unwrap_or_default().to_string(), parts)
                    })
                    .collect(),
            ),
            _ => None,
        }
    };
    if let Some(g) = req.str("group_id") {
        return vec![(g.to_string(), topics_of(req))];
    }
    req.structs("groups").map(|g| (g.str("group_id").unwrap_or_default().to_string(), topics_of(g))).collect()
}

fn decode_offsets(version: i16, answer: &[u8]) -> Result<Vec<GroupOffsets>, String> {
    let (_, _, body) = parse_response_header(answer, ApiKey::OffsetFetch as i16, version).map_err(|e| e.to_string())?;
    let resp = codec::decode(response_schema(ApiKey::OffsetFetch as i16).expect("declared"), version, body).map_err(|e| e.to_string())?;
    let read_topics = |s: &Struct<'_>| -> Vec<(String, Vec<(i32, Committed)>)> {
        s.structs("topics")
            .map(|t| {
                let parts = t
                    .structs("partitions")
                    .map(|p| {
                        (
                            p.i32("partition_index").unwrap_or(-1),
                            Committed {
                                offset: p.i64("committed_offset").unwrap_or(-1),
                                leader_epoch: p.i32("committed_leader_epoch").unwrap_or(-1),
                                metadata: p.str("metadata").map(str::to_string),
                                error_code: p.i16("error_code").unwrap_or(0),
                            },
                        )
                    })
                    .collect();
                (t.str("name").unwrap_or_default().to_string(), parts)
            })
            .collect()
    };
    if version >= 8 {
        Ok(resp
            .structs("groups")
            .map(|g| GroupOffsets { error_code: g.i16("error_code").unwrap_or(0), topics: read_topics(g) })
            .collect())
    } else {
        Ok(vec![GroupOffsets { error_code: resp.i16("error_code").unwrap_or(0), topics: read_topics(&resp) }])
    }
}

/// OffsetFetch touching remapped topics (or asking for all topics of a
/// group while remapping is configured).
pub fn offset_fetch(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    let version = header.api_version;
    let groups = offset_fetch_groups(req);
    let max_k = ctx.mapper.max_ratio();
    // Per client group: the sub-queries (k, physical topics or None).
    let mut remapped = false;
    let mut queries: Vec<(usize, i32, TopicPartitions)> = Vec::new();
    for (gi, (_, topics)) in groups.iter().enumerate() {
        match topics {
            None => {
                remapped |= max_k > 1;
                for k in 0..max_k {
                    queries.push((gi, k, None));
                }
            }
            Some(ts) => {
                let mut by_k: BTreeMap<i32, Vec<(String, Vec<i32>)>> = BTreeMap::new();
                for (name, parts) in ts {
                    for &v in parts {
                        let (k, p) = match place(ctx, name, v, &mut remapped) {
                            Target::Main(p) => (0, p),
                            Target::Derived(k, p) => (k, p),
                            Target::Local(_) => continue,
                        };
                        let entry = by_k.entry(k).or_default();
                        match entry.iter_mut().find(|(n, _)| n == name) {
                            Some((_, ps)) => {
                                if !ps.contains(&p) {
                                    ps.push(p)
                                }
                            }
                            None => entry.push((name.clone(), vec![p])),
                        }
                    }
                }
                // The group's own query always runs: it carries the group's error.
                by_k.entry(0).or_default();
                for (k, ts) in by_k {
                    queries.push((gi, k, Some(ts)));
                }
            }
        }
    }
    if !remapped {
        return None;
    }
    let schema = &request_schema(ApiKey::OffsetFetch as i16).expect("declared").body;
    let mut parts = Vec::new();
    for (gi, k, topics) in &queries {
        let group = if *k == 0 { groups[*gi].0.clone() } else { derived_group(&groups[*gi].0, *k) };
        let mut body = codec::with_defaults(schema, version);
        let topic_values = |s: &'static StructSchemaRef| -> Value<'static> {
            match topics {
                None => Value::Array(None),
                Some(ts) => Value::Array(Some(
                    ts.iter()
                        .map(|(name, ps)| {
                            let mut t = codec::with_defaults(s, version);
                            t.set("name", Value::str(name.clone()));
                            t.set("partition_indexes", Value::Array(Some(ps.iter().map(|p| Value::Int32(*p)).collect())));
                            Value::Struct(t.into_owned())
                        })
                        .collect(),
                )),
            }
        };
        if version >= 8 {
            let gs = codec::element_schema(schema, "groups");
            let mut g = codec::with_defaults(gs, version);
            g.set("group_id", Value::str(group.clone()));
            if *k == 0 {
                if let Some(orig) = req.structs("groups").nth(*gi) {
                    if let Some(m) = orig.str("member_id") {
                        set_if(&mut g, "member_id", Value::str(m), version);
                    }
                    if let Some(e) = orig.i32("member_epoch") {
                        set_if(&mut g, "member_epoch", Value::Int32(e), version);
                    }
                }
            } else {
                set_if(&mut g, "member_id", Value::String(None), version);
                set_if(&mut g, "member_epoch", Value::Int32(-1), version);
            }
            g.set("topics", topic_values(codec::element_schema(gs, "topics")));
            body.set("groups", Value::Array(Some(vec![Value::Struct(g)])));
        } else {
            body.set("group_id", Value::str(group.clone()));
            body.set("topics", topic_values(codec::element_schema(schema, "topics")));
        }
        if let Value::Bool(b) = req.get("require_stable") {
            set_if(&mut body, "require_stable", Value::Bool(*b), version);
        }
        match part(session, header, ApiKey::OffsetFetch, version, &body, Route::Group(group)) {
            Ok(p) => parts.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
    }
    let groups_owned = groups.clone();
    let names: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
    let finish = move |ctx: &ProxyContext, corr: i32, answers: Vec<Vec<u8>>| -> Result<Vec<u8>, String> {
        let mut per_group: Vec<GroupOffsets> = groups_owned.iter().map(|_| GroupOffsets::default()).collect();
        let mut found: Vec<BTreeMap<(String, i32), Committed>> = groups_owned.iter().map(|_| BTreeMap::new()).collect();
        let mut all_topics: Vec<Vec<String>> = groups_owned.iter().map(|_| Vec::new()).collect();
        for ((gi, k, _), answer) in queries.iter().zip(&answers) {
            let decoded = decode_offsets(version, answer)?;
            let Some(g) = decoded.into_iter().next() else { continue };
            if g.error_code != error::NONE && (per_group[*gi].error_code == error::NONE || *k == 0) {
                per_group[*gi].error_code = g.error_code;
            }
            for (topic, parts) in g.topics {
                let view = ctx.cluster.read();
                let decision = ctx.mapper.decide(&topic, &view);
                drop(view);
                if !all_topics[*gi].contains(&topic) {
                    all_topics[*gi].push(topic.clone());
                }
                for (p, c) in parts {
                    let v = match (&decision, *k) {
                        (Decision::Remap(m), k) => m.virtual_of(crate::remap::mapping::PhysicalPartition(p), k).0,
                        (_, 0) => p,
                        // A derived group holds only remapped topics.
                        _ => continue,
                    };
                    found[*gi].insert((topic.clone(), v), c);
                }
            }
        }
        for (gi, (_, topics)) in groups_owned.iter().enumerate() {
            let none = Committed { offset: -1, leader_epoch: -1, metadata: Some(String::new()), error_code: error::NONE };
            per_group[gi].topics = match topics {
                Some(ts) => ts
                    .iter()
                    .map(|(name, ps)| {
                        let entries = ps
                            .iter()
                            .map(|&v| {
                                let mut remapped = false;
                                let c = match place(ctx, name, v, &mut remapped) {
                                    Target::Local(code) => Committed { error_code: code, ..none.clone() },
                                    _ => found[gi].get(&(name.clone(), v)).cloned().unwrap_or_else(|| none.clone()),
                                };
                                (v, c)
                            })
                            .collect();
                        (name.clone(), entries)
                    })
                    .collect(),
                None => all_topics[gi]
                    .iter()
                    .map(|name| {
                        let mut entries: Vec<(i32, Committed)> =
                            found[gi].iter().filter(|((t, _), _)| t == name).map(|((_, v), c)| (*v, c.clone())).collect();
                        entries.sort_by_key(|(v, _)| *v);
                        (name.clone(), entries)
                    })
                    .collect(),
            };
        }
        encode_offset_fetch(version, corr, &names, &per_group)
    };
    Some(Plan::Forward {
        parts,
        expect_response: true,
        finish: Finish::Merge(Box::new(move |ctx, _v, corr, answers| finish(ctx, corr, answers))),
    })
}

type StructSchemaRef = crate::kafka::schema::StructSchema;

fn encode_offset_fetch(version: i16, corr: i32, names: &[String], groups: &[GroupOffsets]) -> Result<Vec<u8>, String> {
    let schema = &response_schema(ApiKey::OffsetFetch as i16).expect("declared").body;
    let mut body = codec::with_defaults(schema, version);
    let topics_value = |parent: &'static StructSchemaRef, topics: &[(String, Vec<(i32, Committed)>)]| -> Value<'static> {
        let ts = codec::element_schema(parent, "topics");
        let ps = codec::element_schema(ts, "partitions");
        Value::Array(Some(
            topics
                .iter()
                .map(|(name, parts)| {
                    let mut t = codec::with_defaults(ts, version);
                    t.set("name", Value::str(name.clone()));
                    let entries = parts
                        .iter()
                        .map(|(v, c)| {
                            let mut e = codec::with_defaults(ps, version);
                            e.set("partition_index", Value::Int32(*v));
                            e.set("committed_offset", Value::Int64(c.offset));
                            set_if(&mut e, "committed_leader_epoch", Value::Int32(c.leader_epoch), version);
                            e.set("metadata", Value::String(c.metadata.clone().map(std::borrow::Cow::Owned)));
                            e.set("error_code", Value::Int16(c.error_code));
                            Value::Struct(e.into_owned())
                        })
                        .collect();
                    t.set("partitions", Value::Array(Some(entries)));
                    Value::Struct(t.into_owned())
                })
                .collect(),
        ))
    };
    if version >= 8 {
        let gs = codec::element_schema(schema, "groups");
        let gv = names
            .iter()
            .zip(groups)
            .map(|(name, g)| {
                let mut s = codec::with_defaults(gs, version);
                s.set("group_id", Value::str(name.clone()));
                s.set("error_code", Value::Int16(g.error_code));
                s.set("topics", topics_value(gs, &g.topics));
                Value::Struct(s)
            })
            .collect();
        body.set("groups", Value::Array(Some(gv)));
    } else {
        let g = groups.first().ok_or("no group")?;
        body.set("topics", topics_value(schema, &g.topics));
        set_if(&mut body, "error_code", Value::Int16(g.error_code), version);
    }
    encode_response(ApiKey::OffsetFetch as i16, version, corr, &[], &body).map_err(|e| e.to_string())
}

/// TxnOffsetCommit: k = 0 partitions are their physical partitions; a
/// k ≥ 1 partition would need the transaction's producer id on a derived
/// group, which is not designed yet: the whole commit is refused so that
/// no transaction commits a part of its offsets.
pub fn txn_offset_commit(ctx: &ProxyContext, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    let (placements, remapped) = placements_of(ctx, req);
    if !remapped {
        return None;
    }
    let refused: Vec<String> = placements
        .iter()
        .flat_map(|(t, ps)| ps.iter().filter(|(_, target)| !matches!(target, Target::Main(_))).map(move |(v, _)| format!("{t}/{v}")))
        .collect();
    if refused.is_empty() {
        return None;
    }
    warn!(
        "Refusing TxnOffsetCommit of group {:?}: virtual partitions {} are not partition 0..P-1 of their topic, and \
         transactions on those are not supported",
        req.str("group_id").unwrap_or_default(),
        refused.join(", ")
    );
    Some(match codes_response(ApiKey::TxnOffsetCommit, header.api_version, header.correlation_id, 0, &placements, &|_, t| match t {
        Target::Local(c) => *c,
        _ => error::INVALID_TXN_STATE,
    }) {
        Ok(bytes) => Plan::Answer(bytes),
        Err(e) => Plan::Close(e),
    })
}

/// DeleteGroups: delete the groups, then the derived groups of those that
/// were deleted (never before: a group that refuses deletion keeps all its
/// offsets).
pub fn delete_groups(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, frame: &[u8]) -> Option<Plan> {
    let max_k = ctx.mapper.max_ratio();
    if max_k <= 1 {
        return None;
    }
    let version = header.api_version;
    let client_id = header.client_id.as_deref().map(str::to_string);
    let first = Part {
        route: super::route::Route::Any,
        frame: PartFrame::Original,
        correlation_id: header.correlation_id,
        broker_wait: Duration::ZERO,
    };
    let groups: Vec<String> = {
        let Ok((_, body)) = RequestHeader::parse(frame) else { return None };
        let Ok(req) = codec::decode(request_schema(ApiKey::DeleteGroups as i16).expect("declared"), version, body) else { return None };
        req.array("groups_names").iter().filter_map(|v| if let Value::String(Some(s)) = v { Some(s.to_string()) } else { None }).collect()
    };
    let first = Part { route: groups.first().map_or(Route::Any, |g| Route::Group(g.clone())), ..first };
    let mut next_correlation = session.next_correlation_id();
    Some(Plan::Forward {
        parts: vec![first],
        expect_response: true,
        finish: Finish::Then(Box::new(move |_ctx, _v, corr, mut answers| {
            let mut answer = answers.pop().ok_or("no answer")?;
            let (_, _, body) = parse_response_header(&answer, ApiKey::DeleteGroups as i16, version).map_err(|e| e.to_string())?;
            let resp = codec::decode(response_schema(ApiKey::DeleteGroups as i16).expect("declared"), version, body).map_err(|e| e.to_string())?;
            // Derived groups go with a deleted group, and with one already
            // gone (a retry after a derived deletion failed).
            let deleted: Vec<String> = resp
                .structs("results")
                .filter(|r| matches!(r.i16("error_code"), Some(error::NONE | error::GROUP_ID_NOT_FOUND)))
                .filter_map(|r| r.str("group_id").map(str::to_string))
                .collect();
            super::plan::set_correlation_id(&mut answer, corr);
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
                    body.set("groups_names", Value::Array(Some(vec![Value::str(name.clone())])));
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
    let schema = response_schema(ApiKey::DeleteGroups as i16).expect("declared");
    let mut out = Vec::new();
    for (derived, answer) in asked.iter().zip(answers) {
        let code = parse_response_header(answer, ApiKey::DeleteGroups as i16, version)
            .ok()
            .and_then(|(_, _, body)| codec::decode(schema, version, body).ok())
            // Each request named this one group: its one result is the answer.
            .map_or(error::UNKNOWN_SERVER_ERROR, |r| {
                r.structs("results").next().and_then(|g| g.i16("error_code")).unwrap_or(error::UNKNOWN_SERVER_ERROR)
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
    let (_, _, body) = parse_response_header(answer, ApiKey::DeleteGroups as i16, version).map_err(|e| e.to_string())?;
    let mut resp =
        codec::decode(response_schema(ApiKey::DeleteGroups as i16).expect("declared"), version, body).map_err(|e| e.to_string())?;
    for r in resp.structs_mut("results") {
        let Some(group) = r.str("group_id").map(str::to_string) else { continue };
        let Some((_, derived, code)) = failures.iter().find(|(g, _, _)| *g == group) else { continue };
        warn!(
            "DeleteGroups: group {group} is deleted, but its derived group {derived} (offsets of virtual partitions with \
             k >= 1) was not: Kafka error code {code}; answering {group} with that error"
        );
        if r.i16("error_code") == Some(error::NONE) {
            r.set("error_code", Value::Int16(*code));
        }
    }
    encode_response(ApiKey::DeleteGroups as i16, version, corr, &[], &resp).map_err(|e| e.to_string())
}

/// ListGroups: derived groups are the proxy's bookkeeping, not the user's.
pub fn hide_derived_groups(body: &mut Struct<'_>) -> bool {
    let Some(groups) = body.array_mut("groups") else { return false };
    let before = groups.len();
    groups.retain(|g| g.as_struct().and_then(|g| g.str("group_id")).map_or(true, |id| parse_derived(id).is_none()));
    groups.len() != before
}
