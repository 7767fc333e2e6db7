//! Fetch from virtual partitions: what each one gets from a physical
//! partition's fetched batches (which reads are made, and which read
//! answers which virtual partition, is `fetch_plan`'s). Each gets: its own
//! batches (bytes unchanged), control batches (transaction markers), and in
//! place of each run of other virtual partitions' batches one empty batch
//! spanning the run, so the consumer's position moves past data that is not
//! its own without reading it. A run that is all of an answer is an empty
//! control batch, not an empty data batch (see
//! `records::empty_control_batch`: librdkafka reports MSG_SIZE_TOO_LARGE
//! for a record set of empty data batches alone).
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
//!
//! Such a subset is a new batch with a CRC of the proxy's making, so a
//! mixed batch must pass its CRC-32C check before it is split. One that
//! fails is not split: its owners are answered CORRUPT_MESSAGE at its
//! offset (see [`CorruptBatch`]). Batches handed over unchanged are not
//! checked here; the client checks them (Java's `check.crcs`), as it would
//! reading from Kafka directly.

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::cache::Generations;

use log::warn;

use crate::kafka::records::{self, Batch, Item, RecordError, TAG_HEADER};
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
    /// Records of several virtual partitions (`owners`, ascending, as far
    /// as the damaged bytes tell), in a batch whose CRC-32C fails: it
    /// cannot be split without sealing the damage.
    Corrupt { owners: Vec<i32>, stored: u32, computed: u32 },
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
            Some(_) => match records::check_crc(batch) {
                // Checked only here, where the batch would be rewritten: a
                // CRC-32C pass is cheap next to the decompression and walk
                // that classifying it just cost, and it is done once per
                // batch for all siblings (the cache).
                Err(RecordError::Crc { stored, computed }) => {
                    let mut owners = owners;
                    owners.sort_unstable();
                    owners.dedup();
                    Owner::Corrupt { owners, stored, computed }
                }
                _ => Owner::Mixed(owners),
            },
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
pub struct OwnerCache {
    map: Mutex<Generations<BatchKey, Arc<Owner>>>,
}

impl Default for OwnerCache {
    fn default() -> Self {
        OwnerCache { map: Mutex::new(Generations::new(CACHE_ENTRIES)) }
    }
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

/// Entries kept at most (each about 100 bytes); the least recently used
/// half goes when it is full.
const CACHE_ENTRIES: usize = 200_000;

impl OwnerCache {
    /// The batch's owner, and whether this call classified it (rather
    /// than finding it in the cache, or losing a race to another worker).
    fn owner(&self, key: BatchKey, batch: &Batch<'_>, physical: PhysicalPartition, mapping: &TopicMapping) -> (Arc<Owner>, bool) {
        if let Some(o) = self.map.lock().get(&key) {
            return (o, false);
        }
        let owner = Arc::new(batch_owner(batch, physical, mapping));
        let first = self.map.lock().insert(key, owner.clone());
        (owner, first)
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
/// from its position. A mixed batch failing its CRC-32C check is logged
/// and counted (`stats.corrupt_batches`) when it is first classified, not
/// at each of the fetches its owners retry.
pub fn classify<'a>(
    data: &'a [u8],
    topic: &str,
    physical: PhysicalPartition,
    mapping: &TopicMapping,
    cache: &OwnerCache,
    stats: &mut FilterStats,
) -> Vec<Classified<'a>> {
    let mut hasher = DefaultHasher::new();
    topic.hash(&mut hasher);
    let topic_name = topic;
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
                let (owner, first) = cache.owner(key, &batch, physical, mapping);
                if let (Owner::Corrupt { owners, stored, computed }, true) = (&*owner, first) {
                    stats.corrupt_batches += 1;
                    warn!(
                        "Fetch of {topic_name} partition {}: the record batch at offsets {}..={} holds records of virtual \
                         partitions {owners:?} and fails its CRC-32C check (stored {stored:#010x}, computed {computed:#010x}): \
                         it is not split; those virtual partitions are answered CORRUPT_MESSAGE at offset {}",
                        physical.0,
                        h.base_offset,
                        h.last_offset(),
                        h.base_offset
                    );
                }
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
    /// Mixed batches failing their CRC-32C check, not split.
    pub corrupt_batches: u64,
}

/// What a virtual partition is answered instead of records when the next
/// batch it owns records of is mixed and fails its CRC-32C check
/// (`Owner::Corrupt`): CORRUPT_MESSAGE at that offset.
///
/// Why an error and not the batch: handing the damaged batch over as it
/// came would let the client's own CRC check speak (Java's `check.crcs`,
/// on by default), but librdkafka does not check by default and would
/// deliver the siblings' records of the batch as this partition's. Why
/// CORRUPT_MESSAGE and not KAFKA_STORAGE_ERROR: the Java consumer retries
/// a storage error silently forever, while CORRUPT_MESSAGE stops it at
/// this offset with "Encountered corrupt message when fetching offset N"
/// (its `FetchCollector`), as a corrupt batch read from Kafka directly
/// stops it, and librdkafka reports it to the application (code 2,
/// INVALID_MSG, "Broker: Invalid message") and retries. The application
/// sees the damage, can seek past it, and no sibling's records are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub stored: u32,
    pub computed: u32,
}

