//! Produce. Pass-through: the client's frame to the leader of its first
//! partition, leader hints (v10+) pointing at the proxy. Remapped topics:
//! split by physical partition into rounds (`split::split_rounds`), each
//! k ≥ 1 batch tagged with its virtual partition and written under a
//! derived producer id (`remap::produce`); the session holds such requests
//! and merges a burst's into few (`session::hold`). The rounds' answers
//! become the client's in [`answer`]: merged back under the virtual
//! partitions, too-large entries of tagged batches explained, leader hints
//! pointing at the proxy.

use std::cell::Cell;
use std::time::Duration;

use log::warn;

use super::passthrough::{endpoints_rewrite, first_partition, forward_expecting};
use super::split::{merge_answers, plan_rounds, split_rounds, Rounds};
use super::Request;
use crate::cluster::BrokerAddr;
use crate::kafka::api::{ApiKey, ErrorCode};
use crate::kafka::codec::Struct;
use crate::kafka::fields::produce_request as request;
use crate::kafka::fields::produce_response::{self as response, responses as answer_topic};
use crate::kafka::fields::produce_response::responses::partition_responses as answer_entry;
use crate::kafka::message::encode_response;
use crate::proxy::lookups::{Lookup, Needs};
use crate::proxy::plan::Plan;
use crate::proxy::session::extra_wait;
use crate::proxy::ProxyContext;
use crate::remap::mapping::VirtualPartition;
use crate::remap::split::{self, Placement};

pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    let route = first_partition(r.body, &split::PRODUCE_REQUEST);
    let acks = r.body.read(request::ACKS).unwrap_or(-1);
    let wait = extra_wait(r.body.read(request::TIMEOUT_MS).unwrap_or(0));
    forward_expecting(r, route, wait, acks != 0, endpoints_rewrite(r.version() >= 10))
}

/// Derived producer ids through the producer-id topic the instances share,
/// as far as this process has read it; the rest is asked for in `needs`
/// (written or read on a look-up thread), and the request planned again.
struct BrokerProducerIds<'c, 'n> {
    ctx: &'c ProxyContext,
    needs: &'c mut Needs<'n>,
    /// Set once anything was asked for.
    looking_up: &'c Cell<bool>,
}

/// What a produce entry gets while its producer ids are looked up: never
/// seen by the client, since the plan is made again once they are known.
const LOOKING_UP: &str = "producer ids are being looked up";

impl BrokerProducerIds<'_, '_> {
    fn log(&self) -> Result<&crate::upstream::producer_log::ProducerLog, String> {
        self.ctx.producer_log.as_deref().ok_or_else(|| "no producer-id topic (no rule remaps)".to_string())
    }
}

impl crate::remap::produce::ProducerIdSource for BrokerProducerIds<'_, '_> {
    fn sequence_base(&mut self, derived: i64, topic: &str, physical: i32, first_seen: i32) -> Result<i32, String> {
        if let Some(base) = self.log()?.known_sequence_base(derived, topic, physical) {
            return Ok(base);
        }
        let lookup = Lookup::SequenceBase { derived, topic: topic.to_string(), partition: physical, first_seen };
        self.needs.ask(lookup)?;
        self.looking_up.set(true);
        Err(LOOKING_UP.into())
    }

    fn derived(&mut self, client: (i64, i16), k: i32) -> Result<(i64, i16), String> {
        if let Some(ids) = self.log()?.known_derived(client, k) {
            return Ok(ids);
        }
        self.needs.ask(Lookup::DerivedProducerId { client, k })?;
        self.looking_up.set(true);
        Err(LOOKING_UP.into())
    }
}

/// An entry the proxy tagged (k >= 1, or a k = 0 batch re-tagged): when
/// the broker finds it too large, the tag may be why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub topic: String,
    pub virtual_partition: i32,
    pub physical_count: i32,
}

