//! Kafka framing: every request and response is a 4-byte big-endian size
//! followed by that many bytes. `FrameReader` accumulates socket reads and
//! yields whole frames, refusing sizes that no valid peer sends before
//! allocating for them.

use std::fmt;
use std::io::{self, Read};

/// Smallest request body: api key, api version, correlation id, client id
/// length.
pub const MIN_REQUEST_FRAME: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The size prefix announces more than the configured maximum.
    TooLarge { size: usize, max: usize },
    /// The size prefix is negative or too small to hold a header.
    Malformed { size: i32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the maximum of {max} bytes (listen.max_frame_bytes)")
            }
            FrameError::Malformed { size } => write!(f, "malformed frame: size prefix {size} cannot hold a Kafka header"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Frames at least this large are read straight into a buffer of their
/// own, allocated once their size is known; smaller ones are cut from the
/// shared read buffer.
const LARGE_FRAME: usize = 32 * 1024;
const READ_BUFFER: usize = 64 * 1024;

/// What one `FrameReader::fill_from` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    Bytes(usize),
    /// The source is at its end.
    Eof,
    /// Nothing was read: take frames with `next_frame` first.
    FrameReady,
}

pub struct FrameReader {
    /// Bytes `[start, end)` are buffered; the vector's length is fixed and
    /// it is zeroed once, not on every read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// A large frame being filled: its bytes so far and its full size.
    large: Option<(Vec<u8>, usize)>,
    max: usize,
    min: usize,
}

impl FrameReader {
    /// `min` is the smallest acceptable frame (requests need a header;
    /// responses need at least a correlation id).
    pub fn new(max: usize, min: usize) -> Self {
        FrameReader { buf: vec![0; READ_BUFFER], start: 0, end: 0, large: None, max, min }
    }

    /// Read once from `src`: into the large frame being filled, else into
    /// the read buffer. A `WouldBlock` error means the source is drained.
    pub fn fill_from(&mut self, src: &mut impl Read) -> io::Result<Filled> {
        if let Some((frame, size)) = &mut self.large {
            if frame.len() == *size {
                return Ok(Filled::FrameReady);
            }
            // `take` stops `read_to_end` at the frame's end. It reads into
            // the capacity reserved up front, zeroing each chunk just before
            // reading into it (mio sockets offer no uninitialised reads), so
            // memory is touched only as bytes arrive.
            let want = (*size - frame.len()) as u64;
            let before = frame.len();
            return match src.take(want).read_to_end(frame) {
                Ok(_) if frame.len() == before => Ok(Filled::Eof),
                Ok(_) => Ok(Filled::Bytes(frame.len() - before)),
                Err(e) if frame.len() > before && e.kind() == io::ErrorKind::WouldBlock => {
                    Ok(Filled::Bytes(frame.len() - before))
                }
                Err(e) => Err(e),
            };
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                // Full of frames not yet taken.
                return Ok(Filled::FrameReady);
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(if n == 0 { Filled::Eof } else { Filled::Bytes(n) })
    }

    /// The next complete frame (without its size prefix), if one is ready.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some((frame, size)) = &self.large {
            if frame.len() < *size {
                return Ok(None);
            }
            return Ok(self.large.take().map(|(frame, _)| frame));
        }
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let size = i32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        if size < 0 || (size as usize) < self.min {
            return Err(FrameError::Malformed { size });
        }
        let size = size as usize;
        if size > self.max {
            return Err(FrameError::TooLarge { size, max: self.max });
        }
        if avail.len() >= 4 + size {
            let frame = avail[4..4 + size].to_vec();
            self.start += 4 + size;
            return Ok(Some(frame));
        }
        if size >= LARGE_FRAME || 4 + size > self.buf.len() {
            // Move what has arrived into the frame's own buffer; the rest is
            // read straight into it.
            let mut frame = Vec::with_capacity(size);
            frame.extend_from_slice(&avail[4..]);
            self.start = self.end;
            self.large = Some((frame, size));
        }
        Ok(None)
    }

    /// Buffered bytes not yet returned as frames nor moved into a frame of
    /// their own: when not empty they start with a size prefix, which a
    /// reader of responses looks at before `next_frame` judges it.
    pub fn unread(&self) -> &[u8] {
        if self.large.is_some() {
            return &[];
        }
        &self.buf[self.start..self.end]
    }

    /// The frame begun and not complete: (its bytes received, its size),
    /// to say how much of it came before a connection closed.
    pub fn partial_frame(&self) -> Option<(usize, usize)> {
        if let Some((frame, size)) = &self.large {
            return (frame.len() < *size).then_some((frame.len(), *size));
        }
        let avail = &self.buf[self.start..self.end];
        let size = usize::try_from(i32::from_be_bytes(avail.get(..4)?.try_into().ok()?)).ok()?;
        (avail.len() - 4 < size).then_some((avail.len() - 4, size))
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start + self.large.as_ref().map_or(0, |(f, _)| f.len())
    }
}

