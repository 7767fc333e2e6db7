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
//!
//! A TLS socket keeps its session under that same lock, the only lock a
//! socket has: the loop's reads and handshake steps and the workers' writes
//! all take it, one at a time. Plaintext to send is queued there and
//! encrypted as the socket takes it; before the handshake is done it only
//! queues, and the loop sends it when the handshake completes.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use mio::net::TcpStream;
use mio::Token;
use parking_lot::Mutex;

use super::tls::{TlsSession, Wire};

/// Plaintext handed to OpenSSL per write: one TLS record's worth.
const TLS_WRITE_CHUNK: usize = 16 * 1024;

pub struct SharedSocket {
    pub stream: Arc<TcpStream>,
    pub token: Token,
    pub peer: SocketAddr,
    out: Mutex<Pending>,
    closed: AtomicBool,
    /// Requests read from this (client) socket and not yet answered.
    pub flow: FlowControl,
    is_tls: bool,
    /// The subject of the certificate a TLS peer presented (mTLS).
    principal: OnceLock<String>,
    /// A client that logged in with SASL (set by its worker): the event
    /// loop's handshake deadline no longer applies.
    authenticated: AtomicBool,
}

/// How far a TLS handshake is (see `SharedSocket::advance_handshake`).
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    Waiting,
    /// Completed by this call.
    JustDone,
    /// Completed before, or no TLS.
    Done,
}

/// How many requests of a client are unanswered: the event loop stops
/// reading past a bound, so a pipelining client cannot queue unbounded
/// work, and reads again once the worker answered half of them.
#[derive(Default)]
pub struct FlowControl {
    in_flight: AtomicUsize,
    /// Set when the event loop stopped reading because of `in_flight`.
    paused: AtomicBool,
}

impl FlowControl {
    /// Whether `limit` requests are unanswered: then reading pauses (the
    /// frames already read wait in the reader).
    pub fn is_full(&self, limit: usize) -> bool {
        let full = self.in_flight.load(Ordering::SeqCst) >= limit;
        if full {
            self.paused.store(true, Ordering::SeqCst);
        }
        full
    }

    /// Count one more request read.
    pub fn admit(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// `n` requests were answered. Returns whether reading was paused and
    /// may resume: at most `resume_at` are left.
    pub fn answered(&self, n: usize, resume_at: usize) -> bool {
        let left = self.in_flight.fetch_sub(n, Ordering::SeqCst) - n;
        self.is_paused() && left <= resume_at
    }

    /// Forget every unanswered request (the client is gone); returns how
    /// many there were.
    pub fn forget_all(&self) -> usize {
        self.in_flight.swap(0, Ordering::SeqCst)
    }

    /// Requests read and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    pos: usize,
    tls: Option<TlsSession>,
    /// Where queued bytes are counted over all sockets of a kind (client
    /// responses: `listen.max_buffered_response_bytes`), and how many of
    /// this socket's are counted there now.
    tally: Option<Arc<AtomicUsize>>,
    tallied: usize,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(tally) = &self.tally {
            tally.fetch_sub(self.tallied, Ordering::SeqCst);
        }
    }
}

