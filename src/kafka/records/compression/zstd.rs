//! zstd (attribute value 4): the zstd crate, with one compression and one
//! decompression context per thread.

use super::{read_bounded, Codec, CodecError, Compression, ReadStream, SnappyFraming, STREAM_BUFFER};
use ::zstd::bulk::Compressor;
use ::zstd::stream::read::Decoder;
use ::zstd::zstd_safe::{compress_bound, DCtx};
use std::cell::RefCell;
use std::io::{self, BufReader};

/// zstd level used when re-compressing: Kafka's `compression.zstd.level`
/// default.
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    /// One zstd compression and one decompression context per thread:
    /// creating one (and its window buffers) costs more than handling a
    /// small batch. A decoder over a reused context starts a fresh session.
    static ZSTD: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

fn with_dctx<T>(f: impl FnOnce(&mut DCtx<'static>) -> Result<T, CodecError>) -> Result<T, CodecError> {
    ZSTD_D.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = DCtx::try_create();
        }
        match slot.as_mut() {
            Some(dctx) => f(dctx),
            None => Err(CodecError::failed(Compression::Zstd, "cannot allocate a decompression context")),
        }
    })
}

pub(super) struct Zstd;

impl Codec for Zstd {
    const KIND: Compression = Compression::Zstd;

    fn compress_into(data: &[u8], _: SnappyFraming, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let err = |e| CodecError::failed(Self::KIND, e);
        ZSTD.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Compressor::new(ZSTD_LEVEL).map_err(err)?);
            }
            let c = slot.as_mut().expect("just set");
            let start = out.len();
            out.reserve(compress_bound(data.len()));
            // A cursor at the end: zstd writes into the spare capacity
            // after what `out` already holds.
            let mut at_end = io::Cursor::new(&mut *out);
            at_end.set_position(start as u64);
            c.compress_to_buffer(data, &mut at_end).map(|_| ()).map_err(err)
        })
    }

    fn decompress_into(data: &[u8], out: &mut Vec<u8>, room: usize) -> Result<SnappyFraming, CodecError> {
        with_dctx(|dctx| read_bounded(Self::KIND, Decoder::with_context(data, dctx), out, room))?;
        Ok(SnappyFraming::Xerial)
    }

    fn stream<S: ReadStream>(data: &[u8], reader: S) -> Result<S::Output, CodecError> {
        with_dctx(|dctx| Ok(reader.read(BufReader::with_capacity(STREAM_BUFFER, Decoder::with_context(data, dctx)))))
    }
}
