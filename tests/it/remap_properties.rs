//! Properties of the partition arithmetic and of fetch filtering, over any
//! mapping and any sequence of batches.

use std::borrow::Cow;

use kpr_proxy::kafka::codec::{self, Value};
use kpr_proxy::kafka::records::{self, BuildOptions, Compression, Item, RecordData, TAG_HEADER};
use kpr_proxy::kafka::schema::{registry, FieldType, MessageKind, StructSchema};
use kpr_proxy::remap::fetch::{classify, records_for, FilterStats, OwnerCache};
use kpr_proxy::remap::mapping::{PhysicalPartition, TopicMapping, VirtualPartition};
use kpr_proxy::remap::produce::{rewrite_entry, ProducerIdSource, TagStats};
use proptest::prelude::*;

proptest! {
    /// Every virtual partition has exactly one (physical, k), and back.
    #[test]
    fn locate_is_a_bijection(p in 1i32..64, ratio in 2i32..64) {
        let m = TopicMapping::new(p * ratio, p);
        let mut seen = std::collections::HashSet::new();
        for v in 0..m.virtual_count {
            let (pp, k) = m.locate(VirtualPartition(v)).unwrap();
            prop_assert!(pp.0 >= 0 && pp.0 < p && k >= 0 && k < ratio);
            prop_assert_eq!(m.virtual_of(pp, k), VirtualPartition(v));
            prop_assert!(seen.insert((pp.0, k)));
        }
        prop_assert_eq!(m.locate(VirtualPartition(m.virtual_count)), None);
        prop_assert_eq!(m.locate(VirtualPartition(-1)), None);
    }

    /// Growing V while P stays keeps every existing virtual partition on
    /// its physical partition.
    #[test]
    fn growing_v_keeps_placement(p in 1i32..32, r1 in 2i32..16, extra in 1i32..16) {
        let small = TopicMapping::new(p * r1, p);
        let big = TopicMapping::new(p * (r1 + extra), p);
        for v in 0..small.virtual_count {
            prop_assert_eq!(small.locate(VirtualPartition(v)), big.locate(VirtualPartition(v)));
        }
    }
}

/// A record's tag: mostly a virtual partition of physical partition 0 of a
/// 12-over-3 topic (0, 3, 6, 9); sometimes one that no virtual partition
/// of it has: another physical partition's, out of range, negative (data
/// mirrored from a topic with another ratio, or hand-written).
fn tag_strategy() -> impl Strategy<Value = i32> {
    prop_oneof![3 => prop::sample::select(vec![0, 3, 6, 9]), 1 => -3i32..20]
}

/// A batch sequence: per batch, the tag of each record (None: untagged;
/// several distinct ones make a mixed batch, as a mirror writes them), the
/// codec, and whether it is a control batch.
fn batch_strategy() -> impl Strategy<Value = Vec<(Vec<Option<i32>>, u8, bool)>> {
    let uniform = (prop::option::of(tag_strategy()), 1usize..5).prop_map(|(tag, n)| vec![tag; n]);
    let mixed = prop::collection::vec(prop::option::of(tag_strategy()), 1..6);
    prop::collection::vec((prop_oneof![3 => uniform, 1 => mixed], 0u8..5, prop::bool::weighted(0.1)), 1..25)
}

/// Records of batch `i`, one per tag (None: untagged), valued "b<i>r<j>".
fn records_tagged(i: usize, tags: &[Option<i32>]) -> Vec<RecordData> {
    tags.iter()
        .enumerate()
        .map(|(j, tag)| RecordData {
            key: None,
            value: Some(format!("b{i}r{j}").into_bytes()),
            headers: tag.map(|t| vec![(TAG_HEADER.to_string(), Some(t.to_string().into_bytes()))]).unwrap_or_default(),
            timestamp_delta: j as i64,
            offset_delta: j as i32,
        })
        .collect()
}

/// The schema of one partition's entry in a Produce request.
fn produce_partition_schema() -> &'static StructSchema {
    let body = &registry().get(0, MessageKind::Request).expect("Produce is declared").body;
    let field = |s: &'static StructSchema, name: &str| -> &'static StructSchema {
        match &s.fields[s.index_of(name).expect("declared")].ty {
            FieldType::Array(inner) => match &**inner {
                FieldType::Struct(st) => st,
                other => panic!("{name}: {other:?}"),
            },
            other => panic!("{name}: {other:?}"),
        }
    };
    field(field(body, "topic_data"), "partition_data")
}

/// Producer ids are never asked for: the batches carry none.
struct NoProducerIds;

impl ProducerIdSource for NoProducerIds {
    fn derived(&mut self, _: (i64, i16), _: i32) -> Result<(i64, i16), String> {
        unreachable!("no idempotent batches here")
    }
    fn sequence_base(&mut self, _: i64, _: &str, _: i32, _: i32) -> Result<i32, String> {
        unreachable!("no idempotent batches here")
    }
}

