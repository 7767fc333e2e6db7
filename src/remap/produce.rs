//! Produce to a virtual partition: the batch goes to physical partition
//! `p`; if `k ≥ 1`, every record is tagged with the `kpr.vp` header, and an
//! idempotent producer's id is replaced by one of its own per sibling index
//! so that sequence numbers (per producer id and partition) never collide
//! on the physical partition. k = 0 batches go as they came, unless their
//! records carry a tag naming a sibling (see `retag_foreign`).

use std::borrow::Cow;


use crate::kafka::api::error;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::records::{self, Item, TAG_HEADER};

use super::fetch::owner_of_tag;
use super::mapping::{PhysicalPartition, TopicMapping, VirtualPartition};
use super::split::Refusal;

/// Counts of what a rewrite did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TagStats {
    pub batches: u64,
    pub records: u64,
}

/// Where producer ids for k ≥ 1 come from: the broker (InitProducerId with
/// no transactional id), once per (client id, epoch, k) for every proxy
/// instance, through the producer-id topic (`remap::producer_ids`).
pub trait ProducerIdSource {
    fn derived(&mut self, client: (i64, i16), k: i32) -> Result<(i64, i16), String>;

    /// The client sequence that is sequence 0 of `derived` on (topic,
    /// physical partition): the first one seen there, by any instance.
    fn sequence_base(&mut self, derived: i64, topic: &str, physical: i32, first_seen: i32) -> Result<i32, String>;
}

/// A client sequence renumbered from `base` (sequences wrap from
/// i32::MAX to 0, as Kafka's do).
pub fn renumber(sequence: i32, base: i32) -> i32 {
    (sequence as i64 - base as i64).rem_euclid(i32::MAX as i64 + 1) as i32
}

/// A producer's (id, epoch).
pub type ProducerIdEpoch = (i64, i16);

/// Rewrite the records of one produce entry of `topic` bound for virtual
/// partition `v` (already re-indexed to `p`).
///
/// Sequences of a derived producer id are renumbered per physical
/// partition from the first client sequence any instance saw there (0 for
/// a producer that starts with its mapping, so sequences pass through). A
/// retried batch keeps its number wherever it is retried, so the broker's
/// duplicate detection still works; and a derived id new to the broker
/// starts at 0, which every broker accepts (Kafka accepts any first
/// sequence from an id it has no state for; Tansu wants 0).
#[allow(clippy::too_many_arguments)]
pub fn rewrite_entry(
    topic: &str,
    entry: &mut Struct<'_>,
    mapping: &TopicMapping,
    v: VirtualPartition,
    p: PhysicalPartition,
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
    let tag = v.0.to_string();
    if k == 0 {
        if let Some(retagged) = retag_foreign(&data, mapping, v, p, &tag, stats)? {
            entry.set("records", Value::Records(Some(Cow::Owned(retagged))));
        }
        return Ok(());
    }
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
        let mut tagged = records::tag_batch(&batch, TAG_HEADER, tag.as_bytes(), producer)
            .map_err(|e| (error::CORRUPT_MESSAGE, format!("cannot tag record batch: {e}")))?;
        if let (Some((derived, _)), true) = (producer, batch.header.base_sequence >= 0) {
            let sequence = batch.header.base_sequence;
            let base = ids.sequence_base(derived, topic, p.0, sequence).map_err(|e| {
                (error::KAFKA_STORAGE_ERROR, format!("cannot obtain a sequence base for virtual partition {}: {e}", v.0))
            })?;
            records::set_base_sequence(&mut tagged, renumber(sequence, base));
        }
        stats.batches += 1;
        stats.records += batch.header.records_count.max(0) as u64;
        out.extend_from_slice(&tagged);
    }
    entry.set("records", Value::Records(Some(Cow::Owned(out))));
    Ok(())
}

