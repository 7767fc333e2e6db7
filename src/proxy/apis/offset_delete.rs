//! OffsetDelete. Pass-through: to the group's coordinator. On remapped
//! topics, the group's own part goes with a DescribeGroups of the group;
//! derived partitions are then deleted only where Kafka would delete the
//! group's own (derived groups have no members, so Kafka would delete
//! theirs unasked).

use std::collections::BTreeMap;

use log::warn;

use super::derived::{codes_response, derived_ks, describe_group_part, filtered, main_group_of, part, partition_codes, PartitionCodes, Placements, remapped_placements, ReservedIds, Target, OFFSET_DELETE};
use super::Request;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::fields::{members, offset_delete_request as delete_req};
use crate::kafka::message::request_schema;
use crate::proxy::plan::{Finish, Plan, Step};
use crate::proxy::route::Route;
use crate::remap::groups::{derived_group, DeleteVerdict, GROUP_SUBSCRIBED_TO_TOPIC};


/// To the coordinator of `group_id`, as it came.
pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    super::groups::to_coordinator(r)
}


/// OffsetDelete touching remapped topics. The group's own part goes to the
/// broker with a DescribeGroups of the group; derived partitions are then
/// deleted only where Kafka would delete the group's own (derived groups
/// have no members, so Kafka would delete theirs unasked).
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
    let version = header.api_version;
    let (placements, group) = remapped_placements(ctx, &OFFSET_DELETE, req)?;
    let ks = derived_ks(&placements);
    let mut stage1 = Vec::new();
    let (main, main_count) = filtered(req, &OFFSET_DELETE.request, &placements, &|t| if let Target::Main(p) = t { Some(*p) } else { None });
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
        codes_response(&OFFSET_DELETE, version, corr, top, placements, &|name, target| match target {
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
                partition_codes(&OFFSET_DELETE, version, &answers.next().ok_or("no answer")?)?
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
            let ts = members(schema, delete_req::TOPICS);
            let ps = members(ts, delete_req::topics::PARTITIONS);
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
                                    e.write(delete_req::topics::partitions::PARTITION_INDEX, *p);
                                    Some(Value::Struct(e))
                                }
                                _ => None,
                            })
                            .collect();
                        (!entries.is_empty()).then(|| {
                            let mut t = codec::with_defaults(ts, version);
                            t.write(delete_req::topics::NAME, name.clone());
                            t.write(delete_req::topics::PARTITIONS, entries);
                            Value::Struct(t)
                        })
                    })
                    .collect();
                if topics.is_empty() {
                    continue;
                }
                let name = derived_group(&group, k);
                let mut body = codec::with_defaults(schema, version);
                body.write(delete_req::GROUP_ID, name.clone());
                body.write(delete_req::TOPICS, topics);
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
                        let (_, derived) = partition_codes(&OFFSET_DELETE, version, answer)?;
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