impl Pending {
    fn queued(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bring the shared tally up to date after the queue changed.
    fn retally(&mut self) {
        let Some(tally) = &self.tally else { return };
        let now = self.queued();
        if now >= self.tallied {
            tally.fetch_add(now - self.tallied, Ordering::SeqCst);
        } else {
            tally.fetch_sub(self.tallied - now, Ordering::SeqCst);
        }
        self.tallied = now;
    }

    /// `SharedSocket::send_frames` under the lock.
    fn send_slices(&mut self, stream: &TcpStream, slices: &[&[u8]]) -> io::Result<()> {
        if self.tls.is_some() {
            for slice in slices {
                self.buf.extend_from_slice(slice);
            }
            return self.push_tls();
        }
        let mut written = 0;
        if self.pos == self.buf.len() {
            written = write_slices_some(stream, slices)?;
            self.buf.clear();
            self.pos = 0;
        }
        // Queue whatever the kernel did not take.
        let mut skip = written;
        for slice in slices {
            if skip >= slice.len() {
                skip -= slice.len();
                continue;
            }
            self.buf.extend_from_slice(&slice[skip..]);
            skip = 0;
        }
        Ok(())
    }

    /// Encrypt and write queued plaintext as far as the socket takes it
    /// (nothing before the handshake is done).
    fn push_tls(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut().filter(|t| t.is_established()) else { return Ok(()) };
        while self.pos < self.buf.len() {
            // After a WouldBlock OpenSSL wants the same bytes again: the
            // slice starts where it did and is no shorter.
            let end = self.buf.len().min(self.pos + TLS_WRITE_CHUNK);
            match tls.write(&self.buf[self.pos..end]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped reading")),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.written_out();
        Ok(())
    }

    /// Forget what has gone out, once everything has.
    fn written_out(&mut self) -> bool {
        if self.pos < self.buf.len() {
            return false;
        }
        self.buf.clear();
        self.pos = 0;
        // Give back memory a large response left behind.
        if self.buf.capacity() > 1 << 20 {
            self.buf.shrink_to(64 * 1024);
        }
        true
    }
}

impl SharedSocket {
    pub fn new(stream: TcpStream, token: Token, peer: SocketAddr) -> Self {
        SharedSocket {
            stream: Arc::new(stream),
            token,
            peer,
            out: Mutex::new(Pending::default()),
            closed: AtomicBool::new(false),
            flow: FlowControl::default(),
            is_tls: false,
            principal: OnceLock::new(),
            authenticated: AtomicBool::new(false),
        }
    }

    /// Count the bytes queued on this socket in `tally` (with every other
    /// socket counted there) for as long as the socket lives.
    pub fn tally_queued_in(self, tally: Arc<AtomicUsize>) -> Self {
        self.out.lock().tally = Some(tally);
        self
    }

    /// The client logged in with SASL.
    pub fn mark_authenticated(&self) {
        self.authenticated.store(true, Ordering::SeqCst);
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::SeqCst)
    }

    /// A socket that speaks TLS, its session made by `session` over it.
    pub fn with_tls(
        stream: TcpStream,
        token: Token,
        peer: SocketAddr,
        session: impl FnOnce(Wire) -> io::Result<TlsSession>,
    ) -> io::Result<Self> {
        let mut socket = SharedSocket::new(stream, token, peer);
        socket.out.get_mut().tls = Some(session(Wire(socket.stream.clone()))?);
        socket.is_tls = true;
        Ok(socket)
    }

    pub fn is_tls(&self) -> bool {
        self.is_tls
    }

    /// Whether a TLS handshake is still to be done.
    pub fn is_handshaking(&self) -> bool {
        self.is_tls && !self.out.lock().tls.as_ref().is_some_and(TlsSession::is_established)
    }

    /// Connected, and done with the TLS handshake if it has one.
    pub fn is_established(&self) -> bool {
        self.stream.peer_addr().is_ok() && !self.is_handshaking()
    }

    /// The subject of the client certificate (mTLS), once the handshake is done.
    pub fn principal(&self) -> Option<&str> {
        self.principal.get().map(String::as_str)
    }

    /// Take the TLS handshake as far as the socket allows (the event loop
    /// calls this on readiness); once done, send what was queued meanwhile.
    /// Err says why the handshake failed.
    pub fn advance_handshake(&self) -> Result<Handshake, String> {
        let mut out = self.out.lock();
        let Some(tls) = out.tls.as_mut() else { return Ok(Handshake::Done) };
        if tls.is_established() {
            return Ok(Handshake::Done);
        }
        if !tls.handshake()? {
            return Ok(Handshake::Waiting);
        }
        if let Some(subject) = tls.peer_subject() {
            let _ = self.principal.set(subject);
        }
        let pushed = out.push_tls();
        out.retally();
        pushed.map_err(|e| format!("write failed: {e}"))?;
        Ok(Handshake::JustDone)
    }

    /// Send `bytes` in order after everything sent before. Returns an error
    /// only when the socket is closed or broken.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        self.send_slices(&[bytes])
    }

    /// Send one Kafka frame: its 4-byte size, then `body`, written together
    /// (vectored) so the body is not copied just to prefix it.
    pub fn send_frame(&self, body: &[u8]) -> io::Result<()> {
        self.send_frames(&[body])
    }

    /// Send several Kafka frames, in order, with as few system calls as the
    /// kernel allows: a request split into rounds goes out in one write
    /// rather than one per round.
    pub fn send_frames(&self, bodies: &[&[u8]]) -> io::Result<()> {
        let prefixes: Vec<[u8; 4]> = bodies.iter().map(|b| (b.len() as u32).to_be_bytes()).collect();
        let slices: Vec<&[u8]> = prefixes.iter().zip(bodies).flat_map(|(p, b)| [&p[..], *b]).collect();
        self.send_slices(&slices)
    }

    fn send_slices(&self, slices: &[&[u8]]) -> io::Result<()> {
        if self.is_closed() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed"));
        }
        let mut out = self.out.lock();
        let result = out.send_slices(&self.stream, slices);
        out.retally();
        result
    }

    /// Write queued bytes; called by the event loop on writable readiness.
    /// Returns whether everything queued has been written.
    pub fn flush(&self) -> io::Result<bool> {
        let mut out = self.out.lock();
        if out.tls.is_some() {
            out.push_tls()?;
        } else if out.pos < out.buf.len() {
            let pos = out.pos;
            let n = write_some(&self.stream, &out.buf[pos..])?;
            out.pos += n;
        }
        let done = out.written_out();
        out.retally();
        Ok(done)
    }

