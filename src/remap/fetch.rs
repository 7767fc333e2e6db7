//! Fetch from virtual partitions. Each physical partition a client names
//! (through any number of its virtual partitions) is fetched once upstream,
//! from the lowest offset asked. Each virtual partition then gets: its own
//! batches (bytes unchanged), control batches (transaction markers), and in
//! place of each run of other virtual partitions' batches one empty batch
//! spanning the run, so the consumer's position moves past data that is not
//! its own without reading it.
//!
//! A record's virtual partition is its own `kpr.vp` tag (untagged, or
//! tagged with a number no virtual partition of this physical partition
//! has: the physical partition's number). The proxy writes each virtual partition's
//! records in batches of their own, but a batch can still hold several:
//! a mirror copying a remapped topic with its headers, a producer writing
//! tagged records directly, a broker that merges batches (Tansu with sqlite
//! storage does). So every record of a batch is classified. A batch wholly
//! owned by one virtual partition goes to it unchanged; a mixed batch gives
//! each of its owners a batch of only its records, at their own offsets.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::kafka::records::{self, Batch, Item, TAG_HEADER};
use crate::remap::mapping::{PhysicalPartition, TopicMapping, VirtualPartition};

/// Who a batch's records belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Transaction markers: every virtual partition receives them.
    Control,
    /// Every record belongs to this virtual partition.
    Uniform(i32),
    /// The owner of each record, in order.
    Mixed(Vec<i32>),
}

/// The virtual partition named by a tag value, for a record stored in
/// `physical`. Untagged records belong to virtual partition `physical`, and
/// so do records whose tag names no virtual partition of `physical`: not a
/// number, out of range, or one living on another physical partition (data
/// mirrored from a topic with another ratio, or written directly with a
/// hand-made tag). Such a record is shown where untagged data is, rather
/// than hidden from every consumer.
pub fn owner_of_tag(tag: Option<&[u8]>, physical: PhysicalPartition, mapping: &TopicMapping) -> i32 {
    tag.and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .filter(|&v| mapping.locate(VirtualPartition(v)).is_some_and(|(p, _)| p == physical))
        .unwrap_or(physical.0)
}

/// Classify every record of a data batch stored in `physical`.
pub fn batch_owner(batch: &Batch<'_>, physical: PhysicalPartition, mapping: &TopicMapping) -> Owner {
    let untagged = physical.0;
    if batch.header.is_control() {
        return Owner::Control;
    }
    match records::record_owners(batch, TAG_HEADER, &|tag| owner_of_tag(tag, physical, mapping)) {
        Ok(owners) => match owners.first() {
            Some(&first) if owners.iter().all(|&o| o == first) => Owner::Uniform(first),
            Some(_) => Owner::Mixed(owners),
            None => Owner::Uniform(untagged),
        },
        // A batch that cannot be read goes, unchanged, to the owner of
        // untagged data, whose client reports it as corrupt.
        Err(_) => Owner::Uniform(untagged),
    }
}

/// Batch classifications shared by all workers: the siblings of a physical
/// partition read the same batches, and a compressed batch is decompressed
/// once, not once per sibling.
#[derive(Default)]
pub struct OwnerCache {
    map: Mutex<HashMap<BatchKey, Arc<Owner>>>,
}

/// A batch, identified across fetches: its topic, physical partition,
/// offset, length and CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BatchKey {
    topic: u64,
    virtual_count: i32,
    physical: i32,
    base_offset: i64,
    length: i32,
    crc: u32,
}

/// Entries kept before the cache starts over (each about 100 bytes).
const CACHE_ENTRIES: usize = 200_000;

impl OwnerCache {
    fn owner(&self, key: BatchKey, batch: &Batch<'_>, physical: PhysicalPartition, mapping: &TopicMapping) -> Arc<Owner> {
        if let Some(o) = self.map.lock().get(&key) {
            return o.clone();
        }
        let owner = Arc::new(batch_owner(batch, physical, mapping));
        let mut map = self.map.lock();
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, owner.clone());
        owner
    }
}

