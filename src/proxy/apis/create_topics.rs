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
use crate::kafka::fields::create_topics_request::{self as request, topics as req_topic};
use crate::kafka::fields::create_topics_response::{self as response, topics as resp_topic};
use crate::kafka::fields::members;
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
    for (i, t) in req.iter(request::TOPICS).enumerate() {
        let name = t.read(req_topic::NAME).unwrap_or_default().to_string();
        let mut t = t.clone();
        let rule = if name.starts_with("__") { None } else { ctx.mapper.rule_for(&name) };
        if let Some(rule) = rule.filter(|r| !r.is_passthrough()) {
            let (v, p) = (rule.virtual_partitions as i32, rule.physical_partitions as i32);
            let asked = t.read(req_topic::NUM_PARTITIONS).unwrap_or(-1);
            let default_rule = matches!(rule.source, crate::config::RuleSource::Default);
            if asked == v || (asked == -1 && !default_rule) {
                let policy = t.iter(req_topic::CONFIGS).filter(|c| c.read(req_topic::configs::NAME) == Some("cleanup.policy")).last().map(|c| c.read(req_topic::configs::VALUE));
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
                if !t.items(req_topic::ASSIGNMENTS).is_empty() {
                    refused.push((i, error::INVALID_REQUEST, format!("Topic {name} falls under {}: manual replica assignments are not supported for remapped topics", rule.name())));
                    changed = true;
                    continue;
                }
                t.write(req_topic::NUM_PARTITIONS, p);
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
    out.write(request::TOPICS, kept);
    let names: Vec<String> = req.iter(request::TOPICS).map(|t| t.read(req_topic::NAME).unwrap_or_default().to_string()).collect();
    let finish = move |_ctx: &ProxyContext, version: i16, corr: i32, answer: Option<&[u8]>| -> Result<Vec<u8>, String> {
        let schema = response_schema(ApiKey::CreateTopics as i16).expect("declared");
        let resp = answer_or_defaults(ApiKey::CreateTopics, version, answer)?;
        let ts = members(&schema.body, response::TOPICS);
        let mut results = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if let Some((_, code, msg)) = refused.iter().find(|(j, _, _)| *j == i) {
                let mut t = codec::with_defaults(ts, version);
                t.write(resp_topic::NAME, name.clone());
                t.write(resp_topic::ERROR_CODE, *code);
                t.write_in(resp_topic::ERROR_MESSAGE, msg.clone(), version);
                // v5+ answers these, as Kafka does for a refused topic.
                t.write_in(resp_topic::NUM_PARTITIONS, -1, version);
                t.write_in(resp_topic::REPLICATION_FACTOR, -1, version);
                t.put_in(resp_topic::CONFIGS, Value::Array(None), version);
                results.push(Value::Struct(t));
            } else if let Some(mut t) = resp.iter(response::TOPICS).find(|t| t.read(resp_topic::NAME) == Some(name)).cloned() {
                if let Some((_, v)) = created_as.iter().find(|(n, _)| n == name) {
                    if t.read(resp_topic::ERROR_CODE) == Some(error::NONE) && t.read(resp_topic::NUM_PARTITIONS).is_some() {
                        t.write(resp_topic::NUM_PARTITIONS, *v);
                    }
                }
                results.push(Value::Struct(t));
            }
        }
        let mut body = resp.clone();
        body.write(response::TOPICS, results);
        encode_response(ApiKey::CreateTopics as i16, version, corr, &[], &body).map_err(|e| e.to_string())
    };
    let wait = Duration::from_millis(req.read(request::TIMEOUT_MS).unwrap_or(0).max(0) as u64);
    let body = (!out.items(request::TOPICS).is_empty()).then_some(&out);
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
