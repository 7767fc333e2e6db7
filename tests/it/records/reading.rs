//! Reading batches: the first record's header, empty batches, concatenated and legacy message sets, corrupt lengths, decompression bombs.

use super::*;

// first_record_header

#[test]
fn first_record_header_for_every_codec_and_untagged_batches() {
    for (codec, framing) in all_codecs() {
        let bytes = build_batch(&sample_records(10, 30), &opts(codec, framing));
        let b = parse_one(&bytes);
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), None, "{codec}: untagged");
        // Record 0 has no headers; make the first one carry some.
        let mut recs = sample_records(10, 30);
        recs.rotate_left(2);
        let bytes = build_batch(&recs, &opts(codec, framing));
        let b = parse_one(&bytes);
        assert_eq!(first_record_header(&b, "b").unwrap(), Some(b"bee".to_vec()));
        assert_eq!(first_record_header(&b, "a").unwrap(), Some(vec![]));
        assert_eq!(first_record_header(&b, "ab").unwrap(), None);
        assert_eq!(first_record_header(&b, "").unwrap(), None);
        let tagged = tag_batch(&b, TAG_HEADER, b"123456", None).unwrap();
        let t = parse_one(&tagged);
        assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"123456".to_vec()), "{codec}");
        assert_eq!(first_record_header(&t, "b").unwrap(), Some(b"bee".to_vec()));
    }
}

#[test]
fn first_record_header_with_a_first_record_over_64k() {
    for (codec, framing) in all_codecs() {
        let mut recs = sample_records(4, 20);
        recs[0].key = Some(random_bytes(1, 70_000)); // past lz4's 64 KiB block, xerial's 32 KiB chunk
        recs[0].value = Some(random_bytes(2, 200_000));
        recs[0].headers = vec![("big".into(), Some(random_bytes(3, 100_000)))];
        let bytes = build_batch(&recs, &opts(codec, framing));
        let tagged = tag_batch(&parse_one(&bytes), TAG_HEADER, b"99", None).unwrap();
        let t = parse_one(&tagged);
        assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"99".to_vec()), "{codec} {framing:?}");
        assert_eq!(first_record_header(&t, "big").unwrap(), Some(random_bytes(3, 100_000)));
        assert_eq!(records(&t).unwrap(), with_tag(recs, b"99"));
    }
}

#[test]
fn first_record_header_stops_after_the_first_record() {
    // Corrupt the compressed stream well after the first record: records()
    // fails, first_record_header does not, so it cannot have read that far.
    for (codec, framing) in all_codecs() {
        if codec == Compression::None || framing == SnappyFraming::Raw {
            continue; // nothing to stream / one block that must be decoded whole
        }
        let recs: Vec<RecordData> = (0..40)
            .map(|i| RecordData {
                value: Some(random_bytes(i + 10, 20_000)),
                headers: vec![(TAG_HEADER.into(), Some(b"5".to_vec()))],
                offset_delta: i as i32,
                ..Default::default()
            })
            .collect();
        let bytes = build_batch(&recs, &opts(codec, framing));
        let mut broken = bytes.clone();
        let n = broken.len();
        for b in &mut broken[n - 5000..n - 4000] {
            *b ^= 0x5a;
        }
        let header = parse_one(&bytes).header;
        let b = Batch { header, bytes: &broken };
        // (lz4, snappy and zstd without checksums may decode flipped
        // literals without noticing; either way the data is not the input.)
        assert_ne!(records(&b).ok(), Some(recs.clone()), "{codec}: a full decode reads the damage");
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), Some(b"5".to_vec()), "{codec}");
        // Cut off instead of corrupted: same.
        let b = Batch { header: parse_one(&bytes).header, bytes: &bytes[..n - 4000] };
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), Some(b"5".to_vec()), "{codec}");
    }
}

// ---------------------------------------------------------------------------
// empty_batch

