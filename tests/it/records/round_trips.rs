//! Build, tag and parse through every codec; what rewrites refuse.

use super::*;

// Round trips

#[test]
fn every_codec_round_trips_build_and_tag() {
    for (codec, framing) in all_codecs() {
        let input = sample_records(57, 120);
        let o = opts(codec, framing);
        let bytes = build_batch(&input, &o);
        let batch = parse_one(&bytes);
        assert_eq!(batch.header.compression(), Ok(codec));
        assert_eq!(snappy_framing(&batch), (codec == Compression::Snappy).then_some(framing));
        assert_eq!(records(&batch).unwrap(), input, "{codec} {framing:?}");
        assert_eq!(batch.header.last_offset_delta, 56);
        assert_eq!(batch.header.max_timestamp, o.base_timestamp + 56 * 3);

        for producer in [None, Some((9_000_000_001i64, 7i16))] {
            let tagged = tag_batch(&batch, TAG_HEADER, b"23", producer).unwrap();
            let t = parse_one(&tagged);
            assert!(verify_crc(&t), "{codec}: tagged CRC");
            let h = &t.header;
            let (pid, epoch) = producer.unwrap_or((o.producer_id, o.producer_epoch));
            assert_eq!((h.producer_id, h.producer_epoch), (pid, epoch));
            // Everything else in the header is kept.
            let mut same = batch.header.clone();
            same.batch_length = h.batch_length;
            same.crc = h.crc;
            same.producer_id = pid;
            same.producer_epoch = epoch;
            assert_eq!(*h, same);
            assert_eq!(t.bytes.len(), h.batch_length as usize + 12);
            assert_eq!(snappy_framing(&t), snappy_framing(&batch), "same snappy framing");
            assert_eq!(records(&t).unwrap(), with_tag(input.clone(), b"23"), "{codec} {framing:?}");
            assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"23".to_vec()));
        }
    }
}

#[test]
fn tag_batch_into_appends_and_leaves_the_buffer_alone_on_error() {
    let bytes = build_batch(&sample_records(3, 10), &opts(Compression::Lz4, SnappyFraming::Xerial));
    let batch = parse_one(&bytes);
    let mut out = b"prefix".to_vec();
    tag_batch_into(&batch, TAG_HEADER, b"8", None, &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(out[6..], tag_batch(&batch, TAG_HEADER, b"8", None).unwrap()[..]);

    // A record count the data does not hold fails after the header was
    // written out.
    let mut broken = bytes.clone();
    broken[57..61].copy_from_slice(&4i32.to_be_bytes());
    let b = parse_one(&broken);
    let mut out = b"prefix".to_vec();
    assert!(matches!(tag_batch_into(&b, TAG_HEADER, b"8", None, &mut out), Err(RecordError::Crc { .. })));
    assert_eq!(out, b"prefix");
    let broken = resealed(broken);
    let b = parse_one(&broken);
    assert!(matches!(tag_batch_into(&b, TAG_HEADER, b"8", None, &mut out), Err(RecordError::Truncated { .. })));
    assert_eq!(out, b"prefix");
}

#[test]
fn rewrites_refuse_batches_whose_crc_fails() {
    // Both rewrites seal their output with a fresh CRC-32C: given a damaged
    // batch they would make it look sound to every reader after them.
    for (codec, framing) in all_codecs() {
        let clean = build_batch(&sample_records(4, 20), &opts(codec, framing));
        let stored = parse_one(&clean).header.crc;
        for at in [18, clean.len() - 1] {
            let mut bad = clean.clone();
            bad[at] ^= 0x10;
            let b = parse_one(&bad);
            let computed = kpr_proxy::kafka::records::compute_crc(&bad);
            let want = RecordError::Crc { stored: b.header.crc, computed };
            assert_eq!(tag_batch(&b, TAG_HEADER, b"3", None), Err(want.clone()), "{codec} byte {at}");
            let mut out = b"kept".to_vec();
            assert_eq!(tag_batch_into(&b, TAG_HEADER, b"3", None, &mut out), Err(want.clone()), "{codec} byte {at}");
            assert_eq!(out, b"kept", "{codec} byte {at}: nothing appended");
            assert_eq!(subset_batch(&b, &|i| i % 2 == 0), Err(want.clone()), "{codec} byte {at}");
            if at == 18 {
                assert_ne!(b.header.crc, stored);
            }
        }
        let b = parse_one(&clean);
        assert!(tag_batch(&b, TAG_HEADER, b"3", None).is_ok(), "{codec}: the sound batch is tagged");
        assert!(subset_batch(&b, &|i| i % 2 == 0).is_ok(), "{codec}: the sound batch is split");
    }
}

#[test]
fn control_and_empty_batches() {
    let control = build_batch(
        &[RecordData { key: Some(vec![0, 0, 0, 1]), value: Some(vec![0, 0, 0, 0, 0, 0]), ..Default::default() }],
        &BuildOptions { control: true, transactional: true, producer_id: 5, ..Default::default() },
    );
    let c = parse_one(&control);
    assert!(c.header.is_control() && c.header.is_transactional());
    assert_eq!(first_record_header(&c, TAG_HEADER).unwrap(), None);
    assert!(matches!(tag_batch(&c, TAG_HEADER, b"1", None), Err(RecordError::Corrupt(_))));

    let none = build_batch(&[], &opts(Compression::Zstd, SnappyFraming::Xerial));
    let b = parse_one(&none);
    assert_eq!(records(&b).unwrap(), vec![]);
    assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), None);
}

