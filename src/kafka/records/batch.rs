//! The v2 batch header (layout in the parent module's doc): parsing it,
//! walking the batches of a `records` field as Kafka's
//! `ByteBufferLogInputStream` does, the CRC-32C check and re-seal, and
//! building whole batches (for the proxy's own batches and for tests).

use super::compression::{Compression, SnappyFraming, MAX_UNCOMPRESSED_BYTES};
use super::record::{write_record, RecordData};
use super::{corrupt, wire_err, RecordError};
use crate::kafka::wire::{put_i16, put_i32, put_i64, put_u32, Reader};
use std::borrow::Cow;

/// Size of a v2 batch header, up to and including `recordsCount`.
pub const BATCH_OVERHEAD: usize = 61;
/// `baseOffset` + `batchLength`: the prefix every batch and legacy message
/// set entry shares.
pub const LOG_OVERHEAD: usize = 12;
/// Where the magic byte sits in v0, v1 and v2 alike.
pub const MAGIC_OFFSET: usize = 16;
/// The smallest `batchLength` Kafka accepts before looking at the magic
/// (`LegacyRecord.RECORD_OVERHEAD_V0`).
const MIN_LENGTH_ANY_MAGIC: i32 = 14;

const CRC_OFFSET: usize = 17;
/// The CRC covers everything from the attributes to the end.
const CRC_START: usize = 21;
pub(super) const PRODUCER_ID_OFFSET: usize = 43;
pub(super) const PRODUCER_EPOCH_OFFSET: usize = 51;

const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// The fixed 61-byte header of a v2 batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parse the header at the start of `bytes` (which must hold at least
    /// [`BATCH_OVERHEAD`] bytes). The magic must be 2.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, RecordError> {
        if bytes.len() > MAGIC_OFFSET && bytes[MAGIC_OFFSET] as i8 != 2 {
            return Err(RecordError::Magic(bytes[MAGIC_OFFSET] as i8));
        }
        let mut r = Reader::new(bytes);
        let e = wire_err("batch header");
        Ok(BatchHeader {
            base_offset: r.i64().map_err(&e)?,
            batch_length: r.i32().map_err(&e)?,
            partition_leader_epoch: r.i32().map_err(&e)?,
            magic: r.i8().map_err(&e)?,
            crc: r.u32().map_err(&e)?,
            attributes: r.i16().map_err(&e)?,
            last_offset_delta: r.i32().map_err(&e)?,
            base_timestamp: r.i64().map_err(&e)?,
            max_timestamp: r.i64().map_err(&e)?,
            producer_id: r.i64().map_err(&e)?,
            producer_epoch: r.i16().map_err(&e)?,
            base_sequence: r.i32().map_err(&e)?,
            records_count: r.i32().map_err(&e)?,
        })
    }

    /// Append the 61 header bytes, exactly as the fields say.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_i64(out, self.base_offset);
        put_i32(out, self.batch_length);
        put_i32(out, self.partition_leader_epoch);
        out.push(self.magic as u8);
        put_u32(out, self.crc);
        put_i16(out, self.attributes);
        put_i32(out, self.last_offset_delta);
        put_i64(out, self.base_timestamp);
        put_i64(out, self.max_timestamp);
        put_i64(out, self.producer_id);
        put_i16(out, self.producer_epoch);
        put_i32(out, self.base_sequence);
        put_i32(out, self.records_count);
    }

    pub fn compression(&self) -> Result<Compression, RecordError> {
        Ok(Compression::from_attributes(self.attributes)?)
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    /// Timestamp type bit: true for LogAppendTime, false for CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
    /// Offset of the batch's last record (also for batches compaction
    /// emptied: the span is kept).
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta as i64)
    }
    /// The offset a consumer moves to after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }
}

