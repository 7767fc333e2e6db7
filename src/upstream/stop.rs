//! Ending the proxy's control connections at shutdown. The threads that
//! own them (look-ups, metadata refresh, the producer-id topic reader) read
//! with a blocking `recv` bounded only by `kafka.request_timeout_ms`; a
//! broker that stopped answering would hold each of them, and so the
//! proxy's exit, that long. Shutting a socket down wakes its blocked `recv`
//! at once (it reads end-of-stream), so the call fails like any lost
//! connection and the thread sees the shutdown flag.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Default)]
pub struct ControlSockets {
    inner: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    stopped: bool,
    next_id: u64,
    /// A second handle (dup'd descriptor) of each open control socket.
    sockets: HashMap<u64, TcpStream>,
}

/// Held by a control connection; unregisters its socket when dropped.
pub struct Registration {
    owner: Arc<ControlSockets>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.owner.inner.lock().sockets.remove(&self.id);
    }
}

pub fn stopped_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the proxy is shutting down")
}

impl ControlSockets {
    /// Track `tcp` until the registration is dropped; refused once stopped,
    /// so no connection opened after the shutdown can block it.
    pub fn register(self: &Arc<Self>, tcp: &TcpStream) -> io::Result<Registration> {
        let handle = tcp.try_clone()?;
        let mut open = self.inner.lock();
        if open.stopped {
            return Err(stopped_error());
        }
        open.next_id += 1;
        let id = open.next_id;
        open.sockets.insert(id, handle);
        Ok(Registration { owner: self.clone(), id })
    }

    pub fn is_stopped(&self) -> bool {
        self.inner.lock().stopped
    }

    /// Shut every open control socket down (waking reads blocked on them)
    /// and refuse new ones. Returns how many were open.
    pub fn stop(&self) -> usize {
        let mut open = self.inner.lock();
        open.stopped = true;
        for socket in open.sockets.values() {
            socket.shutdown(Shutdown::Both).ok();
        }
        open.sockets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn stop_wakes_a_read_the_peer_never_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _silent_peer = listener.accept().unwrap();
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let sockets = Arc::new(ControlSockets::default());
        let registration = sockets.register(&client).unwrap();
        let reader = std::thread::spawn(move || {
            let started = Instant::now();
            let read = client.read(&mut [0u8; 16]);
            (read.ok(), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sockets.stop(), 1);
        let (read, waited) = reader.join().unwrap();
        assert_eq!(read, Some(0), "a shut-down socket reads end-of-stream");
        assert!(waited < Duration::from_secs(5), "the read waited {waited:?}");
        drop(registration);
        assert!(sockets.inner.lock().sockets.is_empty());
    }

    #[test]
    fn no_socket_is_registered_after_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let sockets = Arc::new(ControlSockets::default());
        sockets.stop();
        assert!(sockets.is_stopped());
        assert!(sockets.register(&client).is_err());
    }
}
