//! Batches captured from real clients (tests/golden/batches).

use super::*;

// Real client bytes

pub(super) fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/batches")
}

/// Key, value and headers of a record.
type Kvh = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

/// The records capture_batches.py produces.
fn captured_records(large: bool) -> Vec<Kvh> {
    let first = if large { vec![b'L'; 100 * 1024] } else { b"first value ".repeat(8) };
    let h = |k: &str, v: &[u8]| (k.to_string(), Some(v.to_vec()));
    vec![
        (Some(b"key-0".to_vec()), Some(first), vec![h("h1", b"v1"), h("h2", b"")]),
        (None, Some(b"second value ".repeat(8)), vec![h("only", b"header")]),
        (Some(b"key-2".to_vec()), None, vec![]),
        (Some(b"key-3".to_vec()), Some(b"fourth value ".repeat(8)), vec![h("h1", b"again")]),
    ]
}

fn golden_files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn real_client_batches_parse_decode_and_tag() {
    let files = golden_files();
    let clients = files.iter().filter(|(n, _)| !n.starts_with("variant_")).count();
    assert_eq!(clients, 18, "2 clients x (5 codecs + 4 large)");
    for (name, bytes) in &files {
        let codec_name = name.split('_').nth(1).unwrap();
        let large = name.ends_with("_large") || name.starts_with("variant_");
        let mut decoded = Vec::new();
        for item in batches(bytes) {
            let Item::Batch(batch) = item.unwrap_or_else(|e| panic!("{name}: {e}")) else {
                panic!("{name}: partial batch")
            };
            check_crc(&batch).unwrap_or_else(|e| panic!("{name}: {e}"));
            let codec = batch.header.compression().unwrap();
            assert_eq!(codec.name(), codec_name, "{name}");
            let recs = records(&batch).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(recs.len(), batch.header.records_count as usize);
            assert_eq!(first_record_header(&batch, TAG_HEADER).unwrap(), None, "{name}");
            let first_h1 = recs[0].headers.iter().rev().find(|(k, _)| k == "h1").and_then(|(_, v)| v.clone());
            assert_eq!(first_record_header(&batch, "h1").unwrap(), first_h1, "{name}");

            let tagged =
                tag_batch(&batch, TAG_HEADER, b"42", Some((77, 3))).unwrap_or_else(|e| panic!("{name}: tag: {e}"));
            let t = parse_one(&tagged);
            check_crc(&t).unwrap();
            assert_eq!(t.header.compression().unwrap(), codec);
            assert_eq!(snappy_framing(&t), snappy_framing(&batch), "{name}");
            assert_eq!((t.header.producer_id, t.header.producer_epoch), (77, 3));
            assert_eq!(t.header.base_sequence, batch.header.base_sequence);
            assert_eq!(t.header.last_offset_delta, batch.header.last_offset_delta);
            assert_eq!(t.header.base_timestamp, batch.header.base_timestamp);
            assert_eq!(t.header.max_timestamp, batch.header.max_timestamp);
            assert_eq!(records(&t).unwrap(), with_tag(recs.clone(), b"42"), "{name}");
            assert_eq!(first_record_header(&t, TAG_HEADER).unwrap(), Some(b"42".to_vec()), "{name}");
            decoded.extend(recs);
        }
        let want = captured_records(large);
        let got: Vec<_> = decoded.into_iter().map(|r| (r.key, r.value, r.headers)).collect();
        assert_eq!(got, want, "{name}: the records the client produced");
    }
}

#[test]
fn snappy_framing_of_real_clients() {
    // librdkafka writes a raw snappy block, kafka-python (like the Java
    // client) xerial framing; tagging keeps each.
    let f = |n: &str| std::fs::read(golden_dir().join(n)).unwrap();
    let c = f("confluent_snappy.bin");
    assert_eq!(snappy_framing(&parse_one(&c)), Some(SnappyFraming::Raw));
    let k = f("kafkapython_snappy.bin");
    assert_eq!(snappy_framing(&parse_one(&k)), Some(SnappyFraming::Xerial));
}

/// With KPR_TAGGED_OUT=dir, write each golden batch tagged (kpr.vp = its
/// file name) for tests/golden/check_tagged_with_clients.py, which feeds
/// them to a broker and reads them back with real consumers.
#[test]
fn write_tagged_batches_for_client_check() {
    let Some(dir) = std::env::var_os("KPR_TAGGED_OUT") else { return };
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in golden_files() {
        let mut out = Vec::new();
        for item in batches(&bytes) {
            let Ok(Item::Batch(b)) = item else { panic!("{name}") };
            // Producer id -1: the checking broker never issued the
            // idempotent ids kafka-python's batches carry.
            out.extend(tag_batch(&b, TAG_HEADER, name.as_bytes(), Some((-1, -1))).unwrap());
        }
        std::fs::write(PathBuf::from(&dir).join(format!("{name}.bin")), out).unwrap();
    }
}