/// Prefix `body` with its size.
pub fn with_size_prefix(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed bytes as the socket would: all of them, in reads as large as
    /// the reader takes, taking frames out as they complete.
    fn feed(r: &mut FrameReader, mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert_ne!(r.fill_from(&mut bytes).unwrap(), Filled::Eof);
            while let Some(f) = r.next_frame().unwrap() {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut r = FrameReader::new(1024, 1);
        let mut wire = with_size_prefix(b"hello world");
        wire.extend(with_size_prefix(b"second"));
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            got.extend(feed(&mut r, chunk));
        }
        assert_eq!(got, vec![b"hello world".to_vec(), b"second".to_vec()]);
        assert_eq!(r.next_frame().unwrap(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn oversize_and_negative_sizes_are_refused_before_allocation() {
        let mut r = FrameReader::new(100, 1);
        r.fill_from(&mut &1000u32.to_be_bytes()[..]).unwrap();
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge { size: 1000, max: 100 }));
        let mut r = FrameReader::new(100, 1);
        r.fill_from(&mut &(-5i32).to_be_bytes()[..]).unwrap();
        assert_eq!(r.next_frame(), Err(FrameError::Malformed { size: -5 }));
        let mut r = FrameReader::new(100, MIN_REQUEST_FRAME);
        r.fill_from(&mut &3u32.to_be_bytes()[..]).unwrap();
        assert!(matches!(r.next_frame(), Err(FrameError::Malformed { size: 3 })));
    }

    #[test]
    fn large_frames_small_frames_and_a_full_buffer_in_any_chunking() {
        let big = vec![7u8; 200_000];
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for i in 0..3000u32 {
            // Many small frames fill the read buffer before any is taken.
            let f = i.to_be_bytes().to_vec();
            wire.extend(with_size_prefix(&f));
            want.push(f);
        }
        wire.extend(with_size_prefix(&big));
        want.push(big.clone());
        wire.extend(with_size_prefix(b"tail"));
        want.push(b"tail".to_vec());
        for chunk in [1, 7, 4096, 50_000, 1 << 20] {
            let mut r = FrameReader::new(1 << 20, 1);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                got.extend(feed(&mut r, piece));
            }
            assert_eq!(got.len(), want.len(), "chunk {chunk}");
            assert!(got == want, "chunk {chunk}");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn a_partial_frame_says_how_much_of_it_came() {
        for size in [100usize, 200_000] {
            let mut r = FrameReader::new(1 << 20, 4);
            let wire = with_size_prefix(&vec![1u8; size]);
            let mut src = &wire[..wire.len() - 10];
            assert_eq!(r.unread(), &[] as &[u8]);
            while r.fill_from(&mut src).unwrap() != Filled::Eof {
                if r.unread().len() >= 4 {
                    assert_eq!(&r.unread()[..4], &(size as u32).to_be_bytes(), "unread starts with the size prefix");
                }
                assert_eq!(r.next_frame().unwrap(), None);
            }
            assert_eq!(r.partial_frame(), Some((size - 10, size)));
        }
        let mut r = FrameReader::new(1 << 20, 4);
        r.fill_from(&mut &with_size_prefix(b"done")[..]).unwrap();
        assert_eq!(r.partial_frame(), None, "a whole frame is no partial one");
    }

    #[test]
    fn a_full_buffer_asks_for_frames_to_be_taken_rather_than_reporting_eof() {
        let mut r = FrameReader::new(1 << 20, 1);
        let mut wire = Vec::new();
        for _ in 0..20_000 {
            wire.extend(with_size_prefix(b"x"));
        }
        let mut src = &wire[..];
        assert!(matches!(r.fill_from(&mut src).unwrap(), Filled::Bytes(_)));
        assert_eq!(r.fill_from(&mut src).unwrap(), Filled::FrameReady);
        assert!(r.next_frame().unwrap().is_some());
    }
}