/// Produce naming remapped topics.
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req) = (r.ctx, r.header, r.body);
    let (session, needs) = (&mut *r.session, &mut *r.needs);
    let acks = req.read(request::ACKS).unwrap_or(-1);
    let wait = Duration::from_millis(req.read(request::TIMEOUT_MS).unwrap_or(0).max(0) as u64);
    let mut stats = crate::remap::produce::TagStats::default();
    let looking_up = Cell::new(false);
    let mut ids = BrokerProducerIds { ctx, needs, looking_up: &looking_up };
    let mut tagged: Vec<Tagged> = Vec::new();
    let split = split_rounds(
        ctx,
        session,
        header,
        req,
        ApiKey::Produce,
        &split::PRODUCE_REQUEST,
        wait,
        &mut |topic, entry, m, v, p, k| {
            let before = stats.batches;
            let result = crate::remap::produce::rewrite_entry(topic, entry, &m, v, p, k, &mut ids, &mut stats);
            if stats.batches > before {
                tagged.push(Tagged { topic: topic.to_string(), virtual_partition: v.0, physical_count: m.physical_count });
            }
            result
        },
        &looking_up,
    );
    if looking_up.get() {
        return split.map(|s| s.err().unwrap_or(Plan::AfterLookups));
    }
    let m = &ctx.shared.metrics;
    m.batches_tagged_total.fetch_add(stats.batches, std::sync::atomic::Ordering::Relaxed);
    m.records_tagged_total.fetch_add(stats.records, std::sync::atomic::Ordering::Relaxed);
    // Each refused entry was logged once by `split_rounds` (its message
    // names the topic, virtual partition and both CRCs).
    m.corrupt_batches_total.fetch_add(stats.corrupt, std::sync::atomic::Ordering::Relaxed);
    let Rounds { parts, placements } = match split? {
        Ok(rounds) => rounds,
        Err(plan) => return Some(plan),
    };
    let answer = move |ctx: &ProxyContext, version, correlation_id, answers| {
        answer(&ctx.settings.advertised, &placements, &tagged, version, correlation_id, answers)
    };
    Some(plan_rounds(ctx, header, parts, acks != 0, Box::new(answer)))
}

/// The client's answer to a remapped Produce, from its rounds' answers (in
/// round order; none when every entry was refused here): merged back under
/// the client's partitions (`placements`), too-large entries of `tagged`
/// batches explained, leader hints (KIP-951) pointing at the proxy.
pub fn answer(
    advertised: &BrokerAddr,
    placements: &[(String, Vec<Placement>)],
    tagged: &[Tagged],
    version: i16,
    correlation_id: i32,
    answers: Vec<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut merged = merge_answers(ApiKey::Produce, version, &split::PRODUCE_RESPONSE, placements, &answers)?;
    for t in merged.iter_mut(response::RESPONSES) {
        let topic = t.read(answer_topic::NAME).unwrap_or_default().to_string();
        for entry in t.iter_mut(answer_topic::PARTITION_RESPONSES) {
            let partition = entry.read(answer_entry::INDEX).unwrap_or(-1);
            explain_too_large(tagged, &topic, partition, entry);
        }
    }
    crate::remap::addresses::rewrite_brokers(&mut merged, advertised);
    encode_response(ApiKey::Produce as i16, version, correlation_id, &[], &merged).map_err(|e| e.to_string())
}

/// A tagged entry the broker refused as too large gets a message saying
/// that the tag adds bytes to each record (Produce v8+ has the field),
/// logged once per topic: the same records fit on untagged partitions.
fn explain_too_large(tagged: &[Tagged], topic: &str, v: i32, entry: &mut Struct<'_>) {
    use std::sync::{Mutex, OnceLock};
    static LOGGED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let code = ErrorCode::from(entry.read(answer_entry::ERROR_CODE).unwrap_or(0));
    if code != ErrorCode::MESSAGE_TOO_LARGE && code != ErrorCode::RECORD_LIST_TOO_LARGE {
        return;
    }
    let Some(t) = tagged.iter().find(|t| t.topic == topic && t.virtual_partition == v) else { return };
    let message = crate::remap::produce::too_large_message(topic, VirtualPartition(v), t.physical_count);
    if LOGGED.get_or_init(Default::default).lock().is_ok_and(|mut seen| seen.insert(topic.to_string())) {
        warn!("Produce: {message} (logged once per topic)");
    }
    // Below v8 the field is not in the version, and the encoder skips it.
    if entry.has(answer_entry::ERROR_MESSAGE) {
        entry.write(answer_entry::ERROR_MESSAGE, message);
    }
}
