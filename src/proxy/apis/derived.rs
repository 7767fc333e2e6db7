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
use crate::kafka::fields::kinds::Str;
use crate::kafka::fields::{describe_groups_request, describe_groups_response, members, offset_fetch_response, Field};
use crate::kafka::fields::{offset_commit_request, offset_commit_response, offset_delete_request, offset_delete_response};
use crate::kafka::fields::{txn_offset_commit_request, txn_offset_commit_response};
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{decode_response, encode_request, encode_response, request_schema, response_schema};
use crate::kafka::schema::StructSchema;
use crate::proxy::plan::{CorrelationIds, Part};
use crate::proxy::route::Route;
use crate::proxy::session::Session;
use crate::proxy::ProxyContext;
use crate::remap::groups::MainGroup;
use crate::remap::mapping::{Decision, VirtualPartition};
use crate::remap::offset_fetch::{Committed, GroupOffsets};
use crate::remap::split::Shape;

/// The keys the shared code below reads and writes of OffsetCommit,
/// OffsetDelete and TxnOffsetCommit: the request's group and topics →
/// partitions, the answer's topics → partitions and error codes.
pub struct OffsetApi {
    pub api: ApiKey,
    pub group_id: Field<Str>,
    pub request: Shape,
    pub response: Shape,
    pub entry_error: Field<i16>,
    /// The answer's top-level error (OffsetDelete only).
    pub top_error: Option<Field<i16>>,
}

macro_rules! topics_shape {
    ($message:ident) => {{
        use $message::topics as t;
        Shape::of($message::TOPICS, t::NAME, t::PARTITIONS, t::partitions::PARTITION_INDEX)
    }};
}

pub const OFFSET_COMMIT: OffsetApi = OffsetApi {
    api: ApiKey::OffsetCommit,
    group_id: offset_commit_request::GROUP_ID,
    request: topics_shape!(offset_commit_request),
    response: topics_shape!(offset_commit_response),
    entry_error: offset_commit_response::topics::partitions::ERROR_CODE,
    top_error: None,
};

pub const OFFSET_DELETE: OffsetApi = OffsetApi {
    api: ApiKey::OffsetDelete,
    group_id: offset_delete_request::GROUP_ID,
    request: topics_shape!(offset_delete_request),
    response: topics_shape!(offset_delete_response),
    entry_error: offset_delete_response::topics::partitions::ERROR_CODE,
    top_error: Some(offset_delete_response::ERROR_CODE),
};

pub const TXN_OFFSET_COMMIT: OffsetApi = OffsetApi {
    api: ApiKey::TxnOffsetCommit,
    group_id: txn_offset_commit_request::GROUP_ID,
    request: topics_shape!(txn_offset_commit_request),
    response: topics_shape!(txn_offset_commit_response),
    entry_error: txn_offset_commit_response::topics::partitions::ERROR_CODE,
    top_error: None,
};

/// OffsetFetch answers below v8 list topics at the top; v8+ lists them per
/// group, laid out alike (the same keys read both).
pub const OFFSET_FETCH_TOPICS: Shape = topics_shape!(offset_fetch_response);
pub const OFFSET_FETCH_GROUP_TOPICS: Shape = {
    use offset_fetch_response::groups::topics as t;
    Shape::of(offset_fetch_response::groups::TOPICS, t::NAME, t::PARTITIONS, t::partitions::PARTITION_INDEX)
};

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

/// A copy of `req` keeping, per topic, only the partition entries `keep`
/// selects (rewritten by it); topics left empty are dropped.
pub fn filtered<'a>(
    req: &Struct<'a>,
    shape: &Shape,
    placements: &Placements,
    keep: &dyn Fn(&Target) -> Option<i32>,
) -> (Struct<'a>, usize) {
    let mut out = req.clone();
    let mut count = 0;
    let mut topics = Vec::new();
    for (t, (_, parts)) in req.iter(shape.topics).zip(placements) {
        let mut t = t.clone();
        let entries: Vec<Value<'a>> = t
            .iter(shape.partitions)
            .zip(parts)
            .filter_map(|(e, (_, target))| {
                let p = keep(target)?;
                let mut e = e.clone();
                e.write(shape.index, p);
                Some(Value::Struct(e))
            })
            .collect();
        if !entries.is_empty() {
            count += entries.len();
            t.write(shape.partitions, entries);
            topics.push(Value::Struct(t));
        }
    }
    out.write(shape.topics, topics);
    (out, count)
}

pub fn part(session: &mut Session, header: &RequestHeader<'_>, api: ApiKey, version: i16, body: &Struct<'_>, route: Route) -> Result<Part, String> {
    Part::build(session, header.client_id.as_deref(), api as i16, version, body, route, Duration::ZERO)
}

/// Error code per (topic, physical partition) from an OffsetCommit or
/// OffsetDelete answer.
pub fn partition_codes(keys: &OffsetApi, version: i16, answer: &[u8]) -> Result<(i16, PartitionCodes), String> {
    let resp = decode_response(keys.api as i16, version, answer)?.body;
    let shape = &keys.response;
    let mut codes = BTreeMap::new();
    for t in resp.iter(shape.topics) {
        for p in t.iter(shape.partitions) {
            if let (Some(name), Some(i), Some(c)) = (t.read(shape.name), p.read(shape.index), p.read(keys.entry_error)) {
                codes.insert((name.to_string(), i), c);
            }
        }
    }
    let top = keys.top_error.and_then(|f| resp.read(f)).unwrap_or(0);
    Ok((top, codes))
}

