//! `FrameReader` against a model of Kafka framing. The first input byte
//! sets how the bytes arrive (chunk sizes, `WouldBlock`s between reads);
//! the rest is the byte stream. Whatever the chunking, the reader must
//! yield exactly the frames the model cuts, then the model's error or
//! nothing.
#![no_main]

use std::io::{self, Read};

use kpr_proxy::frame::{Filled, FrameError, FrameReader, MIN_REQUEST_FRAME};
use libfuzzer_sys::fuzz_target;

/// Small enough that announced sizes above it are common in fuzz inputs,
/// large enough that frames take the reader's large-frame path.
const MAX_FRAME: usize = 100_000;

/// Hands out the stream in chunks whose sizes cycle through a pattern
/// drawn from the first input byte, sometimes with a `WouldBlock` first.
struct Trickle<'a> {
    data: &'a [u8],
    pattern: u8,
    reads: usize,
    blocked: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if !self.blocked && self.pattern & 0x80 != 0 && self.reads.is_multiple_of(3) {
            self.blocked = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.blocked = false;
        let chunk = match self.pattern & 0x7f {
            0 => usize::MAX,
            p => 1 + (p as usize * (self.reads % 7 + 1)) % 4099,
        };
        let n = chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The frames a Kafka peer reads from `stream`, and the error it stops at.
fn model(stream: &[u8]) -> (Vec<&[u8]>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= 4 {
        let size = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if size < 0 || (size as usize) < MIN_REQUEST_FRAME {
            return (frames, Some(FrameError::Malformed { size }));
        }
        let size = size as usize;
        if size > MAX_FRAME {
            return (frames, Some(FrameError::TooLarge { size, max: MAX_FRAME }));
        }
        if rest.len() < 4 + size {
            break;
        }
        frames.push(&rest[4..4 + size]);
        rest = &rest[4 + size..];
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pattern, stream)) = data.split_first() else { return };
    let (want_frames, want_error) = model(stream);
    let mut reader = FrameReader::new(MAX_FRAME, MIN_REQUEST_FRAME);
    let mut source = Trickle { data: stream, pattern, reads: 0, blocked: false };
    let mut frames = Vec::new();
    let mut error = None;
    // Every read takes at least one byte or reports the end, so this ends.
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                frames.push(frame);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        match reader.fill_from(&mut source) {
            Ok(Filled::Eof) => break,
            Ok(Filled::Bytes(_)) | Ok(Filled::FrameReady) => {}
            Ok(Filled::OverBudget) => unreachable!("fill_from grows without limit"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("unexpected read error {e}"),
        }
    }
    assert_eq!(frames.len(), want_frames.len(), "frame count");
    for (got, want) in frames.iter().zip(&want_frames) {
        assert_eq!(got.as_slice(), *want);
    }
    assert_eq!(error, want_error);
    if error.is_none() {
        // A large frame's size prefix is dropped once its buffer exists.
        let taken: usize = want_frames.iter().map(|f| 4 + f.len()).sum();
        let left = stream.len() - taken;
        let buffered = reader.buffered();
        assert!(buffered == left || (left >= 4 && buffered == left - 4), "{buffered} bytes buffered of {left} left");
    }
});
