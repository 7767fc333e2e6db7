//! The proxy's producer-id topic (`__kpr_producer_ids` unless configured
//! otherwise): created at start when missing, read to its end before the
//! first derived id is handed out, followed by a thread of its own, and
//! written when a derived id or a sequence base is new. See
//! `remap::producer_ids` for the rules the records follow.
//!
//! One partition, so the log's order is the one order every instance sees;
//! compacted, so it holds one record per live key; written with acks=all,
//! so a mapping a batch went out under survives a broker's loss.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};

use super::control::{ControlClient, UpstreamError};
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::fetch_request::topics::partitions as fetch_req_entry;
use crate::kafka::fields::fetch_response::responses::partitions as fetch_entry;
use crate::kafka::fields::produce_response::responses::partition_responses as produce_entry;
use crate::kafka::fields::{create_topics_request as ct_req, create_topics_response as ct_resp, fetch_request as fetch_req};
use crate::kafka::fields::{fetch_response as fetch_resp, init_producer_id_request as ipi_req, init_producer_id_response as ipi_resp};
use crate::kafka::fields::{members, produce_request as produce_req, produce_response as produce_resp};
use crate::kafka::records::{self, BuildOptions, Item, RecordData};
use crate::net::Shared;
use crate::remap::producer_ids::{Apply, IdKey, IdValue, LogRecord, ProducerIdTable};

pub const DEFAULT_TOPIC: &str = "__kpr_producer_ids";
const PARTITION: i32 = 0;
/// Compaction must not run before a racing instance has written the winner
/// again (see `Apply::Conflict`): an hour is far longer than that takes.
const MIN_COMPACTION_LAG_MS: &str = "3600000";
/// Fetch is asked at v12 at most: the last version that names topics.
const FETCH_MAX_VERSION: i16 = 12;

/// Where the producer-id topic lives and how the proxy uses it.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub topic: String,
    /// Entries unused this long (by every instance) are tombstoned.
    pub idle: Duration,
    /// How long a derived-id look-up may take before the produce is
    /// answered with a retriable error.
    pub timeout: Duration,
}

/// The table and the way to its topic; shared by the workers and the
/// follower thread, each calling with its own `ControlClient`.
pub struct ProducerLog {
    pub table: ProducerIdTable,
    pub settings: LogSettings,
    /// Winners to write again (see `Apply::Conflict`), until written.
    repairs: parking_lot::Mutex<Vec<(IdKey, Option<IdValue>)>>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn log_error(message: impl Into<String>) -> UpstreamError {
    UpstreamError::Kafka { api: ApiKey::Produce, code: error::KAFKA_STORAGE_ERROR, message: message.into() }
}

impl ProducerLog {
    pub fn new(settings: LogSettings) -> ProducerLog {
        ProducerLog { table: ProducerIdTable::default(), settings, repairs: Default::default() }
    }

