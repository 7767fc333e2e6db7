//! Group APIs on remapped topics: committed offsets of k ≥ 1 virtual
//! partitions live in derived groups (see `remap::groups`). Each function
//! returns `None` when the request touches no remapped topic, so it goes
//! upstream as the bytes that came.

use std::collections::BTreeMap;
use std::time::Duration;

use log::warn;

use super::plan::{Finish, Part, PartFrame, Plan, Step};
use super::route::Route;
use super::session::Session;
use super::ProxyContext;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::header::{parse_response_header, RequestHeader};
use crate::kafka::message::{encode_request, encode_response, request_schema, response_schema};
use crate::remap::groups::{derived_group, parse_derived, refuses_member};
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
    let needs_check = generation >= 0 || !member.is_empty();
    // Stage 1: the group's own commit (which the broker validates), or a
    // heartbeat standing in for it when only derived partitions are named.
    let (stage1_api, stage1_version, stage1) = if main_count > 0 {
        (ApiKey::OffsetCommit, version, Some(main))
    } else if needs_check && !derived_parts.is_empty() {
        let hb_version = match ctx.cluster.upstream_versions(ApiKey::Heartbeat as i16) {
            Some((_, max)) => max.min(4),
            None => 0,
        };
        let mut hb = codec::with_defaults(&request_schema(ApiKey::Heartbeat as i16).expect("declared").body, hb_version);
        hb.set("group_id", Value::str(group.clone()));
        hb.set("generation_id", Value::Int32(generation));
        hb.set("member_id", Value::str(member.clone()));
        if let Some(instance) = req.str("group_instance_id") {
            set_if(&mut hb, "group_instance_id", Value::str(instance), hb_version);
        } else {
            set_if(&mut hb, "group_instance_id", Value::String(None), hb_version);
        }
        (ApiKey::Heartbeat, hb_version, Some(hb.into_owned()))
    } else {
        (ApiKey::OffsetCommit, version, None)
    };
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
    let Some(stage1) = stage1 else {
        // Nothing to validate against (a standalone commit): derived commits go now.
        let ks2 = ks.clone();
        return Some(Plan::Forward {
            parts: derived_parts,
            expect_response: true,
            finish: Finish::Merge(Box::new(move |_ctx, _v, corr, answers| finish_all(BTreeMap::new(), None, answers, ks2, corr))),
        });
    };
    let stage1_part = match part(session, header, stage1_api, stage1_version, &stage1, Route::Group(group.clone())) {
        Ok(p) => p,
        Err(e) => return Some(Plan::Close(e)),
    };
    Some(Plan::Forward {
        parts: vec![stage1_part],
        expect_response: true,
        finish: Finish::Then(Box::new(move |_ctx, _v, corr, mut answers| {
            let answer = answers.pop().ok_or("no answer")?;
            let (main_codes, member_error) = if stage1_api == ApiKey::Heartbeat {
                let (_, _, body) = parse_response_header(&answer, ApiKey::Heartbeat as i16, stage1_version).map_err(|e| e.to_string())?;
                let hb = codec::decode(response_schema(ApiKey::Heartbeat as i16).expect("declared"), stage1_version, body).map_err(|e| e.to_string())?;
                // REBALANCE_IN_PROGRESS from a heartbeat still means member and generation are current.
                let code = hb.i16("error_code").unwrap_or(0);
                (BTreeMap::new(), if code == error::NONE || code == REBALANCE_IN_PROGRESS { None } else { Some(code) })
            } else {
                let (_, codes) = partition_codes(ApiKey::OffsetCommit, version, &answer)?;
                let refusal = codes.values().copied().find(|c| refuses_member(*c) || *c == REBALANCE_IN_PROGRESS);
                (codes, refusal)
            };
            if let Some(code) = member_error {
                warn!("Commit of derived offsets for group {group} refused: the member is not current (error {code})");
            }
            if member_error.is_some() || derived_parts.is_empty() {
                return finish_all(main_codes, member_error, Vec::new(), Vec::new(), corr).map(Step::Done);
            }
            Ok(Step::More {
                parts: derived_parts,
                finish: Finish::Merge(Box::new(move |_ctx, _v, corr, answers| finish_all(main_codes, None, answers, ks, corr))),
            })
        })),
    })
}