/// The records virtual partition `vp` receives, fetching from
/// `fetch_offset`. They stop before a corrupt batch holding records of
/// `vp` (the client moves up to it and fetches again); when that batch
/// comes first, the answer is the error.
pub fn records_for(
    batches: &[Classified<'_>],
    vp: i32,
    fetch_offset: i64,
    stats: &mut FilterStats,
) -> Result<Vec<u8>, CorruptBatch> {
    let mut out = Vec::new();
    // The run of foreign batches not yet written: (first offset, last
    // offset, leader epoch, first timestamp, max timestamp).
    let mut run: Option<(i64, i64, i32, i64, i64)> = None;
    // A run standing alone in the answer (nothing of `vp`'s own, no
    // transaction marker) is written as an empty control batch: librdkafka
    // reads a record set of empty data batches alone as a message too
    // large to fetch (see `records::empty_control_batch`).
    let flush = |run: &mut Option<(i64, i64, i32, i64, i64)>, out: &mut Vec<u8>, alone: bool| {
        if let Some((first, last, epoch, ts0, ts1)) = run.take() {
            let delta = (last - first).clamp(0, i32::MAX as i64) as i32;
            let empty = if alone { records::empty_control_batch } else { records::empty_batch };
            out.extend_from_slice(&empty(first, delta, epoch, ts0, ts1));
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
            Owner::Corrupt { owners, stored, computed } if owners.contains(&vp) => {
                let alone = out.is_empty();
                flush(&mut run, &mut out, alone);
                if out.is_empty() {
                    return Err(CorruptBatch {
                        base_offset: h.base_offset,
                        last_offset: h.last_offset(),
                        stored: *stored,
                        computed: *computed,
                    });
                }
                break;
            }
            Owner::Corrupt { .. } => None,
        };
        match own {
            Some(bytes) => {
                flush(&mut run, &mut out, false);
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
    let alone = out.is_empty();
    flush(&mut run, &mut out, alone);
    stats.bytes_returned += out.len() as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::{build_batch, BuildOptions, Compression, RecordData};

    /// Physical partition 0 of a 20-over-4 topic: VP 0 (untagged), 4, 8.
    const MAPPING: TopicMapping = TopicMapping { virtual_count: 20, physical_count: 4 };

    fn batch(base_offset: i64, tags: &[Option<&str>], compression: Compression) -> Vec<u8> {
        let recs: Vec<RecordData> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| RecordData {
                value: Some(format!("value {}", base_offset + i as i64).into_bytes()),
                headers: t.iter().map(|t| (TAG_HEADER.to_string(), Some(t.as_bytes().to_vec()))).collect(),
                offset_delta: i as i32,
                ..Default::default()
            })
            .collect();
        build_batch(&recs, &BuildOptions { base_offset, compression, ..Default::default() })
    }

    /// (base offset, last offset, record count, whether its CRC holds) of
    /// each batch of a view.
    fn shape(view: &[u8]) -> Vec<(i64, i64, i32, bool)> {
        records::batches(view)
            .map(|item| {
                let Ok(Item::Batch(b)) = item else { panic!("whole batches in a view") };
                (b.header.base_offset, b.header.last_offset(), b.header.records_count, records::verify_crc(&b))
            })
            .collect()
    }

    /// (base offset, last offset, whether it is a control batch) of each
    /// batch of a view.
    fn kinds(view: &[u8]) -> Vec<(i64, i64, bool)> {
        records::batches(view)
            .map(|item| {
                let Ok(Item::Batch(b)) = item else { panic!("whole batches in a view") };
                assert!(records::verify_crc(&b), "sealed: {:?}", b.header);
                (b.header.base_offset, b.header.last_offset(), b.header.is_control())
            })
            .collect()
    }

    /// What the soak found: a VP whose fetch finds only its siblings' new
    /// data must not be answered with empty data batches alone, which
    /// librdkafka reports as MSG_SIZE_TOO_LARGE; a run of siblings' data
    /// next to its own records stays an empty data batch.
    #[test]
    fn a_view_of_siblings_data_alone_is_an_empty_control_batch() {
        let codec = Compression::None;
        // Offsets 0..=1 VP 4, 2 VP 8, 3 VP 0, 4..=5 VP 4, then a partial
        // batch (cut at the byte limit) of VP 8 at 6..=7.
        let tail = batch(6, &[Some("8"), Some("8")], codec);
        let data = [
            batch(0, &[Some("4"), Some("4")], codec),
            batch(2, &[Some("8")], codec),
            batch(3, &[None], codec),
            batch(4, &[Some("4"), Some("4")], codec),
            tail[..tail.len() - 3].to_vec(),
        ]
        .concat();
        let cache = OwnerCache::default();
        let classified = classify(&data, "t", PhysicalPartition(0), &MAPPING, &cache, &mut FilterStats::default());
        assert_eq!(classified.len(), 4, "the partial batch is dropped");
        let view = |vp, from| kinds(&records_for(&classified, vp, from, &mut FilterStats::default()).unwrap());
        // From 3, VP 8 has no complete batch of its own: one empty control
        // batch spans 3..=5, the client fetches the partial one again from 6.
        assert_eq!(view(8, 3), vec![(3, 5, true)]);
        assert_eq!(view(0, 4), vec![(4, 5, true)]);
        // With records of its own, the placeholders stay data batches.
        assert_eq!(view(0, 0), vec![(0, 2, false), (3, 3, false), (4, 5, false)]);
        assert_eq!(view(8, 0), vec![(0, 1, false), (2, 2, false), (3, 5, false)]);
        assert_eq!(view(4, 2), vec![(2, 3, false), (4, 5, false)]);
        // Nothing at or past the fetch offset: an empty record set, as Kafka.
        assert_eq!(view(8, 6), vec![]);
    }

    #[test]
    fn a_mixed_batch_failing_its_crc_is_never_resealed() {
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let clean = batch(0, &[None, Some("4")], codec);
            // Offsets 2..=4: records of VP 0 and 4 in one batch; then a
            // clean batch of VP 8 and one of VP 0.
            let mixed = batch(2, &[None, Some("4"), Some("4")], codec);
            let after = [batch(5, &[Some("8")], codec), batch(6, &[None], codec)].concat();
            let mut bad_crc = mixed.clone();
            bad_crc[18] ^= 0x01;
            let mut bad_value = mixed.clone();
            let at = records::BATCH_OVERHEAD
                + mixed[records::BATCH_OVERHEAD..].windows(5).position(|w| w == b"value").unwrap_or(10);
            bad_value[at] ^= 0x20;
            for (damage, bad) in [("flipped CRC byte", bad_crc), ("flipped records byte", bad_value)] {
                let data = [clean.clone(), bad.clone(), after.clone()].concat();
                let cache = OwnerCache::default();
                let mut stats = FilterStats::default();
                let classified = classify(&data, "t", PhysicalPartition(0), &MAPPING, &cache, &mut stats);
                let readable = matches!(&*classified[1].owner, Owner::Corrupt { .. });
                if !readable {
                    // Damage that stops the records from decoding (gzip
                    // checks its own CRC-32) leaves nothing to split: the
                    // batch goes unchanged to the owner of untagged data,
                    // whose client's CRC check reports it.
                    assert_eq!(*classified[1].owner, Owner::Uniform(0), "{codec} {damage}");
                    assert!(damage != "flipped CRC byte" && codec != Compression::None, "{codec} {damage}");
                    let view = records_for(&classified, 0, 2, &mut stats).unwrap();
                    assert_eq!(&view[..bad.len()], &bad[..], "{codec} {damage}: handed over as it came");
                    continue;
                }
                assert_eq!(stats.corrupt_batches, 1, "{codec} {damage}: counted once");
                let again = classify(&data, "t", PhysicalPartition(0), &MAPPING, &cache, &mut stats);
                assert_eq!(again.len(), 4);
                assert_eq!(stats.corrupt_batches, 1, "{codec} {damage}: not counted again at a retried fetch");
                let stored = records::Batch::parse(&bad).unwrap().header.crc;
                let want = CorruptBatch { base_offset: 2, last_offset: 4, stored, computed: records::compute_crc(&bad) };
                for vp in [0, 4] {
                    // At the batch: the error, no records.
                    assert_eq!(records_for(&classified, vp, 2, &mut stats), Err(want), "{codec} {damage}: VP {vp}");
                    // From before it: its own record of the clean batch at
                    // 0..=1 (split, sound), then nothing: the view stops at
                    // the damaged batch, and the next fetch gets the error.
                    let view = records_for(&classified, vp, 0, &mut stats).unwrap();
                    assert_eq!(shape(&view), vec![(0, 1, 1, true)], "{codec} {damage}: VP {vp}");
                }
                // A sibling without records in it moves past it, to its own.
                let view = records_for(&classified, 8, 2, &mut stats).unwrap();
                assert_eq!(shape(&view), vec![(2, 4, 0, true), (5, 5, 1, true), (6, 6, 0, true)], "{codec} {damage}: VP 8");
            }
        }
    }
}
