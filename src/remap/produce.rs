//! Produce to a virtual partition: the batch goes to physical partition
//! `p`; if `k ≥ 1`, every record is tagged with the `kpr.vp` header, and an
//! idempotent producer's id is replaced by one of its own per sibling index
//! so that sequence numbers (per producer id and partition) never collide
//! on the physical partition. k = 0 batches go as they came, unless their
//! records carry a tag naming a sibling (see `retag_foreign`). A batch that
//! is rewritten must pass its CRC-32C check first (`refuse_corrupt`).

use std::borrow::Cow;


use crate::kafka::api::ErrorCode;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::produce_request::topic_data::partition_data::RECORDS;
use crate::kafka::records::{self, Item, RecordError, TAG_HEADER};

use super::fetch::owner_of_tag;
use super::mapping::{PhysicalPartition, TopicMapping, VirtualPartition};
use super::split::Refusal;

/// Counts of what a rewrite did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TagStats {
    pub batches: u64,
    pub records: u64,
    /// Batches refused because their CRC-32C did not match their bytes.
    pub corrupt: u64,
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

/// Bytes the tag adds to each record of virtual partition `v`: the
/// header's key and value, each after a one-byte length varint.
pub fn tag_overhead(v: VirtualPartition) -> usize {
    records::encoded_header_len(TAG_HEADER, v.0.to_string().as_bytes())
}

