//! OffsetFetch. Pass-through: to the coordinator of the (first) group.
//! On remapped topics (or all topics of a group while any rule remaps),
//! each group is asked for its own offsets and each derived group for its
//! k ≥ 1 partitions', and the answers are merged (`remap::offset_fetch`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::derived::{decode_offsets, part, place, set_if, topics_array, Target};
use super::passthrough::{forward as forward_as_is, group_route};
use super::Request;
use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::message::{encode_response, request_schema, response_schema};
use crate::proxy::plan::{Finish, Plan};
use crate::proxy::route::Route;
use crate::proxy::ProxyContext;
use crate::remap::groups::derived_group;
use crate::remap::offset_fetch::{self, Committed, GroupOffsets, Query, TopicPartitions};


/// To the coordinator of the group (v8+: the first group), as it came.
pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    let req = r.body;
    let group = req.str("group_id").or_else(|| req.structs("groups").next().and_then(|g| g.str("group_id")));
    forward_as_is(r, group_route(group), Duration::ZERO, Finish::AsIs)
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
    let topics_value = |parent: &'static StructSchemaRef, topics: &[(String, Vec<(i32, Committed)>)]| -> Value<'static> {
        let topics = topics.iter().map(|(name, parts)| (name.as_str(), parts.as_slice()));
        Value::Array(Some(topics_array(parent, version, topics, &|_, e, (v, c)| {
            e.set("partition_index", Value::Int32(*v));
            e.set("committed_offset", Value::Int64(c.offset));
            set_if(e, "committed_leader_epoch", Value::Int32(c.leader_epoch), version);
            e.set("metadata", Value::String(c.metadata.clone().map(std::borrow::Cow::Owned)));
            e.set("error_code", Value::Int16(c.error_code));
        })))
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
