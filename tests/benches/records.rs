//! Throughput of the record-batch operations on the data path:
//! `tag_batch` (every produced batch of a remapped topic with k >= 1),
//! `may_carry_header` (every produced batch with k = 0: does any record
//! carry a stale tag?) and `record_owners` (every fetched batch of a
//! remapped topic, once: fetch caches the result per batch), and
//! `check_crc`, which every batch the proxy rewrites passes first (once:
//! `tag_batch` checks, or takes a batch checked already).
//!
//! `cargo bench --bench records` (release build). Prints MB/s of
//! uncompressed record bytes (the batch's records before compression) and
//! the time per batch; no timing is asserted.

use kpr_proxy::kafka::records::{
    build_batch, check_crc, may_carry_header, record_owners, tag_batch, Batch, BuildOptions, Compression, RecordData, TAG_HEADER,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// About `size` bytes of ~100-byte records: a short key, a text-like value
/// that compresses like typical JSON (about 2-3x), one small header.
fn records_of(size: usize) -> (Vec<RecordData>, usize) {
    let words = ["order", "id", "user", "amount", "status", "ok", "pending", "eur", "ts", "sku"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut recs = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < size {
        let mut value = Vec::with_capacity(80);
        while value.len() < 70 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            value.extend_from_slice(words[(x % 10) as usize].as_bytes());
            value.extend_from_slice(format!(":{} ", x % 1000).as_bytes());
        }
        let r = RecordData {
            key: Some(format!("key-{i:06}").into_bytes()),
            value: Some(value),
            headers: vec![("src".into(), Some(b"a".to_vec()))],
            timestamp_delta: i,
            offset_delta: i as i32,
        };
        let mut one = Vec::new();
        kpr_proxy::kafka::records::write_record(&mut one, &r);
        total += one.len();
        recs.push(r);
        i += 1;
    }
    (recs, total)
}

/// Run `f` repeatedly for about `budget`; seconds per call.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm up (thread-local buffers, contexts)
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn main() {
    // 1 MiB: librdkafka's default batch.size; 16 KiB: the Java client's.
    for size in [1 << 20, 16 << 10] {
        run(size);
    }
}

fn run(size: usize) {
    let (recs, plain) = records_of(size);
    let avg = plain as f64 / recs.len() as f64;
    println!("\nbatch: {} records, {} bytes uncompressed ({avg:.0} bytes/record)", recs.len(), plain);
    println!(
        "{:<8} {:>10} {:>16} {:>14} {:>22} {:>20} {:>14}",
        "codec", "batch B", "tag_batch MB/s", "tag ms/batch", "may_carry_header MB/s", "record_owners MB/s", "crc ms/batch"
    );
    for codec in Compression::ALL {
        let opts = BuildOptions { compression: codec, producer_id: 1, producer_epoch: 0, ..Default::default() };
        let bytes = build_batch(&recs, &opts);
        let batch = Batch::parse(&bytes).unwrap();
        let t_tag = time(Duration::from_secs(2), || {
            black_box(tag_batch(black_box(&batch), TAG_HEADER, b"17", Some((1000, 0))).unwrap());
        });
        let t_check = time(Duration::from_secs(1), || {
            assert!(!black_box(may_carry_header(black_box(&batch), TAG_HEADER).unwrap()));
        });
        let t_crc = time(Duration::from_millis(500), || {
            check_crc(black_box(&batch)).unwrap();
        });
        let tagged = tag_batch(&batch, TAG_HEADER, b"17", None).unwrap();
        let tb = Batch::parse(&tagged).unwrap();
        let owner_of = |tag: Option<&[u8]>| i32::from(tag.is_some());
        let t_owners = time(Duration::from_secs(1), || {
            black_box(record_owners(black_box(&tb), TAG_HEADER, &owner_of).unwrap());
        });
        println!(
            "{:<8} {:>10} {:>16.0} {:>14.3} {:>22.0} {:>20.0} {:>14.4}",
            codec.name(),
            bytes.len(),
            plain as f64 / t_tag / 1e6,
            t_tag * 1e3,
            plain as f64 / t_check / 1e6,
            plain as f64 / t_owners / 1e6,
            t_crc * 1e3
        );
    }
}
