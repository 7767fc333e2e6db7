//! OffsetFetch. Pass-through: to the coordinator of the (first) group.
//! On remapped topics (or all topics of a group while any rule remaps),
//! each group is asked for its own offsets and each derived group for its
//! k ≥ 1 partitions', and the answers are merged (`remap::offset_fetch`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::derived::{decode_offsets, part, place, topics_array, Target, OFFSET_FETCH_GROUP_TOPICS, OFFSET_FETCH_TOPICS};
use super::passthrough::{forward as forward_as_is, group_route};
use super::Request;
use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::kinds::{Array, Child};
use crate::kafka::fields::{members, offset_fetch_request as request, offset_fetch_response as response, Field};
use crate::kafka::message::{encode_response, request_schema, response_schema};
use crate::proxy::plan::{Finish, Plan};
use crate::proxy::route::Route;
use crate::proxy::ProxyContext;
use crate::remap::groups::derived_group;
use crate::remap::offset_fetch::{self, Committed, GroupOffsets, Query, TopicPartitions};
use crate::remap::split::Shape;


/// To the coordinator of the group (v8+: the first group), as it came.
pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    let req = r.body;
    let group = req.read(request::GROUP_ID).or_else(|| req.iter(request::GROUPS).next().and_then(|g| g.read(request::groups::GROUP_ID)));
    forward_as_is(r, group_route(group), Duration::ZERO, Finish::AsIs)
}


/// The groups of an OffsetFetch request, whatever its version: (group,
/// topics or None for all). v8+ lists topics per group, laid out as the
/// top-level ones before (the same keys read both).
fn offset_fetch_groups(req: &Struct<'_>) -> Vec<(String, TopicPartitions)> {
    use request::topics;
    let topics_of = |s: &Struct<'_>, field: Field<Array<Child>>| -> Option<Vec<(String, Vec<i32>)>> {
        let ts = s.read(field)?;
        Some(
            ts.iter()
                .filter_map(Value::as_struct)
                .map(|t| {
                    let parts = t.items(topics::PARTITION_INDEXES).iter().filter_map(|v| if let Value::Int32(i) = v { Some(*i) } else { None }).collect();
                    (t.read(topics::NAME).unwrap_or_default().to_string(), parts)
                })
                .collect(),
        )
    };
    if let Some(g) = req.read(request::GROUP_ID) {
        return vec![(g.to_string(), topics_of(req, request::TOPICS))];
    }
    req.iter(request::GROUPS).map(|g| (g.read(request::groups::GROUP_ID).unwrap_or_default().to_string(), topics_of(g, request::groups::TOPICS))).collect()
}

/// OffsetFetch touching remapped topics (or asking for all topics of a
/// group while remapping is configured).
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
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
                            t.write(request::topics::NAME, name.clone());
                            t.write(request::topics::PARTITION_INDEXES, ps.iter().map(|p| Value::Int32(*p)).collect::<Vec<_>>());
                            Value::Struct(t.into_owned())
                        })
                        .collect(),
                )),
            }
        };
        if version >= 8 {
            use request::groups;
            let gs = members(schema, request::GROUPS);
            let mut g = codec::with_defaults(gs, version);
            g.write(groups::GROUP_ID, group.clone());
            if *k == 0 {
                if let Some(orig) = req.iter(request::GROUPS).nth(*gi) {
                    if let Some(m) = orig.read(groups::MEMBER_ID) {
                        g.write_in(groups::MEMBER_ID, m, version);
                    }
                    if let Some(e) = orig.read(groups::MEMBER_EPOCH) {
                        g.write_in(groups::MEMBER_EPOCH, e, version);
                    }
                }
            } else {
                g.put_in(groups::MEMBER_ID, Value::String(None), version);
                g.write_in(groups::MEMBER_EPOCH, -1, version);
            }
            g.put(groups::TOPICS, topic_values(members(gs, groups::TOPICS)));
            body.write(request::GROUPS, vec![Value::Struct(g)]);
        } else {
            body.write(request::GROUP_ID, group.clone());
            body.put(request::TOPICS, topic_values(members(schema, request::TOPICS)));
        }
        if let Some(b) = req.read(request::REQUIRE_STABLE) {
            body.write_in(request::REQUIRE_STABLE, b, version);
        }
        match part(session, header, ApiKey::OffsetFetch, version, &body, Route::Group(group)) {
            Ok(p) => parts.push(p),
            Err(e) => return Some(Plan::Close(e)),
        }
    }
    let names: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
    let queries: Vec<Query> = queries.iter().map(|&(group, k, _)| Query { group, k }).collect();
    let finish = move |ctx: &ProxyContext, corr: i32, answers: Vec<Vec<u8>>| -> Result<Vec<u8>, String> {
        let decoded = answers
            .iter()
            .map(|answer| Ok(decode_offsets(version, answer)?.into_iter().next()))
            .collect::<Result<Vec<_>, String>>()?;
        let decide = |topic: &str| ctx.mapper.decide(topic, &ctx.cluster.read());
        let refusal = |topic: &str, v: i32| match place(ctx, topic, v, &mut false) {
            Target::Local(code) => Some(code),
            _ => None,
        };
        let per_group = offset_fetch::merge(&groups, &queries, decoded, &decide, &refusal);
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
    // v8+ groups list their topics as the top-level ones below v8.
    use response::topics::partitions as entry;
    let topics_value = |parent: &'static StructSchemaRef, shape: &Shape, topics: &[(String, Vec<(i32, Committed)>)]| -> Vec<Value<'static>> {
        let topics = topics.iter().map(|(name, parts)| (name.as_str(), parts.as_slice()));
        topics_array(parent, shape, version, topics, &|_, e, (v, c)| {
            e.write(entry::PARTITION_INDEX, *v);
            e.write(entry::COMMITTED_OFFSET, c.offset);
            e.write_in(entry::COMMITTED_LEADER_EPOCH, c.leader_epoch, version);
            e.put(entry::METADATA, Value::String(c.metadata.clone().map(std::borrow::Cow::Owned)));
            e.write(entry::ERROR_CODE, c.error_code);
        })
    };
    if version >= 8 {
        use response::groups;
        let gs = members(schema, response::GROUPS);
        let gv: Vec<Value> = names
            .iter()
            .zip(groups)
            .map(|(name, g)| {
                let mut s = codec::with_defaults(gs, version);
                s.write(groups::GROUP_ID, name.clone());
                s.write(groups::ERROR_CODE, g.error_code);
                s.write(groups::TOPICS, topics_value(gs, &OFFSET_FETCH_GROUP_TOPICS, &g.topics));
                Value::Struct(s)
            })
            .collect();
        body.write(response::GROUPS, gv);
    } else {
        let g = groups.first().ok_or("no group")?;
        body.write(response::TOPICS, topics_value(schema, &OFFSET_FETCH_TOPICS, &g.topics));
        body.write_in(response::ERROR_CODE, g.error_code, version);
    }
    encode_response(ApiKey::OffsetFetch as i16, version, corr, &[], &body).map_err(|e| e.to_string())
}