/// The message for a tagged entry the broker refused as too large
/// (MESSAGE_TOO_LARGE or RECORD_LIST_TOO_LARGE): the tag may be why.
pub fn too_large_message(topic: &str, v: VirtualPartition, physical_count: i32) -> String {
    let digits = v.0.to_string().len();
    format!(
        "the broker refused the records of topic {topic} virtual partition {} as too large: kpr-proxy tags each \
         record of it with the {TAG_HEADER} header, which adds {} bytes per record (key {TAG_HEADER:?}, 6 bytes, and \
         value \"{}\", {digits} bytes, each after a 1-byte length; the record's length may take 1 byte more), so \
         records near the topic's max.message.bytes fit only on untagged virtual partitions 0..{}",
        v.0,
        tag_overhead(v),
        v.0,
        physical_count - 1
    )
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
    let data = match entry.value(RECORDS) {
        Value::Records(Some(d)) if !d.is_empty() => d.clone(),
        _ => return Ok(()),
    };
    if let Some(magic) = records::first_magic(&data) {
        if magic != 2 {
            return Err((
                ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT,
                format!(
                    "record format v{magic} cannot carry the {TAG_HEADER} header: remapped topics need v2 record batches \
                     (magic 2, Kafka 0.11+ clients)"
                ),
            ));
        }
    }
    let tag = v.0.to_string();
    if k == 0 {
        if let Some(retagged) = retag_foreign(topic, &data, mapping, v, p, &tag, stats)? {
            entry.write(RECORDS, Some(Cow::Owned(retagged)));
        }
        return Ok(());
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    let mut tagged_count = TagStats::default();
    let mut walked = records::batches(&data);
    while let Some(item) = walked.next() {
        let batch = match item {
            Ok(Item::Batch(b)) => b,
            Ok(Item::Partial(_)) => {
                return Err((ErrorCode::CORRUPT_MESSAGE, "produce request ends inside a record batch".into()));
            }
            Err(e) => return Err((ErrorCode::CORRUPT_MESSAGE, format!("malformed record batch: {e}"))),
        };
        // Before anything is read from the header (the attributes and
        // producer fields are covered by the CRC too), and before a
        // producer id is asked for.
        let checked = records::crc_checked(&batch)
            .map_err(|e| refuse_corrupt(topic, v, &e, &data[walked.position()..], stats))?;
        if batch.header.is_transactional() {
            return Err((
                ErrorCode::INVALID_TXN_STATE,
                format!(
                    "transactional produce to virtual partition {} is not supported: transactions work on 1:1 topics and \
                     partitions 0..P-1 of remapped topics",
                    v.0
                ),
            ));
        }
        let producer = if batch.header.producer_id >= 0 {
            Some(ids.derived((batch.header.producer_id, batch.header.producer_epoch), k).map_err(|e| {
                (ErrorCode::KAFKA_STORAGE_ERROR, format!("cannot obtain a producer id for virtual partition {}: {e}", v.0))
            })?)
        } else {
            None
        };
        let mut tagged = Vec::new();
        records::tag_checked_into(checked, TAG_HEADER, tag.as_bytes(), producer, &mut tagged)
            .map_err(|e| (ErrorCode::CORRUPT_MESSAGE, format!("cannot tag record batch: {e}")))?;
        if let (Some((derived, _)), true) = (producer, batch.header.base_sequence >= 0) {
            let sequence = batch.header.base_sequence;
            let base = ids.sequence_base(derived, topic, p.0, sequence).map_err(|e| {
                (ErrorCode::KAFKA_STORAGE_ERROR, format!("cannot obtain a sequence base for virtual partition {}: {e}", v.0))
            })?;
            records::set_base_sequence(&mut tagged, renumber(sequence, base));
        }
        tagged_count.batches += 1;
        tagged_count.records += batch.header.records_count.max(0) as u64;
        out.extend_from_slice(&tagged);
    }
    // Counted only now: an entry refused by a later batch sends nothing.
    stats.batches += tagged_count.batches;
    stats.records += tagged_count.records;
    entry.write(RECORDS, Some(Cow::Owned(out)));
    Ok(())
}

/// The refusal of an entry holding a batch that failed its CRC-32C check
/// (`failed`): CORRUPT_MESSAGE, as Kafka answers it (`LogValidator` →
/// `DefaultRecordBatch.ensureValid` → `CorruptRecordException`), naming the
/// topic, the virtual partition and both CRCs. Nothing of the entry goes
/// upstream, so every batch of it that fails the check is counted: the
/// failed one and those in `rest`, the bytes after it.
fn refuse_corrupt(topic: &str, v: VirtualPartition, failed: &RecordError, rest: &[u8], stats: &mut TagStats) -> Refusal {
    let more = records::batches(rest)
        .filter(|item| matches!(item, Ok(Item::Batch(b)) if !records::verify_crc(b)))
        .count() as u64;
    stats.corrupt += 1 + more;
    let detail = match failed {
        RecordError::Crc { stored, computed } => format!("CRC-32C stored {stored:#010x}, computed {computed:#010x}"),
        other => other.to_string(),
    };
    (
        ErrorCode::CORRUPT_MESSAGE,
        format!(
            "record batch for topic {topic} virtual partition {} is corrupt ({detail}): its bytes do not match its stored \
             CRC; nothing of this partition was written",
            v.0
        ),
    )
}

/// A k = 0 batch whose records carry a `kpr.vp` tag naming a sibling on
/// this physical partition would show in that sibling, not in `v`: records
/// read through the proxy keep their tag, and Kafka Streams, mirrors and
/// many applications produce them again with their headers. Such a batch is
/// tagged for `v`; the appended tag is the last, and the last one decides.
/// Every other batch keeps its bytes; `None` when none was tagged. Batches
/// that do not parse are left for the broker to refuse, as they would be
/// without the proxy. A batch to be tagged must pass its CRC-32C check
/// (only those: the others go as they came, and the broker checks them);
/// one that fails refuses the entry with CORRUPT_MESSAGE.
fn retag_foreign(
    topic: &str,
    data: &[u8],
    mapping: &TopicMapping,
    v: VirtualPartition,
    p: PhysicalPartition,
    tag: &str,
    stats: &mut TagStats,
) -> Result<Option<Vec<u8>>, Refusal> {
    let mut out: Option<Vec<u8>> = None;
    let mut tagged_count = TagStats::default();
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
            records::tag_batch_into(&batch, TAG_HEADER, tag.as_bytes(), None, buf).map_err(|e| match e {
                RecordError::Crc { .. } => refuse_corrupt(topic, v, &e, &data[done + len..], stats),
                e => (ErrorCode::CORRUPT_MESSAGE, format!("cannot tag record batch: {e}")),
            })?;
            copied = done + len;
            tagged_count.batches += 1;
            tagged_count.records += batch.header.records_count.max(0) as u64;
        }
        done += len;
    }
    stats.batches += tagged_count.batches;
    stats.records += tagged_count.records;
    Ok(out.map(|mut buf| {
        buf.extend_from_slice(&data[copied..]);
        buf
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::fields::members;
    use crate::kafka::fields::produce_request::{self, topic_data};
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
        owners_on(data, mapping, P0)
    }

    fn owners_on(data: &[u8], mapping: &TopicMapping, physical: PhysicalPartition) -> Vec<i32> {
        records::batches(data)
            .flat_map(|item| {
                let Ok(Item::Batch(b)) = item else { panic!("whole batches") };
                record_owners(&b, TAG_HEADER, &|t| owner_of_tag(t, physical, mapping)).unwrap()
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
                assert_eq!(retag_foreign("t", &data, &m, V0, P0, "0", &mut stats).unwrap(), None, "{codec} {tags:?}");
                assert_eq!(stats, TagStats::default());
            }
            // Tag 4 names VP 4, which lives on physical partition 0 too.
            let clean = batch(0, &[None, None], codec);
            let stale = batch(2, &[None, Some("4"), Some("8")], codec);
            let data = [clean.clone(), stale].concat();
            assert_eq!(owners(&data, &m), vec![0, 0, 0, 4, 8], "{codec}: before");
            let mut stats = TagStats::default();
            let out = retag_foreign("t", &data, &m, V0, P0, "0", &mut stats).unwrap().expect("re-tagged");
            assert_eq!(owners(&out, &m), vec![0; 5], "{codec}: after");
            assert_eq!(&out[..clean.len()], &clean[..], "{codec}: the clean batch keeps its bytes");
            assert_eq!(stats, TagStats { batches: 1, records: 3, corrupt: 0 });
        }
    }

    #[test]
    fn k0_bytes_after_the_last_whole_batch_are_kept() {
        let m = TopicMapping::new(20, 4);
        let stale = batch(0, &[Some("4")], Compression::None);
        let data = [stale.clone(), stale[..20].to_vec()].concat();
        let out = retag_foreign("t", &data, &m, V0, P0, "0", &mut TagStats::default()).unwrap().expect("re-tagged");
        assert_eq!(&out[out.len() - 20..], &stale[..20], "a cut tail is left for the broker to refuse");
    }

    /// A producer id source for tests: derived ids are the client's plus
    /// 1000·k (the real one asks the broker; nothing here depends on it).
    struct FixedIds;
    impl ProducerIdSource for FixedIds {
        fn derived(&mut self, client: (i64, i16), k: i32) -> Result<(i64, i16), String> {
            Ok((client.0 + 1000 * k as i64, 0))
        }
        fn sequence_base(&mut self, _: i64, _: &str, _: i32, first_seen: i32) -> Result<i32, String> {
            Ok(first_seen)
        }
    }

    /// The ways a batch is damaged in transit: a CRC byte, or a byte of
    /// the records (then the stored CRC no longer matches). The records
    /// byte is a letter of a value where the (compressed) bytes show one,
    /// so that the records still decode, only wrong.
    fn damaged(clean: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let mut crc = clean.to_vec();
        crc[18] ^= 0x01;
        let mut body = clean.to_vec();
        let records = &clean[records::BATCH_OVERHEAD..];
        let at = records::BATCH_OVERHEAD
            + records.windows(5).position(|w| w == b"value").unwrap_or(records.len() / 2);
        body[at] ^= 0x20;
        vec![("flipped CRC byte", crc), ("flipped records byte", body)]
    }

    /// A produce request (v8) of `topic` with one entry per (partition, records).
    fn produce_request(topic: &str, entries: &[(i32, &[u8])]) -> Struct<'static> {
        use crate::kafka::codec;
        let schema = &crate::kafka::message::request_schema(0).unwrap().body;
        let ts = members(schema, produce_request::TOPIC_DATA);
        let ps = members(ts, topic_data::PARTITION_DATA);
        let mut req = codec::with_defaults(schema, 8);
        req.write(produce_request::ACKS, -1);
        let mut t = codec::with_defaults(ts, 8);
        t.write(topic_data::NAME, topic.to_string());
        let parts = entries
            .iter()
            .map(|(p, data)| {
                let mut e = codec::with_defaults(ps, 8);
                e.write(topic_data::partition_data::INDEX, *p);
                e.write(RECORDS, Some(Cow::Owned(data.to_vec())));
                e
            })
            .collect::<Vec<_>>();
        t.write(topic_data::PARTITION_DATA, parts);
        req.write(produce_request::TOPIC_DATA, vec![t]);
        req
    }

    /// Per round sent upstream: (physical partition, records) of each entry.
    type Rounds = Vec<Vec<(i32, Vec<u8>)>>;

    /// Run the produce rewrite over a request as the proxy does: what goes
    /// upstream and where each client entry went.
    fn rewrite(m: TopicMapping, req: &Struct<'static>, stats: &mut TagStats) -> (Rounds, Vec<super::super::split::Placement>) {
        use super::super::mapping::Decision;
        use super::super::split::{split, PRODUCE_REQUEST};
        let mut ids = FixedIds;
        let s = split(req, &PRODUCE_REQUEST, &|_: &str| Decision::Remap(m), &mut |topic, entry, m, v, p, k| {
            rewrite_entry(topic, entry, &m, v, p, k, &mut ids, stats)
        });
        let rounds = s
            .rounds
            .iter()
            .map(|r| {
                r.iter(produce_request::TOPIC_DATA)
                    .flat_map(|t| t.iter(topic_data::PARTITION_DATA))
                    .map(|e| {
                        let data = e.read(RECORDS).unwrap_or_default().to_vec();
                        (e.read(topic_data::partition_data::INDEX).unwrap(), data)
                    })
                    .collect()
            })
            .collect();
        (rounds, s.topics.into_iter().next().unwrap().1)
    }

    fn refusal(placement: &super::super::split::Placement) -> Option<(ErrorCode, &str)> {
        match &placement.dest {
            super::super::split::Dest::Local { error_code, message } => Some((*error_code, message.as_str())),
            _ => None,
        }
    }

    #[test]
    fn k1_batches_failing_their_crc_are_refused_not_resealed() {
        // Kafka checks every batch's CRC-32C on produce (LogValidator →
        // DefaultRecordBatch.ensureValid) and answers CORRUPT_MESSAGE for
        // the partition. Tagging re-seals the batch with a fresh CRC, so a
        // damaged batch must be refused before it is tagged.
        let m = TopicMapping::new(20, 4);
        for codec in Compression::ALL {
            let clean = {
                let recs: Vec<RecordData> = (0..5)
                    .map(|i| RecordData {
                        key: Some(format!("key {i}").into_bytes()),
                        value: Some(format!("a value long enough to be worth compressing {i} {i} {i}").into_bytes()),
                        offset_delta: i,
                        ..Default::default()
                    })
                    .collect();
                build_batch(&recs, &BuildOptions { producer_id: 7, producer_epoch: 0, base_sequence: 0, compression: codec, ..Default::default() })
            };
            for (damage, bad) in damaged(&clean) {
                let b = records::Batch::parse(&bad).unwrap();
                let computed = records::compute_crc(&bad);
                assert_ne!(computed, b.header.crc, "{codec} {damage}: the damage shows in the CRC");
                // VP 5 is k = 1 on physical 1; VP 2 (k = 0) in the same
                // request is clean and goes on.
                let other = batch(0, &[None], Compression::None);
                let req = produce_request("t", &[(5, &bad), (2, &other)]);
                let mut stats = TagStats::default();
                let (rounds, placements) = rewrite(m, &req, &mut stats);
                let (code, message) = refusal(&placements[0]).unwrap_or_else(|| panic!("{codec} {damage}: not refused"));
                assert_eq!(code, ErrorCode::CORRUPT_MESSAGE, "{codec} {damage}: {message}");
                for needle in ["CRC-32C", "topic t", "virtual partition 5", &format!("{:#010x}", b.header.crc), &format!("{computed:#010x}")] {
                    assert!(message.contains(needle), "{codec} {damage}: {message:?} does not name {needle:?}");
                }
                assert_eq!(rounds, vec![vec![(2, other.clone())]], "{codec} {damage}: only the clean partition goes upstream");
                assert_eq!(refusal(&placements[1]), None, "{codec} {damage}");
                assert_eq!(stats, TagStats { batches: 0, records: 0, corrupt: 1 }, "{codec} {damage}");
            }
            // The clean batch itself is tagged, with a valid CRC.
            let req = produce_request("t", &[(5, &clean)]);
            let mut stats = TagStats::default();
            let (rounds, placements) = rewrite(m, &req, &mut stats);
            assert_eq!(refusal(&placements[0]), None, "{codec} clean");
            let tagged = records::Batch::parse(&rounds[0][0].1).unwrap();
            records::check_crc(&tagged).unwrap();
            assert_eq!(owners_on(&rounds[0][0].1, &m, PhysicalPartition(1)), vec![5; 5], "{codec} clean");
            assert_eq!(stats, TagStats { batches: 1, records: 5, corrupt: 0 }, "{codec} clean");
        }
    }

    #[test]
    fn every_corrupt_batch_of_a_refused_entry_is_counted() {
        let m = TopicMapping::new(20, 4);
        let mut bad = batch(0, &[None, None], Compression::Lz4);
        bad[20] ^= 0xff;
        let good = batch(2, &[None], Compression::Lz4);
        let data = [good, bad.clone(), bad].concat();
        let mut stats = TagStats::default();
        let (rounds, placements) = rewrite(m, &produce_request("t", &[(6, &data)]), &mut stats);
        assert_eq!(refusal(&placements[0]).map(|r| r.0), Some(ErrorCode::CORRUPT_MESSAGE));
        assert!(rounds.is_empty(), "nothing of the partition goes upstream: {rounds:?}");
        assert_eq!(stats.corrupt, 2);
        assert_eq!(stats.batches, 0, "nothing was tagged");
    }

    #[test]
    fn k0_batches_failing_their_crc_are_refused_only_when_they_would_be_retagged() {
        let m = TopicMapping::new(20, 4);
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            // Records tagged for VP 4 (a sibling on physical 0), produced
            // to VP 0: re-tagging them would re-seal the damage.
            let stale = batch(0, &[Some("4"), Some("8")], codec);
            for (damage, bad) in damaged(&stale) {
                let mut stats = TagStats::default();
                let (rounds, placements) = rewrite(m, &produce_request("t", &[(0, &bad)]), &mut stats);
                // Damage that stops the records from decoding (gzip checks
                // its own CRC-32) also hides the tag: such a batch is not
                // rewritten but forwarded as it came, for the broker to check.
                let readable = records::record_owners(&records::Batch::parse(&bad).unwrap(), TAG_HEADER, &|_| 0).is_ok();
                if !readable {
                    assert_eq!(rounds, vec![vec![(0, bad.clone())]], "{codec} {damage}: unreadable, bytes unchanged");
                    assert!(damage != "flipped CRC byte" && codec != Compression::None, "{codec} {damage}: readable");
                    continue;
                }
                let (code, message) =
                    refusal(&placements[0]).unwrap_or_else(|| panic!("{codec} {damage}: forwarded {rounds:?}"));
                assert_eq!(code, ErrorCode::CORRUPT_MESSAGE, "{codec} {damage}: {message}");
                assert!(message.contains("CRC-32C") && message.contains("virtual partition 0"), "{codec} {damage}: {message}");
                assert!(rounds.is_empty(), "{codec} {damage}");
                assert_eq!(stats, TagStats { batches: 0, records: 0, corrupt: 1 }, "{codec} {damage}");
            }
            // Untagged k = 0 data is not rewritten: forwarded as its bytes,
            // damage included, for the broker to check (Kafka refuses it
            // with CORRUPT_MESSAGE; the proxy adds no cost and no opinion).
            let plain = batch(0, &[None, None], codec);
            for (damage, bad) in damaged(&plain) {
                let mut stats = TagStats::default();
                let (rounds, placements) = rewrite(m, &produce_request("t", &[(0, &bad)]), &mut stats);
                assert_eq!(refusal(&placements[0]), None, "{codec} {damage}");
                assert_eq!(rounds, vec![vec![(0, bad.clone())]], "{codec} {damage}: bytes unchanged");
                assert_eq!(stats, TagStats::default(), "{codec} {damage}");
            }
        }
    }

    #[test]
    fn renumbering_wraps_like_kafka_sequences() {
        assert_eq!(renumber(5, 5), 0);
        assert_eq!(renumber(12, 5), 7);
        assert_eq!(renumber(0, 0), 0);
        // The client wrapped from i32::MAX to 0 after the base.
        assert_eq!(renumber(2, i32::MAX - 1), 4);
    }

    #[test]
    fn tag_overhead_counts_the_header_as_encoded() {
        // 1 + "kpr.vp" + 1 + digits
        assert_eq!(tag_overhead(VirtualPartition(7)), 9);
        assert_eq!(tag_overhead(VirtualPartition(31)), 10);
        assert_eq!(tag_overhead(VirtualPartition(12345)), 13);
        let m = too_large_message("t", VirtualPartition(31), 2);
        assert!(m.contains("adds 10 bytes per record") && m.contains("0..1") && m.contains("max.message.bytes"), "{m}");
    }
}
