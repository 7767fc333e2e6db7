//! Record batches: the batches of a `records` field, and on each the
//! rewrites the proxy makes. Each batch's CRC-32C is set right before the
//! rewrites (fuzzed bytes would otherwise stop at the CRC check), and the
//! results are checked against `records`, the plain decode of every
//! record: tagging appends the header to each record, a subset holds the
//! records kept, owners follow the last tag header, and a batch built
//! from the decoded records decodes to them again.
#![no_main]

use kpr_proxy::kafka::records::{
    batches, build_batch, compute_crc, first_record_header, may_carry_header, record_owners, records,
    set_base_sequence, snappy_framing, subset_batch, tag_batch, verify_crc, Batch, BuildOptions, Item,
    RecordData, BATCH_OVERHEAD, TAG_HEADER,
};
use libfuzzer_sys::fuzz_target;

const TAG: &[u8] = b"7";

/// `owner_of` for `record_owners`: anything that tells tags apart.
fn owner_of(tag: Option<&[u8]>) -> i32 {
    tag.map_or(-1, |t| t.len() as i32)
}

fn last_tag(record: &RecordData) -> Option<&[u8]> {
    let (_, value) = record.headers.iter().rev().find(|(k, _)| k == TAG_HEADER)?;
    Some(value.as_deref().unwrap_or_default())
}

/// A re-sealed batch must be one whole batch with a valid CRC.
fn sealed<'a>(bytes: &'a [u8], what: &str) -> Batch<'a> {
    let batch = Batch::parse(bytes).unwrap_or_else(|e| panic!("{what} does not parse: {e}"));
    assert!(verify_crc(&batch), "{what} has a wrong CRC");
    batch
}

fn rewrites(batch: &Batch) {
    let decoded = records(batch);
    let owners = record_owners(batch, TAG_HEADER, &owner_of);
    let _ = first_record_header(batch, TAG_HEADER);
    let may_carry = may_carry_header(batch, TAG_HEADER);
    let Ok(decoded) = decoded else { return };
    if let Ok(owners) = owners {
        let want: Vec<i32> = decoded.iter().map(|r| owner_of(last_tag(r))).collect();
        assert_eq!(owners, want, "owners");
    }
    if decoded.iter().any(|r| last_tag(r).is_some()) {
        assert_ne!(may_carry, Ok(false), "a tagged record was missed");
    }
    if let Ok(tagged) = tag_batch(batch, TAG_HEADER, TAG, Some((1234, 5))) {
        let tagged = sealed(&tagged, "a tagged batch");
        let mut want = decoded.clone();
        for r in &mut want {
            r.headers.push((TAG_HEADER.to_string(), Some(TAG.to_vec())));
        }
        assert_eq!(records(&tagged).expect("a tagged batch decodes"), want, "tagged records");
    }
    if let Ok(subset) = subset_batch(batch, &|i| i % 2 == 0) {
        let subset = sealed(&subset, "a subset batch");
        let want: Vec<RecordData> = decoded.iter().step_by(2).cloned().collect();
        assert_eq!(records(&subset).expect("a subset decodes"), want, "subset records");
    }
    let Ok(compression) = batch.header.compression() else { return };
    let options = BuildOptions {
        compression,
        snappy_framing: snappy_framing(batch).unwrap_or_default(),
        base_offset: batch.header.base_offset,
        ..BuildOptions::default()
    };
    let built = build_batch(&decoded, &options);
    let built = sealed(&built, "a built batch");
    assert_eq!(records(&built).expect("a built batch decodes"), decoded, "built records");
}

fuzz_target!(|data: &[u8]| {
    for item in batches(data) {
        let Ok(Item::Batch(batch)) = item else { break };
        let _ = verify_crc(&batch);
        let mut fixed = batch.bytes.to_vec();
        if fixed.len() >= BATCH_OVERHEAD {
            let crc = compute_crc(&fixed);
            fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        let batch = Batch::parse(&fixed).expect("a batch parses again");
        rewrites(&batch);
        set_base_sequence(&mut fixed, 42);
    }
});