/// Build an OffsetCommit/OffsetDelete response: one error code per client
/// partition, looked up where it went.
pub fn codes_response(
    keys: &OffsetApi,
    version: i16,
    correlation_id: i32,
    top_error: i16,
    placements: &Placements,
    code_of: &dyn Fn(&str, &Target) -> i16,
) -> Result<Vec<u8>, String> {
    let schema = &response_schema(keys.api as i16).expect("declared").body;
    let mut body = codec::with_defaults(schema, version);
    if let Some(f) = keys.top_error {
        body.write_in(f, top_error, version);
    }
    let topics = placements.iter().map(|(name, parts)| (name.as_str(), parts.as_slice()));
    let topics = topics_array(schema, &keys.response, version, topics, &|name, e, (v, target)| {
        e.write(keys.response.index, *v);
        e.write(keys.entry_error, code_of(name, target));
    });
    body.write(keys.response.topics, topics);
    encode_response(keys.api as i16, version, correlation_id, &[], &body).map_err(|e| e.to_string())
}

/// The topics array (`shape.topics`) of a struct of schema `parent`: one
/// topic per `(name, items)`, one partition entry per item, filled in by
/// `fill(topic, entry, item)`.
pub fn topics_array<'i, T: 'i>(
    parent: &'static StructSchema,
    shape: &Shape,
    version: i16,
    topics: impl IntoIterator<Item = (&'i str, &'i [T])>,
    fill: &dyn Fn(&str, &mut Struct<'static>, &T),
) -> Vec<Value<'static>> {
    let ts = members(parent, shape.topics);
    let ps = members(ts, shape.partitions);
    topics
        .into_iter()
        .map(|(name, items)| {
            let mut t = codec::with_defaults(ts, version);
            t.write(shape.name, name.to_string());
            let entries: Vec<Value> = items
                .iter()
                .map(|item| {
                    let mut e = codec::with_defaults(ps, version);
                    fill(name, &mut e, item);
                    Value::Struct(e)
                })
                .collect();
            t.write(shape.partitions, entries);
            Value::Struct(t)
        })
        .collect()
}

/// Where each partition of a group request goes, and its group; `None`
/// when it names no remapped topic (it is forwarded as it came).
pub fn remapped_placements(ctx: &ProxyContext, keys: &OffsetApi, req: &Struct<'_>) -> Option<(Placements, String)> {
    let (placements, remapped) = placements_of(ctx, &keys.request, req);
    remapped.then(|| (placements, req.read(keys.group_id).unwrap_or_default().to_string()))
}

pub fn placements_of(ctx: &ProxyContext, shape: &Shape, req: &Struct<'_>) -> (Placements, bool) {
    let mut remapped = false;
    let placements = req
        .iter(shape.topics)
        .map(|t| {
            let name = t.read(shape.name).unwrap_or_default().to_string();
            let parts = t
                .iter(shape.partitions)
                .map(|e| {
                    let v = e.read(shape.index).unwrap_or(-1);
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
    body.write(describe_groups_request::GROUPS, vec![Value::str(group)]);
    Ok((part(session, header, ApiKey::DescribeGroups, version, &body, Route::Group(group.to_string()))?, version))
}

pub fn main_group_of(version: i16, answer: &[u8]) -> Result<MainGroup, String> {
    use describe_groups_response::{groups, GROUPS};
    let resp = decode_response(ApiKey::DescribeGroups as i16, version, answer)?.body;
    let g = resp.iter(GROUPS).next().ok_or("DescribeGroups answered no group")?;
    Ok(MainGroup {
        error_code: g.read(groups::ERROR_CODE).unwrap_or(error::NONE),
        state: g.read(groups::GROUP_STATE).unwrap_or_default().to_string(),
        protocol_type: g.read(groups::PROTOCOL_TYPE).unwrap_or_default().to_string(),
        member_metadata: g.iter(groups::MEMBERS).map(|m| m.read(groups::members::MEMBER_METADATA).unwrap_or_default().to_vec()).collect(),
    })
}

/// The groups of an OffsetFetch answer (one below v8), with their
/// committed offsets.
pub fn decode_offsets(version: i16, answer: &[u8]) -> Result<Vec<GroupOffsets>, String> {
    use offset_fetch_response::{groups, topics::partitions as entry};
    let resp = decode_response(ApiKey::OffsetFetch as i16, version, answer)?.body;
    let read_topics = |s: &Struct<'_>, shape: &Shape| -> Vec<(String, Vec<(i32, Committed)>)> {
        s.iter(shape.topics)
            .map(|t| {
                let parts = t
                    .iter(shape.partitions)
                    .map(|p| {
                        (
                            p.read(shape.index).unwrap_or(-1),
                            Committed {
                                offset: p.read(entry::COMMITTED_OFFSET).unwrap_or(-1),
                                leader_epoch: p.read(entry::COMMITTED_LEADER_EPOCH).unwrap_or(-1),
                                metadata: p.read(entry::METADATA).map(str::to_string),
                                error_code: p.read(entry::ERROR_CODE).unwrap_or(0),
                            },
                        )
                    })
                    .collect();
                (t.read(shape.name).unwrap_or_default().to_string(), parts)
            })
            .collect()
    };
    if version >= 8 {
        Ok(resp
            .iter(offset_fetch_response::GROUPS)
            .map(|g| GroupOffsets { error_code: g.read(groups::ERROR_CODE).unwrap_or(0), topics: read_topics(g, &OFFSET_FETCH_GROUP_TOPICS) })
            .collect())
    } else {
        let error_code = resp.read(offset_fetch_response::ERROR_CODE).unwrap_or(0);
        Ok(vec![GroupOffsets { error_code, topics: read_topics(&resp, &OFFSET_FETCH_TOPICS) }])
    }
}
