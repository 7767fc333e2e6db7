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

/// Frames at least this large are read into a buffer of their own, which
/// grows as their bytes arrive; smaller ones are cut from the shared read
/// buffer.
const LARGE_FRAME: usize = 32 * 1024;
const READ_BUFFER: usize = 64 * 1024;
/// A large frame's buffer grows geometrically (few reallocations) but by at
/// most this much at a time, so what it holds beyond the bytes that arrived
/// stays small: the announced size is never reserved up front.
const MAX_GROWTH_STEP: usize = 4 * 1024 * 1024;

/// What one `FrameReader::fill_from` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    Bytes(usize),
    /// The source is at its end.
    Eof,
    /// Nothing was read: take frames with `next_frame` first.
    FrameReady,
    /// Nothing was read: the large frame being filled needs a larger buffer
    /// and the caller allowed no more growth (`fill_within`).
    OverBudget,
}

/// A large frame being filled. `buf[..filled]` has arrived; `buf` is
/// zeroed up to its length (reads need initialised memory), which runs at
/// most one read ahead of `filled`, so untouched capacity costs no RSS.
struct LargeFrame {
    buf: Vec<u8>,
    filled: usize,
    size: usize,
}

impl LargeFrame {
    fn is_complete(&self) -> bool {
        self.filled == self.size
    }

    /// Make room for the next read: zero up to one read buffer of the
    /// capacity, growing the capacity (by at most `may_grow` bytes) when it
    /// is all used. False when it is and `may_grow` is 0.
    fn make_room(&mut self, may_grow: usize) -> bool {
        if self.filled < self.buf.len() {
            return true;
        }
        if self.buf.len() == self.buf.capacity() {
            let step = self.filled.clamp(READ_BUFFER, MAX_GROWTH_STEP).min(self.size - self.filled).min(may_grow);
            if step == 0 {
                return false;
            }
            self.buf.reserve_exact(step);
        }
        let zeroed = self.buf.capacity().min(self.size).min(self.filled + READ_BUFFER);
        self.buf.resize(zeroed, 0);
        true
    }
}

pub struct FrameReader {
    /// Bytes `[start, end)` are buffered; the vector's length is fixed and
    /// it is zeroed once, not on every read. Empty until the first read and
    /// after `release_idle_buffer`: an idle connection holds no buffer.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    large: Option<LargeFrame>,
    max: usize,
    min: usize,
}

impl FrameReader {
    /// `min` is the smallest acceptable frame (requests need a header;
    /// responses need at least a correlation id).
    pub fn new(max: usize, min: usize) -> Self {
        FrameReader { buf: Vec::new(), start: 0, end: 0, large: None, max, min }
    }

    /// Read once from `src`: into the large frame being filled, else into
    /// the read buffer. A `WouldBlock` error means the source is drained.
    pub fn fill_from(&mut self, src: &mut impl Read) -> io::Result<Filled> {
        self.fill_within(src, usize::MAX)
    }

    /// `fill_from`, letting a large frame's buffer grow by at most
    /// `may_grow` bytes (what is left of a memory budget); `OverBudget`
    /// when it must grow and may not.
    pub fn fill_within(&mut self, src: &mut impl Read, may_grow: usize) -> io::Result<Filled> {
        if let Some(large) = &mut self.large {
            if large.is_complete() {
                return Ok(Filled::FrameReady);
            }
            if !large.make_room(may_grow) {
                return Ok(Filled::OverBudget);
            }
            let n = src.read(&mut large.buf[large.filled..])?;
            large.filled += n;
            return Ok(if n == 0 { Filled::Eof } else { Filled::Bytes(n) });
        }
        if self.buf.is_empty() {
            self.buf = vec![0; READ_BUFFER];
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
        if let Some(large) = &self.large {
            if !large.is_complete() {
                return Ok(None);
            }
            return Ok(self.large.take().map(|mut large| {
                large.buf.truncate(large.size);
                large.buf
            }));
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
            // Move what has arrived into the frame's own buffer, sized for
            // it alone; the rest is read straight into it as it comes.
            let buf = avail[4..].to_vec();
            let filled = buf.len();
            self.start = self.end;
            self.large = Some(LargeFrame { buf, filled, size });
        }
        Ok(None)
    }

    /// Give back the read buffer if it holds nothing (a connection gone
    /// quiet); the next read allocates it again.
    pub fn release_idle_buffer(&mut self) {
        if self.start == self.end && self.large.is_none() {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Bytes allocated for the large frame being filled (0 if none): what
    /// a memory budget charges this reader beyond its fixed read buffer.
    pub fn allocated(&self) -> usize {
        self.large.as_ref().map_or(0, |l| l.buf.capacity())
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start + self.large.as_ref().map_or(0, |l| l.filled)
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
        r.release_idle_buffer();
        assert_eq!(feed(&mut r, &with_size_prefix(b"after a rest")), vec![b"after a rest".to_vec()]);
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

    #[test]
    fn a_large_frames_buffer_grows_with_its_bytes_not_its_announced_size() {
        let size = 10 << 20;
        let mut r = FrameReader::new(100 << 20, 1);
        // The announcement alone (100 MiB allowed) reserves nothing large.
        let mut wire = (size as u32).to_be_bytes().to_vec();
        wire.push(1);
        assert_eq!(feed(&mut r, &wire), Vec::<Vec<u8>>::new());
        assert!(r.allocated() <= READ_BUFFER, "allocated {} for 1 byte", r.allocated());
        let body = vec![9u8; size - 1];
        let mut frames = Vec::new();
        let mut reallocations = 0;
        for piece in body.chunks(100_000) {
            let before = r.allocated();
            frames.extend(feed(&mut r, piece));
            if frames.is_empty() {
                let arrived = r.buffered();
                assert!(r.allocated() <= arrived + arrived.clamp(READ_BUFFER, MAX_GROWTH_STEP), "{} allocated for {arrived} bytes", r.allocated());
                reallocations += usize::from(r.allocated() != before);
            }
        }
        assert!(reallocations < 12, "{reallocations} reallocations for 10 MiB: growth is not geometric");
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].len(), size);
        assert!(frames[0][0] == 1 && frames[0][1..].iter().all(|&b| b == 9));
        assert_eq!((r.allocated(), r.buffered()), (0, 0));
    }

    #[test]
    fn growth_stops_at_the_allowance_and_resumes_when_allowed() {
        let size = 1 << 20;
        let mut wire = (size as u32).to_be_bytes().to_vec();
        wire.extend(vec![5u8; size]);
        let mut r = FrameReader::new(size, 1);
        let mut src = &wire[..];
        assert!(matches!(r.fill_within(&mut src, 0).unwrap(), Filled::Bytes(_)));
        assert_eq!(r.next_frame().unwrap(), None);
        // The read buffer's bytes moved into a buffer of their own; it is full.
        let held = r.allocated();
        assert_eq!(held, r.buffered());
        assert_eq!(r.fill_within(&mut src, 0).unwrap(), Filled::OverBudget);
        assert!(matches!(r.fill_within(&mut src, 1000).unwrap(), Filled::Bytes(1000)));
        assert_eq!(r.allocated(), held + 1000, "grew by exactly the allowance");
        assert_eq!(r.fill_within(&mut src, 0).unwrap(), Filled::OverBudget);
        loop {
            match r.fill_within(&mut src, usize::MAX).unwrap() {
                Filled::Bytes(_) => {}
                Filled::FrameReady => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.allocated(), size, "never more than the frame itself");
        let frame = r.next_frame().unwrap().unwrap();
        assert!(frame.len() == size && frame.iter().all(|&b| b == 5));
    }
}
