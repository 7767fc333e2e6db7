//! Produce. Pass-through: the client's frame to the leader of its first
//! partition, leader hints (v10+) pointing at the proxy. Remapped topics:
//! split by physical partition (`split::split_plan`), each k ≥ 1 batch
//! tagged with its virtual partition and written under a derived producer
//! id (`remap::produce`), the answers merged back; the session holds such
//! requests and merges a burst's into few (`coalesce`).

use std::cell::Cell;
use std::time::Duration;

use log::warn;

use super::passthrough::{endpoints_rewrite, first_partition, forward_expecting};
use super::split::split_plan;
use super::Request;
use crate::kafka::api::{ApiKey, ErrorCode};
use crate::kafka::codec::Struct;
use crate::kafka::fields::produce_request as request;
use crate::kafka::fields::produce_response::responses::partition_responses as answer_entry;
use crate::proxy::lookups::{Lookup, Needs};
use crate::proxy::plan::Plan;
use crate::proxy::session::extra_wait;
use crate::proxy::ProxyContext;
use crate::remap::mapping::VirtualPartition;
use crate::remap::split;

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

/// Produce naming remapped topics.
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req) = (r.ctx, r.header, r.body);
    let (session, needs) = (&mut *r.session, &mut *r.needs);
    let acks = req.read(request::ACKS).unwrap_or(-1);
    let wait = Duration::from_millis(req.read(request::TIMEOUT_MS).unwrap_or(0).max(0) as u64);
    let mut stats = crate::remap::produce::TagStats::default();
    let looking_up = Cell::new(false);
    let mut ids = BrokerProducerIds { ctx, needs, looking_up: &looking_up };
    // The entries the proxy tagged (k >= 1, or a k = 0 batch re-tagged):
    // when the broker finds them too large, the tag may be why.
    let tagged: std::rc::Rc<std::cell::RefCell<Vec<(String, i32, i32)>>> = Default::default();
    let tagged_seen = tagged.clone();
    let plan = split_plan(
        ctx,
        session,
        header,
        req,
        ApiKey::Produce,
        split::PRODUCE_REQUEST,
        split::PRODUCE_RESPONSE,
        wait,
        acks != 0,
        &mut |topic, entry, m, v, p, k| {
            let before = stats.batches;
            let result = crate::remap::produce::rewrite_entry(topic, entry, &m, v, p, k, &mut ids, &mut stats);
            if stats.batches > before {
                tagged.borrow_mut().push((topic.to_string(), v.0, m.physical_count));
            }
            result
        },
        &looking_up,
        Some(Box::new(move |topic, v, entry| explain_too_large(&tagged_seen.borrow(), topic, v, entry))),
    );
    if looking_up.get() {
        return plan;
    }
    let m = &ctx.shared.metrics;
    m.batches_tagged_total.fetch_add(stats.batches, std::sync::atomic::Ordering::Relaxed);
    m.records_tagged_total.fetch_add(stats.records, std::sync::atomic::Ordering::Relaxed);
    // Each refused entry was logged once by `split_plan` (its message names
    // the topic, virtual partition and both CRCs).
    m.corrupt_batches_total.fetch_add(stats.corrupt, std::sync::atomic::Ordering::Relaxed);
    plan
}

/// A tagged entry the broker refused as too large gets a message saying
/// that the tag adds bytes to each record (Produce v8+ has the field),
/// logged once per topic: the same records fit on untagged partitions.
fn explain_too_large(tagged: &[(String, i32, i32)], topic: &str, v: i32, entry: &mut Struct<'_>) {
    use std::sync::{Mutex, OnceLock};
    static LOGGED: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let code = ErrorCode::from(entry.read(answer_entry::ERROR_CODE).unwrap_or(0));
    if code != ErrorCode::MESSAGE_TOO_LARGE && code != ErrorCode::RECORD_LIST_TOO_LARGE {
        return;
    }
    let Some(&(_, _, physical_count)) = tagged.iter().find(|(t, tv, _)| t == topic && *tv == v) else { return };
    let message = crate::remap::produce::too_large_message(topic, VirtualPartition(v), physical_count);
    if LOGGED.get_or_init(Default::default).lock().is_ok_and(|mut seen| seen.insert(topic.to_string())) {
        warn!("Produce: {message} (logged once per topic)");
    }
    // Below v8 the field is not in the version, and the encoder skips it.
    if entry.has(answer_entry::ERROR_MESSAGE) {
        entry.write(answer_entry::ERROR_MESSAGE, message);
    }
}
