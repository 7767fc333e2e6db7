//! CreateTopics. Pass-through: to the controller. A topic under a rule is
//! created with its physical partition count and answered with its virtual
//! one; counts the rule does not allow, manual assignments and compacted
//! topics are refused, each with Kafka's error for it.

use std::time::Duration;

use log::warn;

use super::common::answer_or_defaults;
use super::Request;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::message::{encode_response, response_schema};
use crate::proxy::plan::{single_request, Plan};
use crate::proxy::route::Route;
use crate::proxy::ProxyContext;

pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    super::admin::to_controller(r)
}

/// CreateTopics: a topic under a rule with V > P is created with P
/// physical partitions when the client asks for V (or the broker default,
/// -1); any other count is refused, naming the rule. Under the default rule
/// other counts pass through (such topics are not remapped), except exactly
/// P, which would silently be remapped. A topic that would be remapped and
/// asks for `cleanup.policy` compact is refused (POLICY_VIOLATION).
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &mut *r.session);
    if !ctx.mapper.remaps_anything() {
        return None;
    }
    let version = header.api_version;
    let mut refused: Vec<(usize, i16, String)> = Vec::new();
    let mut created_as: Vec<(String, i32)> = Vec::new();
    let mut out = req.clone();
    let mut changed = false;
    let mut kept = Vec::new();
    for (i, t) in req.structs("topics").enumerate() {
        let name = t.str("name").unwrap_or_default().to_string();
        let mut t = t.clone();
        let rule = if name.starts_with("__") { None } else { ctx.mapper.rule_for(&name) };
        if let Some(rule) = rule.filter(|r| !r.is_passthrough()) {
            let (v, p) = (rule.virtual_partitions as i32, rule.physical_partitions as i32);
            let asked = t.i32("num_partitions").unwrap_or(-1);
            let default_rule = matches!(rule.source, crate::config::RuleSource::Default);
            if asked == v || (asked == -1 && !default_rule) {
                let policy = t.structs("configs").filter(|c| c.str("name") == Some("cleanup.policy")).last().map(|c| c.str("value"));
                if let Some(value) = policy {
                    if crate::remap::mapping::CleanupPolicy::from_value(value) == crate::remap::mapping::CleanupPolicy::Compact {
                        // Kafka answers a topic its CreateTopicPolicy rejects with POLICY_VIOLATION.
                        refused.push((
                            i,
                            error::POLICY_VIOLATION,
                            format!(
                                "Topic {name} falls under {} and asks for cleanup.policy={}: compacted topics cannot be \
                                 remapped, because compaction is per physical partition and would erase one virtual \
                                 partition's records with a sibling's of the same key",
                                rule.name(),
                                value.unwrap_or_default()
                            ),
                        ));
                        changed = true;
                        continue;
                    }
                }
                if !t.array("assignments").is_empty() {
                    refused.push((i, error::INVALID_REQUEST, format!("Topic {name} falls under {}: manual replica assignments are not supported for remapped topics", rule.name())));
                    changed = true;
                    continue;
                }
                t.set("num_partitions", Value::Int32(p));
                created_as.push((name.clone(), v));
                changed = true;
            } else if !default_rule || asked == p {
                refused.push((
                    i,
                    error::INVALID_PARTITIONS,
                    format!(
                        "Topic {name} falls under {} ({v} virtual on {p} physical partitions): create it with {v} partitions, not {asked}",
                        rule.name()
                    ),
                ));
                changed = true;
                continue;
            }
        }
        kept.push(Value::Struct(t));
    }
    if !changed {
        return None;
    }
    for (_, _, msg) in &refused {
        warn!("CreateTopics from {}: {msg}", session.peer());
    }
    out.set("topics", Value::Array(Some(kept)));
    let names: Vec<String> = req.structs("topics").map(|t| t.str("name").unwrap_or_default().to_string()).collect();
    let finish = move |_ctx: &ProxyContext, version: i16, corr: i32, answer: Option<&[u8]>| -> Result<Vec<u8>, String> {
        let schema = response_schema(ApiKey::CreateTopics as i16).expect("declared");
        let resp = answer_or_defaults(ApiKey::CreateTopics, version, answer)?;
        let ts = codec::element_schema(&schema.body, "topics");
        let mut results = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some((_, code, msg)) = refused.iter().find(|(j, _, _)| *j == i) {
                let mut t = codec::with_defaults(ts, version);
                t.set("name", Value::str(name.clone()));
                t.set("error_code", Value::Int16(*code));
                if t.has_field("error_message") && ts.fields[ts.index_of("error_message").unwrap()].versions.contains(version) {
                    t.set("error_message", Value::str(msg.clone()));
                }
                if ts.index_of("num_partitions").is_some_and(|j| ts.fields[j].versions.contains(version)) {
                    t.set("num_partitions", Value::Int32(-1));
                    t.set("replication_factor", Value::Int16(-1));
                    t.set("configs", Value::Array(None));
                }
                results.push(Value::Struct(t));
            } else if let Some(mut t) = resp.structs("topics").find(|t| t.str("name") == Some(name)).cloned() {
                if let Some((_, v)) = created_as.iter().find(|(n, _)| n == name) {
                    if t.i16("error_code") == Some(error::NONE) && t.i32("num_partitions").is_some() {
                        t.set("num_partitions", Value::Int32(*v));
                    }
                }
                results.push(Value::Struct(t));
            }
        }
        let mut body = resp.clone();
        body.set("topics", Value::Array(Some(results)));
        encode_response(ApiKey::CreateTopics as i16, version, corr, &[], &body).map_err(|e| e.to_string())
    };
    let wait = Duration::from_millis(req.i32("timeout_ms").unwrap_or(0).max(0) as u64);
    let body = (!out.array("topics").is_empty()).then_some(&out);
    Some(single_request(
        ctx,
        session,
        header.client_id.as_deref(),
        ApiKey::CreateTopics as i16,
        version,
        header.correlation_id,
        body,
        Route::Controller,
        wait,
        Box::new(finish),
    ))
}
