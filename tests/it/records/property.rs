//! Property: tagging then classifying is lossless and exclusive.

use super::*;

// Property: tagging then classifying is lossless and exclusive

/// One produced batch: codec, number of records, the VP it is tagged for
/// (None: a k = 0 VP, forwarded untagged), and whether its records already
/// carry a stale tag (mirrored data).
#[derive(Debug, Clone)]
struct Produced {
    codec: (Compression, SnappyFraming),
    count: usize,
    vp: Option<u32>,
    stale_tag: bool,
    value_len: usize,
}

fn produced() -> impl Strategy<Value = Produced> {
    (0usize..6, 1usize..25, prop::option::of(8u32..1000), any::<bool>(), 0usize..300).prop_map(
        |(c, count, vp, stale_tag, value_len)| Produced {
            codec: all_codecs()[c],
            count,
            vp,
            stale_tag: stale_tag && vp.is_some(),
            value_len,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn tagging_then_classifying_puts_each_record_in_exactly_one_vp(plan in prop::collection::vec(produced(), 1..12)) {
        const DEFAULT_VP: u32 = 3; // the PP's own VP (k = 0)
        let mut log = Vec::new();
        let mut offset = 0i64;
        let mut want: BTreeMap<u64, u32> = BTreeMap::new();
        let mut id = 0u64;
        for p in &plan {
            let recs: Vec<RecordData> = (0..p.count)
                .map(|i| {
                    id += 1;
                    want.insert(id, p.vp.unwrap_or(DEFAULT_VP));
                    let mut headers = vec![];
                    if p.stale_tag {
                        headers.push((TAG_HEADER.to_string(), Some(b"5".to_vec())));
                    }
                    let mut value = id.to_be_bytes().to_vec();
                    value.extend(value_bytes(id, p.value_len));
                    RecordData { value: Some(value), headers, offset_delta: i as i32, timestamp_delta: i as i64, ..Default::default() }
                })
                .collect();
            let mut o = opts(p.codec.0, p.codec.1);
            o.base_offset = offset;
            let built = build_batch(&recs, &o);
            let batch = match p.vp {
                Some(vp) => tag_batch(&parse_one(&built), TAG_HEADER, vp.to_string().as_bytes(), None).unwrap(),
                None => built,
            };
            offset += p.count as i64;
            log.extend(batch);
        }

        // Classify as the fetch path does: by the first record's tag only.
        let mut got: BTreeMap<u64, u32> = BTreeMap::new();
        let mut next_offset = 0;
        for item in batches(&log) {
            let Item::Batch(b) = item.unwrap() else { panic!("partial") };
            prop_assert!(verify_crc(&b));
            prop_assert_eq!(b.header.base_offset, next_offset);
            next_offset = b.header.next_offset();
            let vp = match first_record_header(&b, TAG_HEADER).unwrap() {
                Some(v) => std::str::from_utf8(&v).unwrap().parse::<u32>().unwrap(),
                None => DEFAULT_VP,
            };
            for r in records(&b).unwrap() {
                let rid = u64::from_be_bytes(r.value.unwrap()[..8].try_into().unwrap());
                // Every record of the batch carries the batch's tag last.
                let last = r.headers.iter().rev().find(|(k, _)| k == TAG_HEADER).map(|(_, v)| v.clone().unwrap());
                prop_assert_eq!(last.map(|v| String::from_utf8(v).unwrap().parse::<u32>().unwrap()).unwrap_or(DEFAULT_VP), vp);
                prop_assert!(got.insert(rid, vp).is_none(), "record {} classified twice", rid);
            }
        }
        prop_assert_eq!(next_offset, offset);
        prop_assert_eq!(got, want);
    }
}