    /// Create the topic if the cluster does not have it (a topic another
    /// instance created meanwhile is fine).
    pub fn ensure_topic(&self, control: &mut ControlClient) -> Result<(), UpstreamError> {
        let topic = self.settings.topic.clone();
        control.refresh_topics(std::slice::from_ref(&topic))?;
        if control.cluster().read().topics.contains_key(&topic) {
            return Ok(());
        }
        let name = topic.clone();
        // Replicated like Kafka's own internal topics (3, or every broker of
        // a smaller cluster): the mapping must outlive a broker.
        let replicas = control.cluster().read().brokers.len().clamp(1, 3) as i16;
        let build = |b: &mut Struct<'static>, v: i16| {
                let ts = members(b.schema, ct_req::TOPICS);
                let mut t = codec::with_defaults(ts, v);
                t.write(ct_req::topics::NAME, name.clone());
                t.write(ct_req::topics::NUM_PARTITIONS, 1);
                t.write(ct_req::topics::REPLICATION_FACTOR, replicas);
                let cs = members(ts, ct_req::topics::CONFIGS);
                let min_insync = if replicas >= 3 { "2" } else { "1" };
                let configs: Vec<Value> = [
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", MIN_COMPACTION_LAG_MS),
                    ("min.insync.replicas", min_insync),
                ]
                    .iter()
                    .map(|(k, val)| {
                        let mut c = codec::with_defaults(cs, v);
                        c.write(ct_req::topics::configs::NAME, *k);
                        c.write(ct_req::topics::configs::VALUE, *val);
                        Value::Struct(c.into_owned())
                    })
                    .collect();
                t.write(ct_req::topics::CONFIGS, configs);
                b.write(ct_req::TOPICS, vec![Value::Struct(t.into_owned())]);
                b.write(ct_req::TIMEOUT_MS, 30_000);
            };
        let read = |r: &Struct<'_>| {
                let t = r.iter(ct_resp::TOPICS).next();
                match t.and_then(|t| t.read(ct_resp::topics::ERROR_CODE)).unwrap_or(error::NONE) {
                    error::NONE => Ok(true),
                    error::TOPIC_ALREADY_EXISTS => Ok(false),
                    code => Err(UpstreamError::Kafka {
                        api: ApiKey::CreateTopics,
                        code,
                        message: format!(
                            "cannot create the producer-id topic {name}{}: the proxy's identity needs Create, Read and \
                             Write on it",
                            t.and_then(|t| t.read(ct_resp::topics::ERROR_MESSAGE)).map(|m| format!(" ({m})")).unwrap_or_default()
                        ),
                    }),
                }
            };
        // A ZooKeeper-mode broker that is not the controller answers
        // NOT_CONTROLLER: learn the controller and ask it.
        let created = match control.call_any(ApiKey::CreateTopics, build, read) {
            Err(UpstreamError::Kafka { code: error::NOT_CONTROLLER, .. }) => {
                control.refresh_metadata()?;
                let controller = control.cluster().read().controller_id;
                let addr = control.cluster().broker_addr(controller).ok_or(UpstreamError::NoBrokers)?;
                control.call_decoded(&addr, ApiKey::CreateTopics, build, read)?
            }
            other => other?,
        };
        if created {
            info!("Created the producer-id topic {topic} (1 partition, {replicas} replicas, compacted)");
        }
        // Learn its leader; a new topic may need a moment.
        for _ in 0..50 {
            control.refresh_topics(std::slice::from_ref(&topic))?;
            if control.cluster().leader_of(&topic, PARTITION).is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(log_error(format!("the producer-id topic {topic} has no leader")))
    }

    /// The address of the topic's leader, asking the cluster when unknown.
    fn leader(&self, control: &mut ControlClient) -> Result<String, UpstreamError> {
        let topic = &self.settings.topic;
        let known = control.cluster().leader_of(topic, PARTITION);
        let id = match known {
            Some(id) => id,
            None => {
                control.refresh_topics(std::slice::from_ref(topic))?;
                control
                    .cluster()
                    .leader_of(topic, PARTITION)
                    .ok_or_else(|| log_error(format!("the producer-id topic {topic} has no leader (does it exist?)")))?
            }
        };
        control.cluster().broker_addr(id).ok_or(UpstreamError::NoBrokers)
    }