#[test]
fn empty_batch_spans_the_offsets_with_a_valid_crc() {
    let bytes = empty_batch(1_000_000, 41, 7, 1_600_000_000_000, 1_600_000_000_500);
    assert_eq!(bytes.len(), BATCH_OVERHEAD);
    let b = parse_one(&bytes);
    assert_eq!(
        b.header,
        BatchHeader {
            base_offset: 1_000_000,
            batch_length: 49,
            partition_leader_epoch: 7,
            magic: 2,
            crc: crc32c_bitwise(&bytes[21..]),
            attributes: 0,
            last_offset_delta: 41,
            base_timestamp: 1_600_000_000_000,
            max_timestamp: 1_600_000_000_500,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 0,
        }
    );
    assert!(verify_crc(&b));
    assert_eq!(b.header.last_offset(), 1_000_041);
    assert_eq!(b.header.next_offset(), 1_000_042);
    assert_eq!(records(&b).unwrap(), vec![]);
    assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), None);
}

// ---------------------------------------------------------------------------
// batches()

#[test]
fn concatenated_batches_and_a_cut_tail() {
    let a = build_batch(&sample_records(3, 10), &opts(Compression::None, SnappyFraming::Xerial));
    let b = empty_batch(1003, 4, 4, 0, 0);
    let c = build_batch(&sample_records(5, 10), &opts(Compression::Gzip, SnappyFraming::Xerial));
    let d = build_batch(&sample_records(5, 10), &opts(Compression::Zstd, SnappyFraming::Xerial));
    let mut all = [a.clone(), b.clone(), c.clone()].concat();
    all.extend_from_slice(&d[..d.len() - 1]);
    let items: Vec<_> = batches(&all).collect::<Result<_, _>>().unwrap();
    assert_eq!(items.len(), 4);
    for (item, want) in items.iter().zip([&a, &b, &c]) {
        match item {
            Item::Batch(batch) => {
                assert_eq!(batch.bytes, &want[..]);
                assert!(verify_crc(batch));
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }
    assert_eq!(items[3], Item::Partial(&d[..d.len() - 1]));

    // Cut at every length: whole batches, then at most one Partial.
    for cut in 0..=all.len() {
        let items: Vec<_> = batches(&all[..cut]).collect::<Result<_, _>>().unwrap();
        let whole = items.iter().filter(|i| matches!(i, Item::Batch(_))).count();
        let partial = items.iter().filter(|i| matches!(i, Item::Partial(_))).count();
        assert!(partial <= 1 && (partial == 0 || matches!(items.last(), Some(Item::Partial(_)))));
        let ends = [a.len(), a.len() + b.len(), a.len() + b.len() + c.len()];
        assert_eq!(whole, ends.iter().filter(|&&e| e <= cut).count(), "cut at {cut}");
        assert_eq!(partial, usize::from(!ends.contains(&cut) && cut != 0), "cut at {cut}");
    }
    assert_eq!(batches(&[]).count(), 0);
}

/// A v0 or v1 message set entry: offset, size, crc, magic, attributes,
/// (timestamp,) key, value.
fn legacy_message(magic: u8) -> Vec<u8> {
    let mut m = vec![0u8; 4]; // crc (CRC-32, not checked here)
    m.push(magic);
    m.push(0); // attributes
    if magic == 1 {
        m.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    }
    m.extend_from_slice(&(-1i32).to_be_bytes()); // null key
    m.extend_from_slice(&3i32.to_be_bytes());
    m.extend_from_slice(b"old");
    let mut e = 0i64.to_be_bytes().to_vec();
    e.extend_from_slice(&(m.len() as i32).to_be_bytes());
    e.extend_from_slice(&m);
    e
}

#[test]
fn legacy_message_sets_are_detected_and_refused() {
    for magic in [0u8, 1] {
        let set = [legacy_message(magic), legacy_message(magic)].concat();
        assert_eq!(first_magic(&set), Some(magic as i8));
        let items: Vec<_> = batches(&set).collect();
        assert_eq!(items, vec![Err(RecordError::Magic(magic as i8))]);
        assert!(RecordError::Magic(magic as i8).to_string().contains("magic"));
        // After a good v2 batch, the legacy entry is the error.
        let mixed = [empty_batch(0, 0, 0, 0, 0), legacy_message(magic)].concat();
        let items: Vec<_> = batches(&mixed).collect();
        assert!(matches!(items[0], Ok(Item::Batch(_))));
        assert_eq!(items[1], Err(RecordError::Magic(magic as i8)));
        assert_eq!(items.len(), 2);
    }
    assert_eq!(first_magic(&[0; 16]), None);
    let mut unknown = empty_batch(0, 0, 0, 0, 0);
    unknown[16] = 3;
    assert_eq!(batches(&unknown).collect::<Vec<_>>(), vec![Err(RecordError::Magic(3))]);
}

#[test]
fn corrupt_lengths_are_errors() {
    let mut b = empty_batch(0, 0, 0, 0, 0);
    b[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(batches(&b).next(), Some(Err(RecordError::Corrupt(_)))));
    b[8..12].copy_from_slice(&30i32.to_be_bytes()); // below the v2 header
    assert!(matches!(batches(&b).next(), Some(Err(RecordError::Corrupt(_)))));
    b[8..12].copy_from_slice(&i32::MAX.to_be_bytes()); // announces more than there is
    assert!(matches!(batches(&b).next(), Some(Ok(Item::Partial(_)))));

    // records count larger than the bytes can hold
    let mut r = build_batch(&sample_records(3, 5), &BuildOptions::default());
    r[57..61].copy_from_slice(&1_000_000i32.to_be_bytes());
    let r = resealed(r);
    let batch = parse_one(&r);
    assert!(matches!(records(&batch), Err(RecordError::Corrupt(_))));
    assert!(matches!(tag_batch(&batch, TAG_HEADER, b"1", None), Err(RecordError::Corrupt(_))));
    // fewer records declared than present
    let mut r = r.clone();
    r[57..61].copy_from_slice(&2i32.to_be_bytes());
    let r = resealed(r);
    let batch = parse_one(&r);
    assert!(matches!(records(&batch), Err(RecordError::Corrupt(_))));
    assert!(matches!(tag_batch(&batch, TAG_HEADER, b"1", None), Err(RecordError::Corrupt(_))));
    // unknown codec
    let mut u = build_batch(&sample_records(3, 5), &BuildOptions::default());
    u[22] |= 0x07;
    assert!(matches!(records(&parse_one(&u)), Err(RecordError::Compression(_))));
}

#[test]
fn decompression_bombs_are_refused() {
    // One zstd frame of a record holding 8 MiB of zeros is a few hundred
    // bytes; 40 frames in a row (the decoder reads concatenated frames)
    // decompress to 320 MiB, past MAX_UNCOMPRESSED_BYTES.
    let rec = RecordData { value: Some(vec![0u8; 8 << 20]), ..Default::default() };
    let one = build_batch(&[rec], &opts(Compression::Zstd, SnappyFraming::Xerial));
    let frame = &one[BATCH_OVERHEAD..];
    assert!(frame.len() < 4096);
    let mut b = one[..BATCH_OVERHEAD].to_vec();
    b[57..61].copy_from_slice(&40i32.to_be_bytes());
    for _ in 0..40 {
        b.extend_from_slice(frame);
    }
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let b = resealed(b);
    let batch = parse_one(&b);
    assert!(matches!(records(&batch), Err(RecordError::TooLarge { .. })));
    assert!(matches!(tag_batch(&batch, TAG_HEADER, b"1", None), Err(RecordError::TooLarge { .. })));
    // The first record alone is fine: only it is decompressed.
    assert_eq!(first_record_header(&batch, TAG_HEADER).unwrap(), None);

    // A record claiming a length beyond the limit is refused before reading.
    let mut huge = vec![0xfe, 0xff, 0xff, 0xff, 0x0f]; // varint i32::MAX
    huge.extend_from_slice(&[0; 16]);
    let mut h = empty_batch(0, 0, 0, 0, 0);
    h[57..61].copy_from_slice(&1i32.to_be_bytes());
    h.extend_from_slice(&huge);
    let len = (h.len() - 12) as i32;
    h[8..12].copy_from_slice(&len.to_be_bytes());
    let hb = parse_one(&h);
    assert!(first_record_header(&hb, TAG_HEADER).is_err());
    assert!(records(&hb).is_err());
}
