//! Kafka framing: every request and response is a 4-byte big-endian size
//! followed by that many bytes. `FrameReader` accumulates socket reads and
//! yields whole frames, refusing sizes that no valid peer sends before
//! allocating for them.

use std::fmt;

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

pub struct FrameReader {
    /// Bytes `[start, end)` are buffered; the rest is space to read into.
    /// The vector's length is its usable size, zeroed once when it grows,
    /// not on every read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    min: usize,
}

impl FrameReader {
    /// `min` is the smallest acceptable frame (requests need a header;
    /// responses need at least a correlation id).
    pub fn new(max: usize, min: usize) -> Self {
        FrameReader { buf: vec![0; 64 * 1024], start: 0, end: 0, max, min }
    }

    /// Space to read into: at least `want` bytes after the buffered ones.
    pub fn read_space(&mut self, want: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < want {
            // Move what is buffered to the front; grow only if that is not
            // enough room.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < want {
                let len = (self.end + want).next_power_of_two();
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Keep `n` of the bytes last handed out by `read_space`.
    pub fn commit(&mut self, n: usize) {
        self.end += n;
    }

    /// The next complete frame (without its size prefix), if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
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
        if avail.len() < 4 + size {
            return Ok(None);
        }
        let frame = avail[4..4 + size].to_vec();
        self.start += 4 + size;
        if self.start == self.end && self.buf.len() > 4 << 20 {
            // Give back what one huge frame made us grow to.
            self.buf = vec![0; 64 * 1024];
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(frame))
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
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

    fn feed(r: &mut FrameReader, bytes: &[u8]) {
        let space = r.read_space(bytes.len());
        space[..bytes.len()].copy_from_slice(bytes);
        r.commit(bytes.len());
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut r = FrameReader::new(1024, 1);
        let mut wire = with_size_prefix(b"hello world");
        wire.extend(with_size_prefix(b"second"));
        for chunk in wire.chunks(3) {
            feed(&mut r, chunk);
        }
        assert_eq!(r.next_frame().unwrap().unwrap(), b"hello world");
        assert_eq!(r.next_frame().unwrap().unwrap(), b"second");
        assert_eq!(r.next_frame().unwrap(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn oversize_and_negative_sizes_are_refused_before_allocation() {
        let mut r = FrameReader::new(100, 1);
        feed(&mut r, &1000u32.to_be_bytes());
        assert_eq!(r.next_frame(), Err(FrameError::TooLarge { size: 1000, max: 100 }));
        let mut r = FrameReader::new(100, 1);
        feed(&mut r, &(-5i32).to_be_bytes());
        assert_eq!(r.next_frame(), Err(FrameError::Malformed { size: -5 }));
        let mut r = FrameReader::new(100, MIN_REQUEST_FRAME);
        feed(&mut r, &3u32.to_be_bytes());
        assert!(matches!(r.next_frame(), Err(FrameError::Malformed { size: 3 })));
    }

    #[test]
    fn a_frame_larger_than_the_buffer_grows_it_and_buffered_bytes_survive_compaction() {
        let mut r = FrameReader::new(1 << 20, 1);
        let big = vec![7u8; 200_000];
        let mut wire = with_size_prefix(b"small");
        wire.extend(with_size_prefix(&big));
        wire.extend(with_size_prefix(b"tail"));
        for chunk in wire.chunks(50_000) {
            feed(&mut r, chunk);
        }
        assert_eq!(r.next_frame().unwrap().unwrap(), b"small");
        assert_eq!(r.next_frame().unwrap().unwrap(), big);
        assert_eq!(r.next_frame().unwrap().unwrap(), b"tail");
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn partial_reads_keep_only_what_arrived() {
        let mut r = FrameReader::new(1024, 1);
        let space = r.read_space(100);
        space[..6].copy_from_slice(&[0, 0, 0, 2, b'o', b'k']);
        r.commit(6);
        assert_eq!(r.next_frame().unwrap().unwrap(), b"ok");
    }
}
