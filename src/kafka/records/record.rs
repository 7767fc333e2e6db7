//! One record of a v2 batch (layout in the parent module's doc): walking
//! records and their headers without copying, decoding them whole (for
//! tests, tools and the producer-id log), and writing them.

use super::batch::{decompressed, Batch, BatchHeader};
use super::{corrupt, wire_err, RecordError};
use crate::kafka::wire::{put_varint, put_varlong, Reader};

/// The smallest possible record: length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each.
const MIN_RECORD_BYTES: usize = 7;

/// One record, decoded. Record attributes (unused by Kafka) are not kept.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RecordData {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
}

/// The record count a batch declares, checked against the bytes that could
/// hold it.
pub(super) fn declared_count(header: &BatchHeader, data_len: usize) -> Result<usize, RecordError> {
    let n = usize::try_from(header.records_count)
        .or_else(|_| corrupt(format!("negative record count {}", header.records_count)))?;
    if n > data_len / MIN_RECORD_BYTES + 1 {
        return corrupt(format!("{n} records cannot fit in {data_len} bytes"));
    }
    Ok(n)
}

/// Split the next record off `r`: its declared length and its body.
pub(super) fn next_record<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], RecordError> {
    let at = r.position();
    let len = r.varint().map_err(wire_err("record length"))?;
    let len = usize::try_from(len).or_else(|_| corrupt(format!("negative record length {len} at byte {at}")))?;
    r.take(len).map_err(wire_err("record"))
}

/// Optional bytes (length -1 = null) inside a record.
pub(super) fn nullable_bytes<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
    let at = r.position();
    match r.varint().map_err(wire_err(what))? {
        -1 => Ok(None),
        n if n >= 0 => r.take(n as usize).map(Some).map_err(wire_err(what)),
        n => corrupt(format!("{what} length {n} at byte {at}")),
    }
}

/// Walk a record body up to its header count. Returns the byte position of
/// the header count within `body`, and the count.
pub(super) fn skip_to_headers(body: &[u8]) -> Result<(usize, usize, i32), RecordError> {
    let mut b = Reader::new(body);
    b.i8().map_err(wire_err("record attributes"))?;
    b.varlong().map_err(wire_err("record timestamp delta"))?;
    b.varint().map_err(wire_err("record offset delta"))?;
    nullable_bytes(&mut b, "record key")?;
    nullable_bytes(&mut b, "record value")?;
    let at = b.position();
    let count = b.varint().map_err(wire_err("record header count"))?;
    if count < 0 {
        return corrupt(format!("negative header count {count}"));
    }
    Ok((at, b.position(), count))
}

pub(super) fn decode_record(body: &[u8]) -> Result<RecordData, RecordError> {
    let mut b = Reader::new(body);
    b.i8().map_err(wire_err("record attributes"))?;
    let timestamp_delta = b.varlong().map_err(wire_err("record timestamp delta"))?;
    let offset_delta = b.varint().map_err(wire_err("record offset delta"))?;
    let key = nullable_bytes(&mut b, "record key")?.map(<[u8]>::to_vec);
    let value = nullable_bytes(&mut b, "record value")?.map(<[u8]>::to_vec);
    let count = b.varint().map_err(wire_err("record header count"))?;
    let count = usize::try_from(count).or_else(|_| corrupt(format!("negative header count {count}")))?;
    let count = b.checked_count(count, b.position()).map_err(wire_err("record header count"))?;
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let k = match nullable_bytes(&mut b, "header key")? {
            Some(k) => {
                std::str::from_utf8(k).map_err(|_| RecordError::Corrupt("header key is not UTF-8".into()))?.to_owned()
            }
            None => return corrupt("null header key"),
        };
        let v = nullable_bytes(&mut b, "header value")?.map(<[u8]>::to_vec);
        headers.push((k, v));
    }
    if !b.is_empty() {
        return corrupt(format!("record length covers {} bytes more than its fields", b.remaining()));
    }
    Ok(RecordData { key, value, headers, timestamp_delta, offset_delta })
}

/// Decode all records of a batch (decompressing). For tests, verification
/// and tools; the data path never needs every record decoded.
pub fn records(batch: &Batch) -> Result<Vec<RecordData>, RecordError> {
    let (data, _) = decompressed(batch)?;
    let count = declared_count(&batch.header, data.len())?;
    let mut r = Reader::new(&data);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(decode_record(next_record(&mut r)?)?);
    }
    if !r.is_empty() {
        return corrupt(format!("{} bytes after the {count} records the batch declares", r.remaining()));
    }
    Ok(out)
}

/// Whether a record of the batch may carry header `key`: a search for the
/// key as records encode it (length varint, then the name) in the records,
/// decompressed first if need be. `false` is certain; `true` asks for a
/// closer look with [`record_owners`](super::record_owners), since the same bytes can occur in a
/// record's key or value. Cheap next to walking every record.
pub fn may_carry_header(batch: &Batch, key: &str) -> Result<bool, RecordError> {
    let Ok(len) = i32::try_from(key.len()) else { return Ok(false) };
    let mut needle = Vec::with_capacity(key.len() + 5);
    put_varint(&mut needle, len);
    needle.extend_from_slice(key.as_bytes());
    let (data, _) = decompressed(batch)?;
    Ok(contains(&data, &needle))
}

/// Whether `needle` (not empty) occurs in `hay`: find each occurrence of
/// its first byte, compare the rest.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    let mut from = 0;
    while let Some(at) = hay[from..].iter().position(|&b| b == first) {
        let start = from + at + 1;
        if hay.len() - start < rest.len() {
            return false;
        }
        if &hay[start..start + rest.len()] == rest {
            return true;
        }
        from = start;
    }
    false
}

/// Append one record in wire form.
pub fn write_record(out: &mut Vec<u8>, rec: &RecordData) {
    fn bytes(body: &mut Vec<u8>, b: &Option<Vec<u8>>) {
        match b {
            Some(b) => {
                put_varint(body, b.len() as i32);
                body.extend_from_slice(b);
            }
            None => put_varint(body, -1),
        }
    }
    let mut body = Vec::with_capacity(32);
    body.push(0); // attributes
    put_varlong(&mut body, rec.timestamp_delta);
    put_varint(&mut body, rec.offset_delta);
    bytes(&mut body, &rec.key);
    bytes(&mut body, &rec.value);
    put_varint(&mut body, rec.headers.len() as i32);
    for (k, v) in &rec.headers {
        put_varint(&mut body, k.len() as i32);
        body.extend_from_slice(k.as_bytes());
        bytes(&mut body, v);
    }
    put_varint(out, body.len() as i32);
    out.extend_from_slice(&body);
}