fn codec(c: u8) -> Compression {
    [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][c as usize]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Physical partition 0 of a 12-over-3 topic (virtual 0, 3, 6, 9 live
    /// there): whatever the batches, including batches mixing several
    /// virtual partitions' records, each virtual partition's view holds
    /// exactly the records tagged for it (untagged ones, and those whose tag
    /// names no virtual partition of physical 0: virtual 0), at their own
    /// offsets,
    /// control batches reach everyone, and each view's batches cover every
    /// offset from the fetch offset to the end with no gap, so a consumer
    /// moves to the end however little of the data is its own.
    #[test]
    fn every_record_lands_in_exactly_one_virtual_partition(spec in batch_strategy(), start_at in 0usize..3) {
        let siblings = [0, 3, 6, 9];
        let mut blob = Vec::new();
        let mut offset = 0i64;
        let mut expected: std::collections::BTreeMap<i32, Vec<(i64, Vec<u8>)>> = Default::default();
        let mut batch_starts = Vec::new();
        for (i, (tags, c, control)) in spec.iter().enumerate() {
            let count = tags.len();
            let recs = records_tagged(i, tags);
            let opts = BuildOptions {
                base_offset: offset,
                compression: if *control { Compression::None } else { codec(*c) },
                control: *control,
                transactional: *control,
                producer_id: if *control { 7 } else { -1 },
                ..Default::default()
            };
            blob.extend(records::build_batch(&recs, &opts));
            batch_starts.push(offset);
            if !*control {
                for (j, (r, tag)) in recs.iter().zip(tags.iter()).enumerate() {
                    let owner = tag.filter(|t| siblings.contains(t)).unwrap_or(0);
                    expected.entry(owner).or_default().push((offset + j as i64, r.value.clone().unwrap()));
                }
            }
            offset += count as i64;
        }
        let end = offset;
        let fetch_offset = batch_starts[start_at.min(batch_starts.len() - 1)];
        let cache = OwnerCache::default();
        let classified = classify(&blob, "t", PhysicalPartition(0), &TopicMapping::new(12, 3), &cache, &mut FilterStats::default());
        let mut stats = FilterStats::default();
        for &vp in &siblings {
            let view = records_for(&classified, vp, fetch_offset, &mut stats).expect("sound batches");
            let mut got = Vec::new();
            let mut next = fetch_offset;
            for item in records::batches(&view) {
                let Item::Batch(b) = item.unwrap() else { panic!("partial batch in a view") };
                prop_assert!(records::verify_crc(&b));
                prop_assert_eq!(b.header.base_offset, next, "gap or overlap in the view of {}", vp);
                next = b.header.last_offset() + 1;
                if b.header.is_control() {
                    continue;
                }
                for r in records::records(&b).unwrap() {
                    got.push((b.header.base_offset + r.offset_delta as i64, r.value.unwrap()));
                }
            }
            prop_assert_eq!(next, end, "view of {} stops before the end", vp);
            let want: Vec<(i64, Vec<u8>)> = expected.get(&vp).cloned().unwrap_or_default().into_iter().filter(|(o, _)| *o >= fetch_offset).collect();
            prop_assert_eq!(got, want, "records of virtual partition {}", vp);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Whatever `kpr.vp` tags the records already carry (records read
    /// through the proxy and produced again with their headers, tags of
    /// siblings and of other physical partitions, garbage), what a client
    /// produces to a virtual partition is read back from that one alone:
    /// physical partition 0 of a 12-over-3 topic, produced to virtual 0
    /// (k = 0), 3, 6 or 9, then fetched as every sibling.
    #[test]
    fn records_are_read_from_the_virtual_partition_they_were_produced_to(
        spec in batch_strategy(),
        k in 0i32..4,
    ) {
        let mapping = TopicMapping::new(12, 3);
        let target = VirtualPartition(3 * k);
        let mut blob = Vec::new();
        let mut want = Vec::new();
        let mut offset = 0i64;
        for (i, (tags, c, _)) in spec.iter().enumerate() {
            let recs = records_tagged(i, tags);
            want.extend(recs.iter().map(|r| r.value.clone().unwrap()));
            let opts = BuildOptions { base_offset: offset, compression: codec(*c), ..Default::default() };
            blob.extend(records::build_batch(&recs, &opts));
            offset += recs.len() as i64;
        }
        let mut entry = codec::with_defaults(produce_partition_schema(), 7);
        entry.set("records", Value::Records(Some(Cow::Borrowed(&blob))));
        let mut stats = TagStats::default();
        rewrite_entry("t", &mut entry, &mapping, target, PhysicalPartition(0), k, &mut NoProducerIds, &mut stats)
            .unwrap();
        let Value::Records(Some(stored)) = entry.get("records") else { panic!("records kept") };
        let classified = classify(stored, "t", PhysicalPartition(0), &mapping, &OwnerCache::default(), &mut FilterStats::default());
        for vp in [0, 3, 6, 9] {
            let view = records_for(&classified, vp, 0, &mut FilterStats::default()).expect("sound batches");
            let mut got = Vec::new();
            for item in records::batches(&view) {
                let Item::Batch(b) = item.unwrap() else { panic!("partial batch in a view") };
                got.extend(records::records(&b).unwrap().into_iter().map(|r| r.value.unwrap()));
            }
            let expected = if vp == target.0 { want.clone() } else { Vec::new() };
            prop_assert_eq!(got, expected, "view of {} after producing to {}", vp, target.0);
        }
    }
}