    /// Read the topic from the table's position; apply what came. Returns
    /// the high watermark. `wait_ms` > 0 waits that long for new records.
    pub fn read_once(&self, control: &mut ControlClient, wait_ms: i32) -> Result<i64, UpstreamError> {
        let addr = self.leader(control)?;
        let from = self.table.position();
        let topic = self.settings.topic.clone();
        let version = control.pick_version(ApiKey::Fetch)?.min(FETCH_MAX_VERSION);
        let body = fetch_request(&topic, from, wait_ms, version);
        let answer = control.call(&addr, ApiKey::Fetch, version, &body)?;
        let resp = answer.body()?;
        let part = resp
            .iter(fetch_resp::RESPONSES)
            .flat_map(|t| t.iter(fetch_resp::responses::PARTITIONS))
            .find(|p| p.read(fetch_entry::PARTITION_INDEX) == Some(PARTITION))
            .ok_or_else(|| log_error(format!("Fetch of {topic} answered no partition {PARTITION}")))?;
        let code = part.read(fetch_entry::ERROR_CODE).unwrap_or(error::NONE);
        let log_start = part.read(fetch_entry::LOG_START_OFFSET).unwrap_or(-1);
        if code == error::OFFSET_OUT_OF_RANGE && log_start > from {
            // Records below the log start are gone (a delete policy or
            // DeleteRecords on the topic): read on from the start.
            warn!("The producer-id topic {topic} starts at offset {log_start}, past {from}: reading on from there");
            self.table.apply(&[], log_start);
            return Ok(part.read(fetch_entry::HIGH_WATERMARK).unwrap_or(-1));
        }
        if code != error::NONE {
            if matches!(code, error::NOT_LEADER_OR_FOLLOWER | error::UNKNOWN_TOPIC_OR_PARTITION | error::FENCED_LEADER_EPOCH) {
                control.cluster().forget_leader(&topic);
            }
            return Err(UpstreamError::Kafka { api: ApiKey::Fetch, code, message: topic });
        }
        let high_watermark = part.read(fetch_entry::HIGH_WATERMARK).unwrap_or(-1);
        let data: &[u8] = match part.value(fetch_entry::RECORDS) {
            Value::Records(Some(d)) => d,
            _ => &[],
        };
        let (decoded, next) = decode_log(data, from);
        if next == from && !data.is_empty() && high_watermark > from {
            return Err(log_error(format!(
                "the producer-id topic {topic} holds a batch at offset {from} that cannot be read"
            )));
        }
        let applied = self.table.apply(&decoded, next);
        let conflicts: Vec<(IdKey, Option<IdValue>)> = applied
            .into_iter()
            .filter_map(|a| match a {
                Apply::Conflict { key, winner } => Some((key, Some(winner))),
                _ => None,
            })
            .collect();
        if !conflicts.is_empty() {
            // Compaction keeps the last record of a key: make it the winner.
            debug!("Producer-id topic: writing {} winning entries again after a race", conflicts.len());
            self.repairs.lock().extend(conflicts);
        }
        self.write_repairs(control);
        Ok(high_watermark)
    }

    /// Write again the winners of keys a later candidate lost, until the
    /// write succeeds (kept for the next read when it fails).
    fn write_repairs(&self, control: &mut ControlClient) {
        let pending: Vec<(IdKey, Option<IdValue>)> = std::mem::take(&mut *self.repairs.lock());
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.append(control, &pending) {
            warn!("Cannot write {} winning producer-id entries again (will retry): {e}", pending.len());
            self.repairs.lock().extend(pending);
        }
    }

    /// Read until the table holds every record below the high watermark.
    pub fn load(&self, control: &mut ControlClient) -> Result<(), UpstreamError> {
        let deadline = Instant::now() + self.settings.timeout.max(Duration::from_secs(30));
        loop {
            let from = self.table.position();
            let hw = self.read_once(control, 0)?;
            pause_without_progress(from, self.table.position());
            if self.table.position() >= hw {
                break;
            }
            if Instant::now() > deadline {
                return Err(log_error(format!(
                    "reading the producer-id topic {} stopped at offset {} of {hw}",
                    self.settings.topic,
                    self.table.position()
                )));
            }
        }
        if !self.table.is_loaded() {
            info!(
                "Loaded {} producer-id entries from {} (up to offset {})",
                self.table.len(),
                self.settings.topic,
                self.table.position()
            );
        }
        self.table.mark_loaded();
        Ok(())
    }

    /// Read until the record at `offset` is applied.
    fn catch_up(&self, control: &mut ControlClient, offset: i64, deadline: Instant) -> Result<(), UpstreamError> {
        while self.table.position() <= offset {
            if Instant::now() > deadline {
                return Err(log_error(format!("the producer-id topic was not read up to offset {offset} in time")));
            }
            let from = self.table.position();
            self.read_once(control, 0)?;
            pause_without_progress(from, self.table.position());
        }
        Ok(())
    }