#[test]
fn existing_tag_is_overridden_by_the_appended_one() {
    // A record that already carries kpr.vp (mirrored from a consumer of the
    // proxy) and is produced to another VP: the appended tag is the last
    // one, and the last one decides.
    let input = vec![RecordData {
        value: Some(b"v".to_vec()),
        headers: vec![(TAG_HEADER.into(), Some(b"3".to_vec())), ("x".into(), None)],
        ..Default::default()
    }];
    for (codec, framing) in all_codecs() {
        let bytes = build_batch(&input, &opts(codec, framing));
        let b = parse_one(&bytes);
        assert_eq!(first_record_header(&b, TAG_HEADER).unwrap(), Some(b"3".to_vec()));
        let tagged = tag_batch(&b, TAG_HEADER, b"11", None).unwrap();
        let t = parse_one(&tagged);
        assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"11".to_vec()));
        assert_eq!(records(&t).unwrap()[0].headers.len(), 3, "existing headers kept");
    }
}

#[test]
fn may_carry_header_finds_a_tag_in_any_record_and_any_codec() {
    for (codec, framing) in all_codecs() {
        let untagged = sample_records(40, 300);
        let bytes = build_batch(&untagged, &opts(codec, framing));
        assert!(!may_carry_header(&parse_one(&bytes), TAG_HEADER).unwrap(), "{codec}: no record is tagged");

        // Only the last record carries the tag: found past the first record
        // and, compressed, past the first block or chunk.
        let mut last_tagged = sample_records(40, 3000);
        last_tagged[39].headers.push((TAG_HEADER.into(), Some(b"4".to_vec())));
        let bytes = build_batch(&last_tagged, &opts(codec, framing));
        assert!(may_carry_header(&parse_one(&bytes), TAG_HEADER).unwrap(), "{codec}: the last record is tagged");

        // The name alone in a value is not the header as records encode it
        // (its length varint precedes it); with that varint it is a
        // candidate, which record_owners then settles.
        let mut in_value = sample_records(3, 10);
        in_value[1].value = Some(b"xxkpr.vpxx".to_vec());
        let bytes = build_batch(&in_value, &opts(codec, framing));
        assert!(!may_carry_header(&parse_one(&bytes), TAG_HEADER).unwrap(), "{codec}: bare name in a value");
        in_value[1].value = Some(b"x\x0ckpr.vpx".to_vec());
        let bytes = build_batch(&in_value, &opts(codec, framing));
        let b = parse_one(&bytes);
        assert!(may_carry_header(&b, TAG_HEADER).unwrap(), "{codec}: encoded name in a value");
        assert_eq!(record_owners(&b, TAG_HEADER, &|t| t.map_or(-1, |_| 1)).unwrap(), vec![-1, -1, -1]);
    }
}