/// One whole batch inside a `records` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    pub header: BatchHeader,
    /// The whole batch, from `baseOffset` to its last byte.
    pub bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Parse `bytes` as exactly one v2 batch (no more, no less).
    pub fn parse(bytes: &'a [u8]) -> Result<Batch<'a>, RecordError> {
        let mut it = batches(bytes);
        match it.next() {
            Some(Ok(Item::Batch(b))) if b.bytes.len() == bytes.len() => Ok(b),
            Some(Ok(Item::Batch(b))) => {
                corrupt(format!("{} bytes after a batch of {} bytes", bytes.len() - b.bytes.len(), b.bytes.len()))
            }
            Some(Ok(Item::Partial(p))) => Err(RecordError::Truncated {
                what: "record batch",
                need: announced_len(p).unwrap_or(BATCH_OVERHEAD),
                have: p.len(),
            }),
            Some(Err(e)) => Err(e),
            None => Err(RecordError::Truncated { what: "record batch", need: BATCH_OVERHEAD, have: 0 }),
        }
    }

    /// The bytes after the header: the records, compressed or not.
    pub fn records_bytes(&self) -> &'a [u8] {
        self.bytes.get(BATCH_OVERHEAD..).unwrap_or(&[])
    }
}

/// What `batches` yields for each position of a `records` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Batch(Batch<'a>),
    /// Bytes at the end too short to hold the batch their header announces
    /// (brokers cut fetch responses mid-batch; clients ignore the tail).
    Partial(&'a [u8]),
}

/// The magic byte of the first entry of a `records` field, if there are
/// enough bytes to see it. 0 and 1 are legacy message sets, 2 is a v2 batch.
pub fn first_magic(records: &[u8]) -> Option<i8> {
    records.get(MAGIC_OFFSET).map(|&b| b as i8)
}

fn announced_len(bytes: &[u8]) -> Option<usize> {
    let len = i32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    usize::try_from(len).ok().map(|l| l + LOG_OVERHEAD)
}

/// Iterator over the batches of a `records` field; see [`batches`].
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Batches<'a> {
    /// Byte position of the next entry within the `records` field.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<Item<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = &self.buf[self.pos..];
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        // Same order of checks as Kafka's ByteBufferLogInputStream: a tail
        // shorter than offset + length is partial; a length below the v0
        // minimum is corrupt; then the magic; then whether the batch fits.
        if rest.len() < LOG_OVERHEAD {
            self.done = true;
            return Some(Ok(Item::Partial(rest)));
        }
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < MIN_LENGTH_ANY_MAGIC {
            self.done = true;
            return Some(corrupt(format!("batch length {len} at byte {} is below the minimum", self.pos)));
        }
        if rest.len() <= MAGIC_OFFSET {
            self.done = true;
            return Some(Ok(Item::Partial(rest)));
        }
        let magic = rest[MAGIC_OFFSET] as i8;
        if magic != 2 {
            self.done = true;
            return Some(Err(RecordError::Magic(magic)));
        }
        if (len as usize) < BATCH_OVERHEAD - LOG_OVERHEAD {
            self.done = true;
            return Some(corrupt(format!(
                "batch length {len} at byte {} is below the v2 header size {}",
                self.pos,
                BATCH_OVERHEAD - LOG_OVERHEAD
            )));
        }
        let total = len as usize + LOG_OVERHEAD;
        if rest.len() < total {
            self.done = true;
            return Some(Ok(Item::Partial(rest)));
        }
        let bytes = &rest[..total];
        let header = match BatchHeader::parse(bytes) {
            Ok(h) => h,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        self.pos += total;
        Some(Ok(Item::Batch(Batch { header, bytes })))
    }
}

/// Iterate over the batches of a `records` field. A magic other than 2 is
/// an error (`RecordError::Magic`) for the entry where it appears; after any
/// error, and after a `Partial` tail, the iterator ends.
pub fn batches(records: &[u8]) -> Batches<'_> {
    Batches { buf: records, pos: 0, done: false }
}

/// The CRC-32C the batch's bytes have (from the attributes to the end).
pub fn compute_crc(batch_bytes: &[u8]) -> u32 {
    crc32c::crc32c(batch_bytes.get(CRC_START..).unwrap_or(&[]))
}