    pub fn queued_bytes(&self) -> usize {
        self.out.lock().queued()
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

/// Reads are the event loop's: plaintext, decrypted when the socket
/// speaks TLS (`WouldBlock` until its handshake is done).
impl Read for &SharedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.is_tls {
            return (&*self.stream).read(buf);
        }
        match self.out.lock().tls.as_mut() {
            Some(tls) if tls.is_established() => tls.read(buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Write `slices` one after another with as few system calls as the
/// kernel allows, without blocking; returns how many bytes went out.
fn write_slices_some(mut stream: &TcpStream, slices: &[&[u8]]) -> io::Result<usize> {
    // Linux takes at most IOV_MAX (1024) buffers per call.
    const MAX_IOVECS: usize = 1024;
    let total: usize = slices.iter().map(|s| s.len()).sum();
    let mut written = 0;
    // Where `written` falls: slice index and offset inside it.
    let (mut first, mut offset) = (0, 0);
    while written < total {
        while offset >= slices[first].len() {
            offset -= slices[first].len();
            first += 1;
        }
        let end = slices.len().min(first + MAX_IOVECS);
        let iov: Vec<IoSlice> = std::iter::once(IoSlice::new(&slices[first][offset..]))
            .chain(slices[first + 1..end].iter().map(|s| IoSlice::new(s)))
            .collect();
        match stream.write_vectored(&iov) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped reading")),
            Ok(n) => {
                written += n;
                offset += n;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A shared (non-blocking) socket and the blocking peer that reads it.
    fn connected_pair() -> (SharedSocket, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let peer = stream.peer_addr().unwrap();
        (SharedSocket::new(TcpStream::from_std(stream), Token(7), peer), reader)
    }

    /// Frames larger than the kernel's socket buffers: the part the kernel
    /// does not take is queued, and flushing delivers every byte in order.
    #[test]
    fn send_frames_queues_what_the_kernel_does_not_take() {
        let (socket, mut reader) = connected_pair();

        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3_000_000 + i as usize]).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        socket.send_frames(&refs[..2]).unwrap();
        socket.send_frame(refs[2]).unwrap();
        socket.send_frames(&refs[3..]).unwrap();
        assert!(socket.queued_bytes() > 0, "15 MB should not fit in the socket buffers");

        let expected_len: usize = bodies.iter().map(|b| 4 + b.len()).sum();
        let reading = std::thread::spawn(move || {
            let mut got = vec![0u8; expected_len];
            reader.read_exact(&mut got).unwrap();
            got
        });
        while !socket.flush().unwrap() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let got = reading.join().unwrap();
        let mut at = 0;
        for body in &bodies {
            assert_eq!(&got[at..at + 4], &(body.len() as u32).to_be_bytes());
            assert!(got[at + 4..at + 4 + body.len()] == body[..]);
            at += 4 + body.len();
        }
    }

    /// Queued bytes are counted in the shared tally while queued, and
    /// uncounted when written or when the socket goes.
    #[test]
    fn queued_bytes_are_tallied_until_written_or_dropped() {
        let (socket, mut reader) = connected_pair();
        let tally = Arc::new(AtomicUsize::new(0));
        let socket = socket.tally_queued_in(tally.clone());
        let body = vec![1u8; 8_000_000];
        socket.send_frame(&body).unwrap();
        let queued = socket.queued_bytes();
        assert!(queued > 0, "8 MB should not fit in the socket buffers");
        assert_eq!(tally.load(Ordering::SeqCst), queued);
        let reading = std::thread::spawn(move || {
            let mut got = vec![0u8; 4 + 8_000_000];
            reader.read_exact(&mut got).unwrap();
            reader
        });
        while !socket.flush().unwrap() {
            assert_eq!(tally.load(Ordering::SeqCst), socket.queued_bytes());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(tally.load(Ordering::SeqCst), 0);
        let _reader = reading.join().unwrap();
        // A socket dropped with bytes still queued gives them back.
        socket.send_frame(&body).unwrap();
        assert!(tally.load(Ordering::SeqCst) > 0);
        drop(socket);
        assert_eq!(tally.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn many_small_frames_exceed_one_system_calls_buffer_limit() {
        let (socket, mut reader) = connected_pair();
        // 1500 frames = 3000 slices, more than IOV_MAX in one call.
        let bodies: Vec<Vec<u8>> = (0..1500u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        socket.send_frames(&refs).unwrap();
        while !socket.flush().unwrap() {}
        let mut got = vec![0u8; 1500 * 8];
        reader.read_exact(&mut got).unwrap();
        for (i, frame) in got.chunks(8).enumerate() {
            assert_eq!(frame[..4], 4u32.to_be_bytes());
            assert_eq!(frame[4..], (i as u32).to_be_bytes());
        }
    }
}
