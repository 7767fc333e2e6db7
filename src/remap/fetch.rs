//! Fetch from virtual partitions. Each physical partition a client names
//! (through any number of its virtual partitions) is fetched once upstream,
//! from the lowest offset asked. Each virtual partition then gets: its own
//! batches (bytes unchanged), control batches (transaction markers), and in
//! place of each run of other virtual partitions' batches one empty batch
//! spanning the run, so the consumer's position moves past data that is not
//! its own without reading it.

use crate::kafka::records::{self, Batch, Item, TAG_HEADER};

/// Which virtual partition a data batch belongs to: the `kpr.vp` tag of
/// its first record, or `untagged` (= the physical partition number) when
/// there is none.
pub fn batch_owner(batch: &Batch<'_>, untagged: i32) -> i32 {
    match records::first_record_header(batch, TAG_HEADER) {
        Ok(Some(value)) => std::str::from_utf8(&value).ok().and_then(|s| s.parse().ok()).unwrap_or(untagged),
        // A batch whose first record cannot be read is left to the owner of
        // untagged data, whose client will report it as corrupt, rather
        // than hidden from everyone.
        Ok(None) | Err(_) => untagged,
    }
}

/// One batch of a physical partition's fetched data, classified once for
/// all the virtual partitions asked for.
pub struct Classified<'a> {
    pub batch: Batch<'a>,
    /// `None` for control batches, which every virtual partition receives.
    pub owner: Option<i32>,
}

/// Classify the batches of a fetched `records` blob. A partial batch at the
/// end (brokers cut responses at the byte limit) is dropped: the client
/// fetches it again from its position.
pub fn classify(data: &[u8], untagged: i32) -> Vec<Classified<'_>> {
    let mut out = Vec::new();
    for item in records::batches(data) {
        match item {
            Ok(Item::Batch(batch)) => {
                let owner = if batch.header.is_control() { None } else { Some(batch_owner(&batch, untagged)) };
                out.push(Classified { batch, owner });
            }
            Ok(Item::Partial(_)) | Err(_) => break,
        }
    }
    out
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FilterStats {
    /// Foreign batches replaced by empty batches.
    pub batches_filtered: u64,
    pub bytes_returned: u64,
}

/// The records virtual partition `vp` receives, fetching from
/// `fetch_offset`.
pub fn records_for(batches: &[Classified<'_>], vp: i32, fetch_offset: i64, stats: &mut FilterStats) -> Vec<u8> {
    let mut out = Vec::new();
    // The run of foreign batches not yet written: (first offset, last
    // offset, leader epoch, first timestamp, max timestamp).
    let mut run: Option<(i64, i64, i32, i64, i64)> = None;
    let flush = |run: &mut Option<(i64, i64, i32, i64, i64)>, out: &mut Vec<u8>| {
        if let Some((first, last, epoch, ts0, ts1)) = run.take() {
            let delta = (last - first).clamp(0, i32::MAX as i64) as i32;
            out.extend_from_slice(&records::empty_batch(first, delta, epoch, ts0, ts1));
        }
    };
    for c in batches {
        let h = &c.batch.header;
        if h.last_offset() < fetch_offset {
            continue;
        }
        match c.owner {
            Some(owner) if owner != vp => {
                stats.batches_filtered += 1;
                run = Some(match run {
                    None => (h.base_offset, h.last_offset(), h.partition_leader_epoch, h.base_timestamp, h.max_timestamp),
                    Some((first, _, _, ts0, ts1)) => {
                        (first, h.last_offset(), h.partition_leader_epoch, ts0, ts1.max(h.max_timestamp))
                    }
                });
            }
            _ => {
                flush(&mut run, &mut out);
                out.extend_from_slice(c.batch.bytes);
            }
        }
    }
    flush(&mut run, &mut out);
    stats.bytes_returned += out.len() as u64;
    out
}