/// A k = 0 batch whose records carry a `kpr.vp` tag naming a sibling on
/// this physical partition would show in that sibling, not in `v`: records
/// read through the proxy keep their tag, and Kafka Streams, mirrors and
/// many applications produce them again with their headers. Such a batch is
/// tagged for `v`; the appended tag is the last, and the last one decides.
/// Every other batch keeps its bytes; `None` when none was tagged. Batches
/// that do not parse are left for the broker to refuse, as they would be
/// without the proxy.
fn retag_foreign(
    data: &[u8],
    mapping: &TopicMapping,
    v: VirtualPartition,
    p: PhysicalPartition,
    tag: &str,
    stats: &mut TagStats,
) -> Result<Option<Vec<u8>>, Refusal> {
    let mut out: Option<Vec<u8>> = None;
    let mut done = 0; // bytes of `data` walked so far
    let mut copied = 0; // bytes of `data` copied into `out`
    for item in records::batches(data) {
        let Ok(Item::Batch(batch)) = item else { break };
        let len = batch.bytes.len();
        let foreign = !batch.header.is_control()
            && records::may_carry_header(&batch, TAG_HEADER).unwrap_or(false)
            && records::record_owners(&batch, TAG_HEADER, &|t| owner_of_tag(t, p, mapping))
                .is_ok_and(|owners| owners.iter().any(|&o| o != v.0));
        if foreign {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(data.len() + data.len() / 8 + 64));
            buf.extend_from_slice(&data[copied..done]);
            records::tag_batch_into(&batch, TAG_HEADER, tag.as_bytes(), None, buf)
                .map_err(|e| (error::CORRUPT_MESSAGE, format!("cannot tag record batch: {e}")))?;
            copied = done + len;
            stats.batches += 1;
            stats.records += batch.header.records_count.max(0) as u64;
        }
        done += len;
    }
    Ok(out.map(|mut buf| {
        buf.extend_from_slice(&data[copied..]);
        buf
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::{build_batch, record_owners, BuildOptions, Compression, RecordData};

    const V0: VirtualPartition = VirtualPartition(0);
    const P0: PhysicalPartition = PhysicalPartition(0);

    fn batch(base_offset: i64, tags: &[Option<&str>], compression: Compression) -> Vec<u8> {
        let recs: Vec<RecordData> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| RecordData {
                value: Some(format!("value {i}").into_bytes()),
                headers: t.iter().map(|t| (TAG_HEADER.to_string(), Some(t.as_bytes().to_vec()))).collect(),
                offset_delta: i as i32,
                ..Default::default()
            })
            .collect();
        build_batch(&recs, &BuildOptions { base_offset, compression, ..Default::default() })
    }

    fn owners(data: &[u8], mapping: &TopicMapping) -> Vec<i32> {
        records::batches(data)
            .flat_map(|item| {
                let Ok(Item::Batch(b)) = item else { panic!("whole batches") };
                record_owners(&b, TAG_HEADER, &|t| owner_of_tag(t, P0, mapping)).unwrap()
            })
            .collect()
    }

    #[test]
    fn k0_batches_keep_their_bytes_unless_a_tag_names_a_sibling() {
        let m = TopicMapping::new(20, 4);
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            // Untagged, tagged for itself, tagged for another physical
            // partition's VP (shown in VP 0 anyway): nothing to do.
            for tags in [vec![None, None], vec![Some("0"), None], vec![Some("5"), Some("garbage")]] {
                let mut stats = TagStats::default();
                let data = batch(0, &tags, codec);
                assert_eq!(retag_foreign(&data, &m, V0, P0, "0", &mut stats).unwrap(), None, "{codec} {tags:?}");
                assert_eq!(stats, TagStats::default());
            }
            // Tag 4 names VP 4, which lives on physical partition 0 too.
            let clean = batch(0, &[None, None], codec);
            let stale = batch(2, &[None, Some("4"), Some("8")], codec);
            let data = [clean.clone(), stale].concat();
            assert_eq!(owners(&data, &m), vec![0, 0, 0, 4, 8], "{codec}: before");
            let mut stats = TagStats::default();
            let out = retag_foreign(&data, &m, V0, P0, "0", &mut stats).unwrap().expect("re-tagged");
            assert_eq!(owners(&out, &m), vec![0; 5], "{codec}: after");
            assert_eq!(&out[..clean.len()], &clean[..], "{codec}: the clean batch keeps its bytes");
            assert_eq!(stats, TagStats { batches: 1, records: 3 });
        }
    }

    #[test]
    fn k0_bytes_after_the_last_whole_batch_are_kept() {
        let m = TopicMapping::new(20, 4);
        let stale = batch(0, &[Some("4")], Compression::None);
        let data = [stale.clone(), stale[..20].to_vec()].concat();
        let out = retag_foreign(&data, &m, V0, P0, "0", &mut TagStats::default()).unwrap().expect("re-tagged");
        assert_eq!(&out[out.len() - 20..], &stale[..20], "a cut tail is left for the broker to refuse");
    }

    #[test]
    fn renumbering_wraps_like_kafka_sequences() {
        assert_eq!(renumber(5, 5), 0);
        assert_eq!(renumber(12, 5), 7);
        assert_eq!(renumber(0, 0), 0);
        // The client wrapped from i32::MAX to 0 after the base.
        assert_eq!(renumber(2, i32::MAX - 1), 4);
    }
}
