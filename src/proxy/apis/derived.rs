//! What the offset APIs on remapped topics share: committed offsets of
//! k ≥ 1 virtual partitions live in derived groups (see `remap::groups`),
//! so each partition a request names is placed on the group itself or on a
//! derived group, requests are built per group, and the answers' codes are
//! put back under the client's partitions.

use std::collections::BTreeMap;
use std::time::Duration;

use log::warn;

use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::header::{parse_response_header, RequestHeader};
use crate::kafka::message::{encode_request, encode_response, request_schema, response_schema};
use crate::kafka::schema::StructSchema;
use crate::proxy::plan::{CorrelationIds, Part};
use crate::proxy::route::Route;
use crate::proxy::session::Session;
use crate::proxy::ProxyContext;
use crate::remap::groups::MainGroup;
use crate::remap::mapping::{Decision, VirtualPartition};
use crate::remap::offset_fetch::{Committed, GroupOffsets};

/// Where one partition of a group request goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The group itself, at this physical partition.
    Main(i32),
    /// Derived group k, at this physical partition.
    Derived(i32, i32),
    Local(i16),
}

/// Client topics with, per partition named, where it goes.
pub type Placements = Vec<(String, Vec<(i32, Target)>)>;

/// Error code per (topic, physical partition).
pub type PartitionCodes = BTreeMap<(String, i32), i16>;

/// Where partition `partition` of `topic` goes; sets `remapped` when the
/// topic is not passed through.
pub fn place(ctx: &ProxyContext, topic: &str, partition: i32, remapped: &mut bool) -> Target {
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
pub fn set_if(s: &mut Struct<'_>, name: &str, value: Value<'static>, version: i16) {
    if let Some(i) = s.schema.index_of(name) {
        let f = &s.schema.fields[i];
        if f.versions.contains(version) && !f.is_tagged_in(version) {
            s.fields[i] = value;
        }
    }
}

/// A copy of `req` keeping, per topic, only the partition entries `keep`
/// selects (rewritten by it); topics left empty are dropped.
pub fn filtered<'a>(
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

pub fn part(session: &mut Session, header: &RequestHeader<'_>, api: ApiKey, version: i16, body: &Struct<'_>, route: Route) -> Result<Part, String> {
    Part::build(session, header.client_id.as_deref(), api as i16, version, body, route, Duration::ZERO)
}

/// Error code per (topic, physical partition) from an OffsetCommit or
/// OffsetDelete answer.
pub fn partition_codes(api: ApiKey, version: i16, answer: &[u8]) -> Result<(i16, PartitionCodes), String> {
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
pub fn codes_response(
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
    let topics = placements.iter().map(|(name, parts)| (name.as_str(), parts.as_slice()));
    let topics = topics_array(schema, version, topics, &|name, e, (v, target)| {
        e.set("partition_index", Value::Int32(*v));
        e.set("error_code", Value::Int16(code_of(name, target)));
    });
    body.set("topics", Value::Array(Some(topics)));
    encode_response(api as i16, version, correlation_id, &[], &body).map_err(|e| e.to_string())
}

/// The `topics` array of a message of schema `parent` (topics →
/// partitions): one topic per `(name, items)`, one partition entry per
/// item, filled in by `fill(topic, entry, item)`.
pub fn topics_array<'i, T: 'i>(
    parent: &'static StructSchema,
    version: i16,
    topics: impl IntoIterator<Item = (&'i str, &'i [T])>,
    fill: &dyn Fn(&str, &mut Struct<'static>, &T),
) -> Vec<Value<'static>> {
    let ts = codec::element_schema(parent, "topics");
    let ps = codec::element_schema(ts, "partitions");
    topics
        .into_iter()
        .map(|(name, items)| {
            let mut t = codec::with_defaults(ts, version);
            t.set("name", Value::str(name.to_string()));
            let entries = items
                .iter()
                .map(|item| {
                    let mut e = codec::with_defaults(ps, version);
                    fill(name, &mut e, item);
                    Value::Struct(e)
                })
                .collect();
            t.set("partitions", Value::Array(Some(entries)));
            Value::Struct(t)
        })
        .collect()
}

/// Where each partition of a group request goes, and its group; `None`
/// when it names no remapped topic (it is forwarded as it came).
pub fn remapped_placements(ctx: &ProxyContext, req: &Struct<'_>) -> Option<(Placements, String)> {
    let (placements, remapped) = placements_of(ctx, req);
    remapped.then(|| (placements, req.str("group_id").unwrap_or_default().to_string()))
}

pub fn placements_of(ctx: &ProxyContext, req: &Struct<'_>) -> (Placements, bool) {
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

pub fn derived_ks(placements: &Placements) -> Vec<i32> {
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
pub struct ReservedIds(std::vec::IntoIter<i32>);

impl ReservedIds {
    pub fn take(session: &mut Session, n: usize) -> ReservedIds {
        ReservedIds((0..n).map(|_| session.next_correlation_id()).collect::<Vec<_>>().into_iter())
    }

    pub fn part(&mut self, client_id: Option<&str>, api: ApiKey, version: i16, body: &Struct<'_>, route: Route) -> Result<Part, String> {
        let correlation_id = self.0.next().ok_or("no correlation id left for a later stage")?;
        let frame = encode_request(api as i16, version, correlation_id, client_id, body).map_err(|e| e.to_string())?;
        Ok(Part { route, frame: frame.into(), correlation_id, broker_wait: Duration::ZERO })
    }
}

/// A DescribeGroups of `group`, to judge admin actions on its derived
/// groups by (see `MainGroup`), and the version it is sent in.
pub fn describe_group_part(ctx: &ProxyContext, session: &mut Session, header: &RequestHeader<'_>, group: &str) -> Result<(Part, i16), String> {
    let version = ctx.cluster.upstream_versions(ApiKey::DescribeGroups as i16).map_or(0, |(_, max)| max.min(5));
    let mut body = codec::with_defaults(&request_schema(ApiKey::DescribeGroups as i16).expect("declared").body, version);
    body.set("groups", Value::Array(Some(vec![Value::str(group)])));
    Ok((part(session, header, ApiKey::DescribeGroups, version, &body, Route::Group(group.to_string()))?, version))
}

pub fn main_group_of(version: i16, answer: &[u8]) -> Result<MainGroup, String> {
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

/// The groups of an OffsetFetch answer (one below v8), with their
/// committed offsets.
pub fn decode_offsets(version: i16, answer: &[u8]) -> Result<Vec<GroupOffsets>, String> {
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