/// Whether the stored CRC matches the bytes.
pub fn verify_crc(batch: &Batch) -> bool {
    batch.bytes.len() >= BATCH_OVERHEAD && compute_crc(batch.bytes) == batch.header.crc
}

/// `verify_crc` as a `Result` that names both values.
pub fn check_crc(batch: &Batch) -> Result<(), RecordError> {
    let computed = compute_crc(batch.bytes);
    if batch.bytes.len() >= BATCH_OVERHEAD && computed == batch.header.crc {
        Ok(())
    } else {
        Err(RecordError::Crc { stored: batch.header.crc, computed })
    }
}

/// A batch that passed its CRC-32C check: what the rewrites that re-seal
/// (`tag_checked`) take, so that no caller can seal damage into a batch
/// that looks sound, and a caller that checked first (to refuse a batch
/// before acting on its header) does not pay for a second pass.
#[derive(Clone, Copy, Debug)]
pub struct CrcChecked<'b, 'a>(pub(super) &'b Batch<'a>);

impl<'b, 'a> CrcChecked<'b, 'a> {
    pub fn batch(&self) -> &'b Batch<'a> {
        self.0
    }
}

/// The batch as [`CrcChecked`], or `RecordError::Crc` naming both CRCs.
pub fn crc_checked<'b, 'a>(batch: &'b Batch<'a>) -> Result<CrcChecked<'b, 'a>, RecordError> {
    check_crc(batch)?;
    Ok(CrcChecked(batch))
}

/// Fill in `batchLength` and the CRC of a batch whose other bytes are final.
pub(super) fn seal(batch: &mut [u8]) {
    let len = (batch.len() - LOG_OVERHEAD) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

/// Byte offset of `baseSequence` in a v2 batch.
const BASE_SEQUENCE_OFFSET: usize = 53;

/// Set the base sequence of an encoded batch, resealing its CRC.
pub fn set_base_sequence(batch: &mut [u8], sequence: i32) {
    if batch.len() >= BATCH_OVERHEAD {
        batch[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4].copy_from_slice(&sequence.to_be_bytes());
        seal(batch);
    }
}

// ---------------------------------------------------------------------------
// Reading the records

/// The records of a batch, decompressed (borrowed when not compressed),
/// and the snappy framing seen.
pub(super) fn decompressed<'a>(batch: &Batch<'a>) -> Result<(Cow<'a, [u8]>, SnappyFraming), RecordError> {
    let codec = batch.header.compression()?;
    let data = batch.records_bytes();
    if codec == Compression::None {
        return Ok((Cow::Borrowed(data), SnappyFraming::Xerial));
    }
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(MAX_UNCOMPRESSED_BYTES));
    let framing = codec.decompress_into(data, &mut out)?;
    Ok((Cow::Owned(out), framing))
}

