//! Produce to a virtual partition: the batch goes to physical partition
//! `p`; if `k ≥ 1`, every record is tagged with the `kpr.vp` header, and an
//! idempotent producer's id is replaced by one of its own per sibling index
//! so that sequence numbers (per producer id and partition) never collide
//! on the physical partition. k = 0 batches go as they came.

use std::borrow::Cow;
use std::collections::HashMap;

use parking_lot::Mutex;

use crate::kafka::api::error;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::records::{self, Item, TAG_HEADER};

use super::mapping::{PhysicalPartition, VirtualPartition};
use super::split::Refusal;

/// Counts of what a rewrite did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TagStats {
    pub batches: u64,
    pub records: u64,
}

/// Where producer ids for k ≥ 1 come from: the broker (InitProducerId with
/// no transactional id), asked once per (client id, epoch, k).
pub trait ProducerIdSource {
    fn derived(&mut self, client: (i64, i16), k: i32) -> Result<(i64, i16), String>;
}

/// The cache of derived producer ids. Losing it (restart) is safe: Kafka
/// accepts any first sequence for a producer id it has no state for.
/// A producer's (id, epoch).
pub type ProducerIdEpoch = (i64, i16);

#[derive(Default)]
pub struct ProducerIds {
    /// (client id, client epoch, k) → derived (id, epoch).
    map: Mutex<HashMap<(i64, i16, i32), ProducerIdEpoch>>,
}

impl ProducerIds {
    pub fn get(&self, client: (i64, i16), k: i32) -> Option<(i64, i16)> {
        self.map.lock().get(&(client.0, client.1, k)).copied()
    }

    pub fn insert(&self, client: (i64, i16), k: i32, derived: (i64, i16)) {
        let mut map = self.map.lock();
        // Bounded: a client that bumps its epoch leaves old entries behind.
        if map.len() > 100_000 {
            map.clear();
        }
        map.insert((client.0, client.1, k), derived);
    }
}

/// Rewrite the records of one produce entry bound for virtual partition
/// `v` (already re-indexed to `p`).
pub fn rewrite_entry(
    entry: &mut Struct<'_>,
    v: VirtualPartition,
    _p: PhysicalPartition,
    k: i32,
    ids: &mut dyn ProducerIdSource,
    stats: &mut TagStats,
) -> Result<(), Refusal> {
    let data = match entry.get("records") {
        Value::Records(Some(d)) if !d.is_empty() => d.clone(),
        _ => return Ok(()),
    };
    if let Some(magic) = records::first_magic(&data) {
        if magic != 2 {
            return Err((
                error::UNSUPPORTED_FOR_MESSAGE_FORMAT,
                format!(
                    "record format v{magic} cannot carry the {TAG_HEADER} header: remapped topics need v2 record batches \
                     (magic 2, Kafka 0.11+ clients)"
                ),
            ));
        }
    }
    if k == 0 {
        return Ok(());
    }
    let tag = v.0.to_string();
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    for item in records::batches(&data) {
        let batch = match item {
            Ok(Item::Batch(b)) => b,
            Ok(Item::Partial(_)) => {
                return Err((error::CORRUPT_MESSAGE, "produce request ends inside a record batch".into()));
            }
            Err(e) => return Err((error::CORRUPT_MESSAGE, format!("malformed record batch: {e}"))),
        };
        if batch.header.is_transactional() {
            return Err((
                error::INVALID_TXN_STATE,
                format!(
                    "transactional produce to virtual partition {} is not supported: transactions work on 1:1 topics and \
                     partitions 0..P-1 of remapped topics",
                    v.0
                ),
            ));
        }
        let producer = if batch.header.producer_id >= 0 {
            Some(ids.derived((batch.header.producer_id, batch.header.producer_epoch), k).map_err(|e| {
                (error::KAFKA_STORAGE_ERROR, format!("cannot obtain a producer id for virtual partition {}: {e}", v.0))
            })?)
        } else {
            None
        };
        let tagged = records::tag_batch(&batch, TAG_HEADER, tag.as_bytes(), producer)
            .map_err(|e| (error::CORRUPT_MESSAGE, format!("cannot tag record batch: {e}")))?;
        stats.batches += 1;
        stats.records += batch.header.records_count.max(0) as u64;
        out.extend_from_slice(&tagged);
    }
    entry.set("records", Value::Records(Some(Cow::Owned(out))));
    Ok(())
}
