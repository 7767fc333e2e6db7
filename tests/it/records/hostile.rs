//! Hostile input: nothing panics.

use super::*;
use super::clients::golden_dir;

// Hostile input: nothing panics

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Run everything on `bytes`; only panics matter (the test harness reports
/// them), results are ignored.
fn exercise(bytes: &[u8]) {
    let _ = first_magic(bytes);
    for item in batches(bytes) {
        if let Ok(Item::Batch(b)) = item {
            let _ = verify_crc(&b);
            let _ = b.header.compression();
            let _ = b.header.next_offset();
            let _ = records(&b);
            let _ = first_record_header(&b, TAG_HEADER);
            if let Ok(t) = tag_batch(&b, TAG_HEADER, b"7", Some((1, 1))) {
                let tb = Batch::parse(&t).expect("tag_batch output parses");
                assert!(verify_crc(&tb));
            }
        }
    }
}

#[test]
fn fuzz_random_bytes_truncations_and_flips_never_panic() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for _ in 0..3000 {
        let n = rng.below(200);
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        exercise(&bytes);
        // Random bytes behind a plausible header.
        let mut b = empty_batch(0, 3, 0, 0, 0);
        b[22] = rng.below(8) as u8;
        b[57..61].copy_from_slice(&(rng.below(5) as i32).to_be_bytes());
        b.extend_from_slice(&bytes);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        exercise(&b);
    }
    let mut valid = Vec::new();
    for (codec, framing) in all_codecs() {
        valid.push(build_batch(&sample_records(6, 40), &opts(codec, framing)));
    }
    for dir in ["confluent_lz4.bin", "kafkapython_snappy.bin", "kafkapython_lz4.bin", "confluent_zstd.bin"] {
        valid.push(std::fs::read(golden_dir().join(dir)).unwrap());
    }
    for v in &valid {
        for _ in 0..1500 {
            let mut m = v.clone();
            match rng.below(4) {
                0 => m.truncate(rng.below(m.len())),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(m.len());
                        m[i] ^= 1 << rng.below(8);
                    }
                }
                2 => {
                    // Flip a bit in the records section only: the framing
                    // stays valid and the codecs and record parser go deep
                    // (none of them looks at the CRC first).
                    let i = BATCH_OVERHEAD + rng.below(m.len() - BATCH_OVERHEAD);
                    m[i] ^= 1 << rng.below(8);
                }
                _ => {
                    let i = rng.below(m.len());
                    m[i] = rng.next() as u8;
                    m.truncate(m.len() - rng.below(m.len() - i));
                    let len = m.len().saturating_sub(12) as i32;
                    if m.len() >= 12 {
                        m[8..12].copy_from_slice(&len.to_be_bytes());
                    }
                }
            }
            exercise(&m);
        }
    }
}