    /// Write records (a `None` value is a tombstone) with acks=all; the
    /// offset of the first.
    pub fn append(&self, control: &mut ControlClient, entries: &[(IdKey, Option<IdValue>)]) -> Result<i64, UpstreamError> {
        let addr = self.leader(control)?;
        let topic = self.settings.topic.clone();
        let now = now_ms();
        let recs: Vec<RecordData> = entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| RecordData {
                key: Some(k.encode()),
                value: v.map(|v| v.encode()),
                offset_delta: i as i32,
                ..Default::default()
            })
            .collect();
        let batch = records::build_batch(
            &recs,
            &BuildOptions { base_timestamp: now, producer_id: -1, producer_epoch: -1, base_sequence: -1, ..Default::default() },
        );
        let version = control.pick_version(ApiKey::Produce)?;
        let body = {
            let schema = crate::kafka::message::request_schema(ApiKey::Produce as i16).expect("declared");
            let mut b = codec::with_defaults(&schema.body, version);
            b.put(produce_req::TRANSACTIONAL_ID, Value::String(None));
            b.write(produce_req::ACKS, -1);
            // Below the socket's timeout, so a slow write is the broker's
            // REQUEST_TIMED_OUT, not a lost connection.
            let timeout = self.settings.timeout.as_millis() * 2 / 3;
            b.write(produce_req::TIMEOUT_MS, timeout.min(i32::MAX as u128) as i32);
            let ts = members(&schema.body, produce_req::TOPIC_DATA);
            let ps = members(ts, produce_req::topic_data::PARTITION_DATA);
            let mut p = codec::with_defaults(ps, version);
            p.write(produce_req::topic_data::partition_data::INDEX, PARTITION);
            p.put(produce_req::topic_data::partition_data::RECORDS, Value::Records(Some(Cow::Owned(batch))));
            let mut t = codec::with_defaults(ts, version);
            t.write(produce_req::topic_data::NAME, topic.clone());
            t.write(produce_req::topic_data::PARTITION_DATA, vec![Value::Struct(p)]);
            b.write(produce_req::TOPIC_DATA, vec![Value::Struct(t)]);
            b.into_owned()
        };
        let answer = control.call(&addr, ApiKey::Produce, version, &body)?;
        let resp = answer.body()?;
        let part = resp
            .iter(produce_resp::RESPONSES)
            .flat_map(|t| t.iter(produce_resp::responses::PARTITION_RESPONSES))
            .next()
            .ok_or_else(|| log_error(format!("Produce to {topic} answered no partition")))?;
        match part.read(produce_entry::ERROR_CODE).unwrap_or(error::NONE) {
            error::NONE => Ok(part.read(produce_entry::BASE_OFFSET).unwrap_or(-1)),
            code => {
                if matches!(code, error::NOT_LEADER_OR_FOLLOWER | error::UNKNOWN_TOPIC_OR_PARTITION) {
                    control.cluster().forget_leader(&topic);
                }
                Err(UpstreamError::Kafka { api: ApiKey::Produce, code, message: topic })
            }
        }
    }

    /// The value of `key`: the table's, or a candidate written to the log
    /// and the log's first record for the key after it was read back.
    /// `candidate` makes the value to propose (it may call the cluster);
    /// a thread of this process allocating the same key is waited for.
    fn resolve(
        &self,
        control: &mut ControlClient,
        key: &IdKey,
        candidate: impl FnOnce(&mut ControlClient) -> Result<IdValue, UpstreamError>,
    ) -> Result<(IdValue, bool), UpstreamError> {
        let deadline = Instant::now() + self.settings.timeout;
        if !self.table.is_loaded() {
            // Not read since start: the reader thread keeps trying; this
            // produce gets a retriable error meanwhile.
            self.load(control)?;
        }
        loop {
            match self.table.claim(key) {
                Err(value) => return Ok((value, false)),
                Ok(true) => break,
                Ok(false) => {
                    self.table.wait_for_claim(key, deadline);
                    if Instant::now() > deadline {
                        return Err(log_error("another worker's producer-id look-up did not finish in time"));
                    }
                }
            }
        }
        // Released however this ends, a panic included (workers survive
        // panics; a claim left behind would stall the key for good).
        struct Claim<'t>(&'t ProducerIdTable, &'t IdKey);
        impl Drop for Claim<'_> {
            fn drop(&mut self) {
                self.0.release(self.1);
            }
        }
        let _claim = Claim(&self.table, key);
        (|| {
            // Another instance may have written the key since our last read.
            self.read_once(control, 0)?;
            if let Some(v) = self.table.get(key) {
                return Ok((v, false));
            }
            let proposed = candidate(control)?;
            let offset = self.append(control, &[(key.clone(), Some(proposed))])?;
            self.catch_up(control, offset, deadline)?;
            let winner = self
                .table
                .get(key)
                .ok_or_else(|| log_error(format!("the producer-id topic lost the entry written at offset {offset}")))?;
            Ok((winner, winner == proposed))
        })()
    }

    /// The derived (id, epoch) of a client's producer at sibling index k,
    /// if this process has read it from the topic (does not wait).
    pub fn known_derived(&self, client: (i64, i16), k: i32) -> Option<(i64, i16)> {
        match self.table.get(&IdKey::Derived { client_id: client.0, client_epoch: client.1, k })? {
            IdValue::Derived { id, epoch } => Some((id, epoch)),
            IdValue::SequenceBase(_) => None,
        }
    }

    /// `sequence_base`, if this process has read it (does not wait).
    pub fn known_sequence_base(&self, derived: i64, topic: &str, partition: i32) -> Option<i32> {
        match self.table.get(&IdKey::SequenceBase { derived_id: derived, topic: topic.to_string(), partition })? {
            IdValue::SequenceBase(base) => Some(base),
            IdValue::Derived { .. } => None,
        }
    }

    /// The derived (id, epoch) of a client's producer at sibling index k.
    pub fn derived(
        &self,
        control: &mut ControlClient,
        shared: &Shared,
        client: (i64, i16),
        k: i32,
    ) -> Result<(i64, i16), UpstreamError> {
        let key = IdKey::Derived { client_id: client.0, client_epoch: client.1, k };
        let (value, ours) = self.resolve(control, &key, init_producer_id)?;
        let IdValue::Derived { id, epoch } = value else { unreachable!("a pid key holds a derived id") };
        if ours {
            shared.metrics.derived_producer_ids_total.fetch_add(1, Ordering::Relaxed);
            debug!("Producer {}/{} uses producer id {id}/{epoch} for sibling index {k}", client.0, client.1);
        }
        Ok((id, epoch))
    }

    /// The client sequence that is `derived`'s sequence 0 on (topic,
    /// partition): the first one any instance saw there.
    pub fn sequence_base(
        &self,
        control: &mut ControlClient,
        derived: i64,
        topic: &str,
        partition: i32,
        first_seen: i32,
    ) -> Result<i32, UpstreamError> {
        let key = IdKey::SequenceBase { derived_id: derived, topic: topic.to_string(), partition };
        if let Some(IdValue::SequenceBase(base)) = self.table.get(&key) {
            return Ok(base);
        }
        let (value, _) = self.resolve(control, &key, |_| Ok(IdValue::SequenceBase(first_seen)))?;
        let IdValue::SequenceBase(base) = value else { unreachable!("a seq key holds a base") };
        Ok(base)
    }

    /// Tombstone idle entries and write used ones again.
    pub fn sweep(&self, control: &mut ControlClient) -> Result<(), UpstreamError> {
        let s = self.table.sweep(now_ms(), self.settings.idle);
        let mut writes: Vec<(IdKey, Option<IdValue>)> = s.tombstone.into_iter().map(|k| (k, None)).collect();
        let tombstones = writes.len();
        writes.extend(s.refresh.into_iter().map(|(k, v)| (k, Some(v))));
        for chunk in writes.chunks(500) {
            self.append(control, chunk)?;
        }
        if tombstones > 0 {
            info!("Producer-id topic: {tombstones} entries idle for {:?} tombstoned", self.settings.idle);
        }
        Ok(())
    }

    /// The follower: keep reading the topic (long polls), sweep now and
    /// then, until shutdown.
    pub fn follow(&self, mut control: ControlClient, shared: Arc<Shared>) {
        let sweep_every = (self.settings.idle / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut next_sweep = Instant::now() + sweep_every;
        let mut healthy = true;
        while !shared.shutdown.load(Ordering::SeqCst) {
            let (started, from) = (Instant::now(), self.table.position());
            let result = if self.table.is_loaded() {
                self.read_once(&mut control, 500).map(|_| ())
            } else {
                self.ensure_topic(&mut control).and_then(|()| self.load(&mut control))
            };
            // A broker that answers an empty fetch at once instead of
            // waiting max_wait_ms (Tansu 0.6 may) must not make this a
            // busy loop.
            if self.table.position() == from && started.elapsed() < Duration::from_millis(100) {
                std::thread::sleep(Duration::from_millis(250));
            }
            let result = result.and_then(|()| {
                if Instant::now() >= next_sweep {
                    next_sweep = Instant::now() + sweep_every;
                    self.sweep(&mut control)
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(()) if !healthy => {
                    info!("Reading the producer-id topic {} again", self.settings.topic);
                    healthy = true;
                }
                Ok(()) => {}
                // A read the shutdown ended is not the cluster's fault.
                Err(_) if shared.shutdown.load(Ordering::SeqCst) => {}
                Err(e) => {
                    if healthy {
                        warn!("Cannot read the producer-id topic {}: {e}", self.settings.topic);
                    }
                    healthy = false;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

/// A short pause after a read that moved nothing, so that a loop waiting
/// for the log to reach an offset never spins. Reads ask the broker not to
/// wait (max_wait_ms 0): some compatible brokers wait the full time even
/// when records are there.
fn pause_without_progress(before: i64, after: i64) {
    if after == before {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A new producer id from the cluster (InitProducerId, no transactional id).
fn init_producer_id(control: &mut ControlClient) -> Result<IdValue, UpstreamError> {
    control.call_any(
        ApiKey::InitProducerId,
        |b, v| {
            b.put(ipi_req::TRANSACTIONAL_ID, Value::String(None));
            b.write(ipi_req::TRANSACTION_TIMEOUT_MS, 60_000);
            if v >= 3 {
                b.write(ipi_req::PRODUCER_ID, -1);
                b.write(ipi_req::PRODUCER_EPOCH, -1);
            }
        },
        |r: &Struct<'_>| match (r.read(ipi_resp::ERROR_CODE), r.read(ipi_resp::PRODUCER_ID), r.read(ipi_resp::PRODUCER_EPOCH)) {
            (Some(0), Some(id), Some(epoch)) if id >= 0 => Ok(IdValue::Derived { id, epoch }),
            (code, _, _) => {
                Err(UpstreamError::Kafka { api: ApiKey::InitProducerId, code: code.unwrap_or(-1), message: String::new() })
            }
        },
    )
}

/// A sessionless Fetch of the topic's one partition from `from`, with no
/// leader epoch to check.
fn fetch_request(topic: &str, from: i64, wait_ms: i32, version: i16) -> Struct<'static> {
    let schema = crate::kafka::message::request_schema(ApiKey::Fetch as i16).expect("declared");
    let mut b = codec::with_defaults(&schema.body, version);
    b.write(fetch_req::REPLICA_ID, -1);
    b.write(fetch_req::MAX_WAIT_MS, wait_ms);
    b.write(fetch_req::MIN_BYTES, 1);
    b.write(fetch_req::MAX_BYTES, 16 << 20);
    b.write(fetch_req::ISOLATION_LEVEL, 0);
    if version >= 7 {
        b.write(fetch_req::SESSION_ID, 0);
        b.write(fetch_req::SESSION_EPOCH, -1);
    }
    let ts = members(&schema.body, fetch_req::TOPICS);
    let ps = members(ts, fetch_req::topics::PARTITIONS);
    let mut p = codec::with_defaults(ps, version);
    p.write(fetch_req_entry::PARTITION, PARTITION);
    p.write(fetch_req_entry::FETCH_OFFSET, from);
    p.write(fetch_req_entry::PARTITION_MAX_BYTES, 8 << 20);
    // -1: no epoch to check. Zeros (the defaults) would be taken as
    // epoch 0, which Kafka fences once the leader epoch has moved.
    for field in [fetch_req_entry::CURRENT_LEADER_EPOCH, fetch_req_entry::LAST_FETCHED_EPOCH] {
        p.write(field, -1);
    }
    p.write(fetch_req_entry::LOG_START_OFFSET, -1);
    let mut t = codec::with_defaults(ts, version);
    t.write(fetch_req::topics::TOPIC, topic.to_string());
    t.write(fetch_req::topics::PARTITIONS, vec![Value::Struct(p)]);
    b.write(fetch_req::TOPICS, vec![Value::Struct(t)]);
    b.into_owned()
}

/// The records of a fetched log, and the offset after its last batch
/// (`from` when it held none). Records that do not decode are skipped: the
/// topic is the proxy's own, but a stray writer must not stop it.
fn decode_log(data: &[u8], from: i64) -> (Vec<LogRecord>, i64) {
    let mut out = Vec::new();
    let mut next = from;
    for item in records::batches(data) {
        let Ok(Item::Batch(batch)) = item else { break };
        next = next.max(batch.header.next_offset());
        if batch.header.is_control() || records::check_crc(&batch).is_err() {
            continue;
        }
        let Ok(recs) = records::records(&batch) else { continue };
        for r in recs {
            let Some(key) = r.key.as_deref().and_then(IdKey::decode) else { continue };
            let value = match r.value.as_deref() {
                None => None,
                Some(bytes) => match IdValue::decode(&key, bytes) {
                    Some(v) => Some(v),
                    None => continue,
                },
            };
            out.push(LogRecord {
                offset: batch.header.base_offset + r.offset_delta as i64,
                timestamp: batch.header.base_timestamp + r.timestamp_delta,
                key,
                value,
            });
        }
    }
    (out, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_of_the_topic_check_no_leader_epoch_in_any_version() {
        let schema = crate::kafka::message::request_schema(ApiKey::Fetch as i16).unwrap();
        for version in 4..=FETCH_MAX_VERSION {
            let req = fetch_request("__kpr_producer_ids", 42, 100, version);
            let mut bytes = Vec::new();
            codec::encode(schema, version, &req, &mut bytes).unwrap();
            let back = codec::decode(schema, version, &bytes).unwrap();
            let p = back.iter(fetch_req::TOPICS).next().unwrap().iter(fetch_req::topics::PARTITIONS).next().unwrap().clone();
            assert_eq!(p.read(fetch_req_entry::FETCH_OFFSET), Some(42), "v{version}");
            if version >= 9 {
                assert_eq!(p.read(fetch_req_entry::CURRENT_LEADER_EPOCH), Some(-1), "v{version}: epoch 0 is fenced once the leader moved");
            }
            if version >= 12 {
                assert_eq!(p.read(fetch_req_entry::LAST_FETCHED_EPOCH), Some(-1), "v{version}");
            }
            assert_eq!(back.read(fetch_req::REPLICA_ID), Some(-1), "v{version}: a consumer's fetch");
        }
    }

    #[test]
    fn a_log_decodes_in_order_and_skips_what_is_not_ours() {
        let rec = |key: &[u8], value: Option<&[u8]>, i: i32| RecordData {
            key: Some(key.to_vec()),
            value: value.map(<[u8]>::to_vec),
            offset_delta: i,
            timestamp_delta: i as i64,
            ..Default::default()
        };
        let batch = records::build_batch(
            &[rec(b"pid/1/0/1", Some(b"9/0"), 0), rec(b"junk", Some(b"x"), 1), rec(b"pid/1/0/1", None, 2)],
            &BuildOptions { base_offset: 10, base_timestamp: 5_000, ..Default::default() },
        );
        let (recs, next) = decode_log(&batch, 10);
        assert_eq!(next, 13);
        assert_eq!(
            recs,
            vec![
                LogRecord {
                    offset: 10,
                    timestamp: 5_000,
                    key: IdKey::Derived { client_id: 1, client_epoch: 0, k: 1 },
                    value: Some(IdValue::Derived { id: 9, epoch: 0 })
                },
                LogRecord { offset: 12, timestamp: 5_002, key: IdKey::Derived { client_id: 1, client_epoch: 0, k: 1 }, value: None },
            ]
        );
        let mut damaged = batch.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let (recs, next) = decode_log(&damaged, 10);
        assert!(recs.is_empty(), "a batch whose CRC fails is not believed");
        assert_eq!(next, 13, "but it is read past");
    }
}