/// The snappy framing of a snappy batch (`None` for other codecs).
pub fn snappy_framing(batch: &Batch) -> Option<SnappyFraming> {
    match batch.header.compression() {
        Ok(Compression::Snappy) => Some(SnappyFraming::of(batch.records_bytes())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Building

/// An empty batch (0 records, no compression, not transactional, not
/// control) spanning offsets `[base_offset, base_offset +
/// last_offset_delta]`, valid CRC, producer id -1, epoch -1, sequence -1.
/// Clients treat it like a batch compaction emptied and move their position
/// past it.
pub fn empty_batch(
    base_offset: i64,
    last_offset_delta: i32,
    partition_leader_epoch: i32,
    base_timestamp: i64,
    max_timestamp: i64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_OVERHEAD);
    BatchHeader {
        base_offset,
        batch_length: 0,
        partition_leader_epoch,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: 0,
    }
    .write(&mut out);
    seal(&mut out);
    out
}

/// [`empty_batch`] with the control bit set (still not transactional,
/// producer id -1, so no transaction logic applies to it). Kafka's log
/// cleaner leaves such empty control batches too (it keeps an emptied
/// batch's header and attributes, `MemoryRecords.filterTo`). Clients move
/// past it like past an empty data batch, and librdkafka does not take a
/// record set holding one for a message too large to fetch
/// (`rd_kafka_msgset_reader_run`: with `msetr_ctrl_cnt > 0` a set that
/// yields no message is not a size problem), which it does for a set of
/// empty data batches alone: it doubles the partition's fetch size up to
/// 1 GiB and then reports MSG_SIZE_TOO_LARGE at every such answer.
pub fn empty_control_batch(base_offset: i64, last_offset_delta: i32, epoch: i32, base_timestamp: i64, max_timestamp: i64) -> Vec<u8> {
    let mut out = empty_batch(base_offset, last_offset_delta, epoch, base_timestamp, max_timestamp);
    // Attributes: after base offset (8), length (4), leader epoch (4),
    // magic (1) and CRC (4).
    out[21..23].copy_from_slice(&CONTROL_BIT.to_be_bytes());
    seal(&mut out);
    out
}

/// How `build_batch` lays out a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub compression: Compression,
    pub snappy_framing: SnappyFraming,
    pub base_timestamp: i64,
    /// `None`: base timestamp plus the largest timestamp delta.
    pub max_timestamp: Option<i64>,
    /// `None`: the largest offset delta (0 for no records).
    pub last_offset_delta: Option<i32>,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub log_append_time: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            base_offset: 0,
            partition_leader_epoch: -1,
            compression: Compression::None,
            snappy_framing: SnappyFraming::Xerial,
            base_timestamp: 0,
            max_timestamp: None,
            last_offset_delta: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            log_append_time: false,
        }
    }
}

/// Build a batch of `records` (their offset and timestamp deltas as given).
pub fn build_batch(records: &[RecordData], opts: &BuildOptions) -> Vec<u8> {
    let mut plain = Vec::new();
    for rec in records {
        write_record(&mut plain, rec);
    }
    let mut attributes = opts.compression.attribute_bits();
    if opts.log_append_time {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    if opts.transactional {
        attributes |= TRANSACTIONAL_BIT;
    }
    if opts.control {
        attributes |= CONTROL_BIT;
    }
    let max_delta = records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0);
    let mut out = Vec::with_capacity(BATCH_OVERHEAD + plain.len());
    BatchHeader {
        base_offset: opts.base_offset,
        batch_length: 0,
        partition_leader_epoch: opts.partition_leader_epoch,
        magic: 2,
        crc: 0,
        attributes,
        last_offset_delta: opts
            .last_offset_delta
            .unwrap_or_else(|| records.iter().map(|r| r.offset_delta).max().unwrap_or(0)),
        base_timestamp: opts.base_timestamp,
        max_timestamp: opts.max_timestamp.unwrap_or(opts.base_timestamp.wrapping_add(max_delta)),
        producer_id: opts.producer_id,
        producer_epoch: opts.producer_epoch,
        base_sequence: opts.base_sequence,
        records_count: records.len() as i32,
    }
    .write(&mut out);
    opts.compression
        .compress_into(opts.snappy_framing, &plain, &mut out)
        .expect("compressing into memory does not fail");
    seal(&mut out);
    out
}


#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i32, value_len: usize) -> RecordData {
        RecordData {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'a' + (i % 26) as u8; value_len]),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
            timestamp_delta: i as i64,
            offset_delta: i,
        }
    }

    #[test]
    fn header_offsets_match_layout() {
        let opts = BuildOptions { producer_id: 0x0102030405060708, producer_epoch: 0x0a0b, ..Default::default() };
        let b = build_batch(&[rec(0, 3)], &opts);
        assert_eq!(&b[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[PRODUCER_EPOCH_OFFSET..PRODUCER_EPOCH_OFFSET + 2], &[0x0a, 0x0b]);
        assert_eq!(b[MAGIC_OFFSET], 2);
    }
}
