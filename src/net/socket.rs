//! A non-blocking TCP socket shared between the event loop and a worker.
//!
//! The event loop does all reads. Writes come from whichever thread has
//! bytes to send (workers writing requests upstream or responses to the
//! client): they go straight to the kernel when it has room, and what it
//! does not take is queued here and flushed by the event loop when the
//! socket reports writable. The socket is registered for both readable and
//! writable readiness from the start, so no re-registration is needed: a
//! writable edge after a short write always reaches the loop, because the
//! short write and the queueing happen under the same lock the loop takes to
//! flush.

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mio::net::TcpStream;
use mio::Token;
use parking_lot::Mutex;

pub struct SharedSocket {
    pub stream: TcpStream,
    pub token: Token,
    pub peer: SocketAddr,
    out: Mutex<Pending>,
    closed: AtomicBool,
    /// Requests read from this (client) socket not yet answered; the event
    /// loop stops reading past a bound so a pipelining client cannot queue
    /// unbounded work.
    pub in_flight: AtomicUsize,
    /// Set by the event loop when it stopped reading because of `in_flight`.
    pub read_paused: AtomicBool,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    pos: usize,
}

impl SharedSocket {
    pub fn new(stream: TcpStream, token: Token, peer: SocketAddr) -> Self {
        SharedSocket {
            stream,
            token,
            peer,
            out: Mutex::new(Pending::default()),
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            read_paused: AtomicBool::new(false),
        }
    }

    /// Send `bytes` in order after everything sent before. Returns an error
    /// only when the socket is closed or broken.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        if self.is_closed() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed"));
        }
        let mut out = self.out.lock();
        let mut written = 0;
        if out.pos == out.buf.len() {
            written = write_some(&self.stream, bytes)?;
            if written == bytes.len() {
                return Ok(());
            }
            out.buf.clear();
            out.pos = 0;
        }
        out.buf.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Send one Kafka frame: its 4-byte size, then `body`, written together
    /// (vectored) so the body is not copied just to prefix it.
    pub fn send_frame(&self, body: &[u8]) -> io::Result<()> {
        if self.is_closed() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed"));
        }
        let prefix = (body.len() as u32).to_be_bytes();
        let mut out = self.out.lock();
        let mut written = 0;
        let total = prefix.len() + body.len();
        if out.pos == out.buf.len() {
            written = write_frame_some(&self.stream, &prefix, body)?;
            if written == total {
                return Ok(());
            }
            out.buf.clear();
            out.pos = 0;
        }
        if written < prefix.len() {
            out.buf.extend_from_slice(&prefix[written..]);
            out.buf.extend_from_slice(body);
        } else {
            out.buf.extend_from_slice(&body[written - prefix.len()..]);
        }
        Ok(())
    }

    /// Write queued bytes; called by the event loop on writable readiness.
    /// Returns whether everything queued has been written.
    pub fn flush(&self) -> io::Result<bool> {
        let mut out = self.out.lock();
        if out.pos < out.buf.len() {
            let pos = out.pos;
            let n = write_some(&self.stream, &out.buf[pos..])?;
            out.pos += n;
        }
        if out.pos == out.buf.len() {
            out.buf.clear();
            out.pos = 0;
            // Give back memory a large response left behind.
            if out.buf.capacity() > 1 << 20 {
                out.buf.shrink_to(64 * 1024);
            }
            return Ok(true);
        }
        Ok(false)
    }

    pub fn queued_bytes(&self) -> usize {
        let out = self.out.lock();
        out.buf.len() - out.pos
    }

    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn shutdown(&self) {
        self.mark_closed();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Write prefix and body with as few system calls as the kernel allows,
/// without blocking; returns how many bytes of the two went out.
fn write_frame_some(mut stream: &TcpStream, prefix: &[u8], body: &[u8]) -> io::Result<usize> {
    let total = prefix.len() + body.len();
    let mut written = 0;
    while written < total {
        let result = if written < prefix.len() {
            stream.write_vectored(&[IoSlice::new(&prefix[written..]), IoSlice::new(body)])
        } else {
            stream.write(&body[written - prefix.len()..])
        };
        match result {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped reading")),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Write as much as the kernel takes without blocking.
fn write_some(mut stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped reading")),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
