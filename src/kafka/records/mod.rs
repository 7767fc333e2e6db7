//! Kafka's v2 record batch (magic 2): layout, CRC-32C, records and their
//! headers, the codecs, and the rewrites the remapper needs (design §2).
//!
//! Layout (all integers big-endian; offsets from the start of the batch):
//!
//! ```text
//!  0 baseOffset           int64
//!  8 batchLength          int32   bytes after this field
//! 12 partitionLeaderEpoch int32   not covered by the CRC
//! 16 magic                int8    2 (same position as in v0/v1 message sets)
//! 17 crc                  uint32  CRC-32C of bytes 21..end
//! 21 attributes           int16   bits 0-2 codec, 3 timestamp type,
//!                                 4 transactional, 5 control, 6 delete horizon
//! 23 lastOffsetDelta      int32
//! 27 baseTimestamp        int64
//! 35 maxTimestamp         int64
//! 43 producerId           int64
//! 51 producerEpoch        int16
//! 53 baseSequence         int32
//! 57 recordsCount         int32
//! 61 records              (compressed as one stream when bits 0-2 != 0)
//! ```
//!
//! A record: `length varint` then, in `length` bytes: `attributes int8`,
//! `timestampDelta varlong`, `offsetDelta varint`, `keyLength varint` (-1 =
//! null) and key, `valueLength varint` and value, `headersCount varint`, and
//! per header `keyLength varint`, key (UTF-8), `valueLength varint` (-1 =
//! null), value.
//!
//! The files, and the data path through them:
//!
//! - `batch`: the header above, walking the batches of a `records` field
//!   ([`batches`]), the CRC-32C check and re-seal, building batches.
//! - `record`: records, headers and their varints; decoding every record.
//! - `compression`: one [`Compression`] per attribute value, each codec in
//!   its own file behind one interface, with one error type.
//! - `tag`: the `kpr.vp` header ([`TAG_HEADER`]) that carries a record's
//!   virtual partition.
//! - `subset`: who owns each record, and a batch of one owner's records.
//!
//! A produced batch for a sibling partition (k ≥ 1): `batch` splits the
//! request's records and checks the CRC, `tag` decompresses through
//! `compression`, adds the header to each record (`record` walks them),
//! re-compresses with the same codec, and `batch` re-seals it. A produced
//! batch for k = 0 is searched for stale tags (`record::may_carry_header`,
//! then `subset::record_owners`) and tagged only if one is found. A fetched
//! batch: `subset::record_owners` names each record's virtual partition;
//! a batch holding several is cut into `subset::subset_batch`es, and a
//! virtual partition with no record in it gets an `empty_batch` in its
//! place (an `empty_control_batch` when nothing else is in its answer).
//!
//! Nothing here panics on hostile bytes: every length is checked against the
//! bytes that are really there, decompression is bounded by
//! [`MAX_UNCOMPRESSED_BYTES`], and arithmetic on declared sizes is checked.

mod batch;
pub mod compression;
mod record;
mod subset;
mod tag;

pub use batch::{
    batches, build_batch, check_crc, compute_crc, crc_checked, empty_batch, empty_control_batch, first_magic, set_base_sequence,
    snappy_framing, verify_crc, Batch, BatchHeader, Batches, BuildOptions, CrcChecked, Item, BATCH_OVERHEAD,
    LOG_OVERHEAD, MAGIC_OFFSET,
};
pub use compression::{CodecError, Compression, SnappyFraming, MAX_UNCOMPRESSED_BYTES};
pub use record::{may_carry_header, records, write_record, RecordData};
pub use subset::{record_owners, subset_batch};
pub use tag::{
    encoded_header_len, first_record_header, tag_batch, tag_batch_into, tag_checked_into, TAG_HEADER,
};

use crate::kafka::wire::DecodeError;
use std::fmt;

/// What is wrong with a batch. Each variant names the field or codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes ended `need` bytes into `what`, which had only `have` left.
    Truncated { what: &'static str, need: usize, have: usize },
    /// A batch (or message set entry) with a magic other than 2.
    Magic(i8),
    /// The stored CRC-32C does not match the bytes.
    Crc { stored: u32, computed: u32 },
    /// The codec could not decode (or encode) the records; names the codec.
    Compression(String),
    /// Decompressing would exceed [`MAX_UNCOMPRESSED_BYTES`].
    TooLarge { codec: Compression, limit: usize },
    /// A length, count or flag that no valid batch carries.
    Corrupt(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { what, need, have } => {
                write!(f, "record batch truncated in {what}: needed {need} bytes, {have} left")
            }
            RecordError::Magic(m) => {
                write!(f, "record batch magic {m} is not 2 (legacy message set or corrupt data)")
            }
            RecordError::Crc { stored, computed } => {
                write!(f, "record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            RecordError::Compression(what) => write!(f, "record batch compression error: {what}"),
            RecordError::TooLarge { codec, limit } => {
                write!(f, "{codec} records decompress to more than {limit} bytes")
            }
            RecordError::Corrupt(what) => write!(f, "corrupt record batch: {what}"),
        }
    }
}

impl std::error::Error for RecordError {}

fn corrupt<T>(what: impl Into<String>) -> Result<T, RecordError> {
    Err(RecordError::Corrupt(what.into()))
}

/// A `wire` decode error inside `what`, as a `RecordError`.
fn wire_err(what: &'static str) -> impl Fn(DecodeError) -> RecordError {
    move |e| match e {
        DecodeError::Truncated { need, have, .. } => RecordError::Truncated { what, need, have },
        DecodeError::Invalid { at, what: why } => RecordError::Corrupt(format!("{what} at byte {at}: {why}")),
        other => RecordError::Corrupt(format!("{what}: {other}")),
    }
}

impl From<CodecError> for RecordError {
    fn from(e: CodecError) -> RecordError {
        match e {
            CodecError::Failed { codec, detail } => RecordError::Compression(format!("{codec}: {detail}")),
            CodecError::TooLarge { codec, limit } => RecordError::TooLarge { codec, limit },
            CodecError::Truncated { what, need, have } => RecordError::Truncated { what, need, have },
            unknown @ CodecError::Unknown(_) => RecordError::Compression(unknown.to_string()),
        }
    }
}
