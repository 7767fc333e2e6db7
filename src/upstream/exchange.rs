//! One request and its answer on a blocking control connection, with what
//! went wrong said in words (`misbehaviour`): a broker that does not answer
//! within kafka.request_timeout_ms (a read timeout, "os error 11" in the
//! raw), closes the connection, or sends what is not a Kafka response.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::control::UpstreamError;
use super::misbehaviour::{bad_size_prefix, closed_mid_response, closed_without_answer, did_not_answer};
use crate::frame::with_size_prefix;
use crate::kafka::api::api_name;
use crate::net::tls::BlockingStream;

/// The largest response a control request takes (as the data path's).
const MAX_RESPONSE: usize = 1 << 30;

/// How long to wait for the rest of a text a peer that is not Kafka sent,
/// to quote it.
const QUOTE_WAIT: Duration = Duration::from_millis(200);

/// Who is asked, for the messages: the broker's name ("broker 1
/// (host:port)"), its address, whether this is the first request on the
/// connection (nothing answered yet), and the read timeout set on it.
pub struct Asked<'a> {
    pub name: String,
    pub addr: &'a str,
    pub first: bool,
    pub request_timeout: Duration,
}

impl Asked<'_> {
    fn misbehaved(&self, what: String) -> UpstreamError {
        UpstreamError::Misbehaved { addr: self.addr.to_string(), message: format!("{} {what}", self.name) }
    }

    /// An I/O error in words: a timeout or a closed connection are the
    /// broker's doing; anything else is an I/O failure as before.
    fn io_error(&self, e: io::Error, api: &str) -> UpstreamError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.misbehaved(did_not_answer(api, self.request_timeout, Duration::ZERO))
            }
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => self.misbehaved(closed_without_answer(api, self.first)),
            _ => UpstreamError::Io { addr: self.addr.to_string(), source: e },
        }
    }
}

/// Write one request frame and read its answer.
pub fn exchange(stream: &mut BlockingStream, asked: &Asked<'_>, frame: &[u8]) -> Result<Vec<u8>, UpstreamError> {
    let api = &api_name(frame.get(..2).map_or(-1, |k| i16::from_be_bytes([k[0], k[1]])));
    stream.write_all(&with_size_prefix(frame)).map_err(|e| asked.io_error(e, api))?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).map_err(|e| asked.io_error(e, api))?;
    if let Some(what) = bad_size_prefix(&head, MAX_RESPONSE) {
        let mut seen = head.to_vec();
        seen.extend(more_to_quote(stream));
        return Err(asked.misbehaved(bad_size_prefix(&seen, MAX_RESPONSE).unwrap_or(what)));
    }
    let size = i32::from_be_bytes(head) as usize;
    let mut buf = vec![0u8; size];
    let mut got = 0;
    while got < size {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(asked.misbehaved(closed_mid_response(got, size))),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted) => {
                return Err(asked.misbehaved(closed_mid_response(got, size)))
            }
            Err(e) => return Err(asked.io_error(e, api)),
        }
    }
    Ok(buf)
}

/// What more the peer sent at once (it is not Kafka: a line of text to
/// quote), waiting briefly; the connection is dropped after this anyway.
fn more_to_quote(stream: &mut BlockingStream) -> Vec<u8> {
    let _ = tcp(stream).set_read_timeout(Some(QUOTE_WAIT));
    let mut more = [0u8; 60];
    match stream.read(&mut more) {
        Ok(n) => more[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

fn tcp(stream: &BlockingStream) -> &TcpStream {
    match stream {
        BlockingStream::Plain(s) => s,
        BlockingStream::Tls(s) => s.get_ref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A peer on 127.0.0.1 that reads one request and answers `answer`
    /// (then closes, unless `hang`).
    fn peer(answer: &'static [u8], hang: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
            if hang {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        addr
    }

    fn ask(addr: &str, timeout: Duration) -> String {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        let mut stream = BlockingStream::Plain(s);
        let asked = Asked { name: format!("broker {addr}"), addr, first: true, request_timeout: timeout };
        // ApiVersions v0, correlation id 1.
        let frame = [0, 18, 0, 0, 0, 0, 0, 1, 0, 0];
        exchange(&mut stream, &asked, &frame).unwrap_err().to_string()
    }

    #[test]
    fn a_silent_broker_is_a_timeout_not_os_error_11_and_an_http_server_is_quoted() {
        let cases: [(&[u8], bool, u64, &str); 2] = [
            (b"", true, 300, "did not answer ApiVersions within kafka.request_timeout_ms (300 ms)"),
            (
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n",
                false,
                2000,
                "is not a Kafka broker: got 'HTTP/1.1 400 Bad Request' where a response size was expected",
            ),
        ];
        for (answer, hang, timeout_ms, what) in cases {
            let addr = peer(answer, hang);
            assert_eq!(ask(&addr, Duration::from_millis(timeout_ms)), format!("broker {addr} {what}"));
        }
    }

    #[test]
    fn a_cut_answer_says_how_much_came() {
        let addr = peer(b"\x00\x00\x00\x64\x00\x00\x00\x01abc", false);
        assert_eq!(ask(&addr, Duration::from_secs(2)), format!("broker {addr} closed the connection mid-response (got 7 of 100 bytes)"));
        let addr = peer(b"", false);
        assert!(ask(&addr, Duration::from_secs(2)).starts_with(&format!(
            "broker {addr} closed the connection without answering ApiVersions (is kafka.security_protocol right?"
        )));
    }
}