/// One batch of a physical partition's fetched data, classified once for
/// all the virtual partitions asked for.
pub struct Classified<'a> {
    pub batch: Batch<'a>,
    pub owner: Arc<Owner>,
}

/// Classify the batches of a fetched `records` blob of physical partition
/// `physical` of a topic mapped by `mapping` (untagged records belong to
/// virtual partition `physical`). A partial batch at the end (brokers cut
/// responses at the byte limit) is dropped: the client fetches it again
/// from its position.
pub fn classify<'a>(
    data: &'a [u8],
    topic: &str,
    physical: PhysicalPartition,
    mapping: &TopicMapping,
    cache: &OwnerCache,
) -> Vec<Classified<'a>> {
    let mut hasher = DefaultHasher::new();
    topic.hash(&mut hasher);
    let topic = hasher.finish();
    let mut out = Vec::new();
    for item in records::batches(data) {
        match item {
            Ok(Item::Batch(batch)) => {
                let h = &batch.header;
                let key = BatchKey {
                    topic,
                    virtual_count: mapping.virtual_count,
                    physical: physical.0,
                    base_offset: h.base_offset,
                    length: h.batch_length,
                    crc: h.crc,
                };
                let owner = cache.owner(key, &batch, physical, mapping);
                out.push(Classified { batch, owner });
            }
            Ok(Item::Partial(_)) | Err(_) => break,
        }
    }
    out
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FilterStats {
    /// Foreign batches replaced by empty batches.
    pub batches_filtered: u64,
    /// Mixed batches cut down to one virtual partition's records.
    pub batches_split: u64,
    pub bytes_returned: u64,
}

/// The records virtual partition `vp` receives, fetching from
/// `fetch_offset`.
pub fn records_for(batches: &[Classified<'_>], vp: i32, fetch_offset: i64, stats: &mut FilterStats) -> Vec<u8> {
    let mut out = Vec::new();
    // The run of foreign batches not yet written: (first offset, last
    // offset, leader epoch, first timestamp, max timestamp).
    let mut run: Option<(i64, i64, i32, i64, i64)> = None;
    let flush = |run: &mut Option<(i64, i64, i32, i64, i64)>, out: &mut Vec<u8>| {
        if let Some((first, last, epoch, ts0, ts1)) = run.take() {
            let delta = (last - first).clamp(0, i32::MAX as i64) as i32;
            out.extend_from_slice(&records::empty_batch(first, delta, epoch, ts0, ts1));
        }
    };
    for c in batches {
        let h = &c.batch.header;
        if h.last_offset() < fetch_offset {
            continue;
        }
        let own: Option<Cow<'_, [u8]>> = match &*c.owner {
            Owner::Control => Some(Cow::Borrowed(c.batch.bytes)),
            Owner::Uniform(o) if *o == vp => Some(Cow::Borrowed(c.batch.bytes)),
            Owner::Uniform(_) => None,
            Owner::Mixed(owners) if owners.contains(&vp) => {
                stats.batches_split += 1;
                records::subset_batch(&c.batch, &|i| owners[i] == vp).ok().map(Cow::Owned)
            }
            Owner::Mixed(_) => None,
        };
        match own {
            Some(bytes) => {
                flush(&mut run, &mut out);
                out.extend_from_slice(&bytes);
            }
            None => {
                stats.batches_filtered += 1;
                run = Some(match run {
                    None => (h.base_offset, h.last_offset(), h.partition_leader_epoch, h.base_timestamp, h.max_timestamp),
                    Some((first, _, _, ts0, ts1)) => {
                        (first, h.last_offset(), h.partition_leader_epoch, ts0, ts1.max(h.max_timestamp))
                    }
                });
            }
        }
    }
    flush(&mut run, &mut out);
    stats.bytes_returned += out.len() as u64;
    out
}
