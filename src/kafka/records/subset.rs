//! Splitting a batch by owner: which virtual partition each record
//! belongs to, and a batch holding only the records of one of them,
//! re-sealed so a consumer reads it as the original's stand-in.

use super::batch::{check_crc, decompressed, seal, Batch, BATCH_OVERHEAD};
use super::record::{declared_count, next_record, nullable_bytes, skip_to_headers};
use super::RecordError;
use crate::kafka::wire::Reader;

/// The owner of each record of a batch, in order: `owner_of` applied to
/// the value of the record's last header named `key` (`None` when it has
/// none). Compressed batches are decompressed whole; uncompressed ones are
/// only walked.
pub fn record_owners(batch: &Batch, key: &str, owner_of: &dyn Fn(Option<&[u8]>) -> i32) -> Result<Vec<i32>, RecordError> {
    let (data, _) = decompressed(batch)?;
    let count = declared_count(&batch.header, data.len())?;
    let mut r = Reader::new(&data);
    let mut owners = Vec::with_capacity(count);
    for _ in 0..count {
        let body = next_record(&mut r)?;
        let (_, headers_at, n) = skip_to_headers(body)?;
        let mut h = Reader::new(&body[headers_at..]);
        let mut tag = None;
        for _ in 0..n {
            let k = nullable_bytes(&mut h, "header key")?;
            let v = nullable_bytes(&mut h, "header value")?;
            if k == Some(key.as_bytes()) {
                tag = Some(v.unwrap_or_default());
            }
        }
        owners.push(owner_of(tag));
    }
    Ok(owners)
}

/// A batch with `batch`'s header (offsets, timestamps, producer, flags)
/// holding only the records `keep` selects by index, uncompressed, with
/// its own length, count and CRC. The records keep their offset and
/// timestamp deltas, so each keeps its offset; the batch still ends where
/// the original ended, so a consumer moves past all of it.
///
/// The batch must pass its CRC-32C check first (`RecordError::Crc`
/// otherwise): the subset gets a fresh CRC, which would make damage look
/// sound to every reader after the proxy.
pub fn subset_batch(batch: &Batch, keep: &dyn Fn(usize) -> bool) -> Result<Vec<u8>, RecordError> {
    check_crc(batch)?;
    let (data, _) = decompressed(batch)?;
    let count = declared_count(&batch.header, data.len())?;
    let mut r = Reader::new(&data);
    let mut records = Vec::with_capacity(data.len());
    let mut kept = 0;
    for i in 0..count {
        let start = r.position();
        next_record(&mut r)?;
        if keep(i) {
            records.extend_from_slice(&data[start..r.position()]);
            kept += 1;
        }
    }
    let mut header = batch.header.clone();
    // Compression is attribute bits 0-2: none.
    header.attributes &= !0b111;
    header.records_count = kept;
    let mut out = Vec::with_capacity(BATCH_OVERHEAD + records.len());
    header.write(&mut out);
    out.extend_from_slice(&records);
    seal(&mut out);
    Ok(out)
}