const REBALANCE_IN_PROGRESS: i16 = 27;

/// OffsetDelete touching remapped topics: the group and its derived groups
/// in parallel.
pub fn offset_delete(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, req: &Struct<'_>) -> Option<Plan> {
    let version = header.api_version;
    let (placements, remapped) = placements_of(ctx, req);
    if !remapped {
        return None;
    }
    let group = req.str("group_id").unwrap_or_default().to_string();
    let mut parts = Vec::new();
    let mut sources: Vec<i32> = Vec::new(); // 0 = main, k = derived
    let (main, main_count) = filtered(req, &placements, "partition_index", &|t| if let Target::Main(p) = t { Some(*p) } else { None });
    if main_count > 0 {
        match part(session, header, ApiKey::OffsetDelete, version, &main, Route::Group(group.clone())) {
            Ok(p) => parts.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
        sources.push(0);
    }
    for k in derived_ks(&placements) {
        let (mut body, _) = filtered(req, &placements, "partition_index", &|t| match t {
            Target::Derived(kk, p) if *kk == k => Some(*p),
            _ => None,
        });
        let name = derived_group(&group, k);
        body.set("group_id", Value::str(name.clone()));
        match part(session, header, ApiKey::OffsetDelete, version, &body, Route::Group(name)) {
            Ok(p) => parts.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
        sources.push(k);
    }
    let finish = move |answers: Vec<Vec<u8>>, corr: i32| -> Result<Vec<u8>, String> {
        let mut codes: BTreeMap<(i32, String, i32), i16> = BTreeMap::new();
        let mut top = 0;
        for (k, a) in sources.iter().zip(&answers) {
            let (t, c) = partition_codes(ApiKey::OffsetDelete, version, a)?;
            if *k == 0 || top == 0 {
                top = if *k == 0 { t } else { top };
            }
            for ((name, p), code) in c {
                codes.insert((*k, name, p), code);
            }
        }
        codes_response(ApiKey::OffsetDelete, version, corr, top, &placements, &|name, target| match target {
            Target::Main(p) => *codes.get(&(0, name.to_string(), *p)).unwrap_or(&top),
            Target::Derived(k, p) => *codes.get(&(*k, name.to_string(), *p)).unwrap_or(&error::NONE),
            Target::Local(c) => *c,
        })
    };
    if parts.is_empty() {
        return Some(match finish(Vec::new(), header.correlation_id) {
            Ok(bytes) => Plan::Answer(bytes),
            Err(e) => Plan::Close(e),
        });
    }
    Some(Plan::Forward { parts, expect_response: true, finish: Finish::Merge(Box::new(move |_c, _v, corr, answers| finish(answers, corr))) })
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
            let deleted: Vec<String> = resp
                .structs("results")
                .filter(|r| r.i16("error_code") == Some(error::NONE))
                .filter_map(|r| r.str("group_id").map(str::to_string))
                .collect();
            super::plan::set_correlation_id(&mut answer, corr);
            if deleted.is_empty() {
                return Ok(Step::Done(answer));
            }
            let schema = &request_schema(ApiKey::DeleteGroups as i16).expect("declared").body;
            let mut parts = Vec::new();
            for g in &deleted {
                for k in 1..max_k {
                    let name = derived_group(g, k);
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
            Ok(Step::More { parts, finish: Finish::Merge(Box::new(move |_c, _v, _corr, _answers| Ok(answer))) })
        })),
    })
}

/// ListGroups: derived groups are the proxy's bookkeeping, not the user's.
pub fn hide_derived_groups(body: &mut Struct<'_>) -> bool {
    let Some(groups) = body.array_mut("groups") else { return false };
    let before = groups.len();
    groups.retain(|g| g.as_struct().and_then(|g| g.str("group_id")).map_or(true, |id| parse_derived(id).is_none()));
    groups.len() != before
}
