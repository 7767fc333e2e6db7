//! TLS for both sides of the proxy, with OpenSSL (the `openssl` crate).
//!
//! native-tls, which the design card names, wraps the same OpenSSL on
//! Linux but its `TlsAcceptor` cannot ask for or verify client
//! certificates (no CA list, no verify mode), which mTLS needs; and its
//! streams hide the `WANT_READ`/`WANT_WRITE` distinction a non-blocking
//! event loop drives a handshake by. So one stream type, OpenSSL's
//! `SslStream`, serves the whole net layer: accepted client connections,
//! the sessions' upstream connections (both non-blocking, driven by the
//! event loop) and the blocking control connections.
//!
//! Files are read when the configuration is turned into settings, so a
//! missing or malformed certificate or key stops the start with a
//! configuration error naming the field.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    self, ErrorCode, Ssl, SslAcceptor, SslConnector, SslMethod, SslOptions, SslRef, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509NameRef, X509};

use crate::config::{KafkaTls, ListenTls};

/// A TLS handshake with a broker not done within this closes its
/// connection (clients have `listen.handshake_timeout_ms`): a peer that
/// stalls mid-handshake costs one connection for this long, never a thread.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy's server side (`listen.security.tls`).
pub struct ServerTls {
    acceptor: SslAcceptor,
    pub client_auth: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTls {{ client_auth: {} }}", self.client_auth)
    }
}

impl ServerTls {
    pub fn from_config(tls: &ListenTls) -> Result<ServerTls, String> {
        let field = "listen.security.tls";
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| openssl_setup(&e))?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| openssl_setup(&e))?;
        // Renegotiation would let a read need a write mid-stream for no gain.
        builder.set_options(SslOptions::NO_RENEGOTIATION);
        let (chain, key) = identity(field, &tls.cert_path, &tls.key_path)?;
        set_identity(&mut builder, field, chain, &key)?;
        if let Some(ca) = &tls.ca_cert_path {
            let cas = certificates(&format!("{field}.ca_cert_path"), ca)?;
            let mut names = openssl::stack::Stack::new().map_err(|e| openssl_setup(&e))?;
            for cert in cas {
                names.push(cert.subject_name().to_owned().map_err(|e| openssl_setup(&e))?).map_err(|e| openssl_setup(&e))?;
                builder.cert_store_mut().add_cert(cert).map_err(|e| openssl_setup(&e))?;
            }
            // Tells clients which CA their certificate must come from.
            builder.set_client_ca_list(names);
        }
        if tls.client_auth {
            builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Ok(ServerTls { acceptor: builder.build(), client_auth: tls.client_auth })
    }

    /// A session for one accepted connection.
    pub fn session(&self) -> io::Result<Ssl> {
        let mut ssl = Ssl::new(self.acceptor.context()).map_err(io::Error::other)?;
        ssl.set_accept_state();
        Ok(ssl)
    }
}

/// The proxy's client side toward the brokers (`kafka.tls`).
pub struct UpstreamTls {
    connector: SslConnector,
    verify: bool,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamTls {{ verify: {} }}", self.verify)
    }
}

impl UpstreamTls {
    /// `None` settings: the system trust store, no client certificate.
    pub fn from_config(tls: Option<&KafkaTls>) -> Result<UpstreamTls, String> {
        let default = KafkaTls::default();
        let tls = tls.unwrap_or(&default);
        let field = "kafka.tls";
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| openssl_setup(&e))?;
        builder.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| openssl_setup(&e))?;
        match &tls.ca_cert_path {
            Some(ca) => {
                for cert in certificates(&format!("{field}.ca_cert_path"), ca)? {
                    builder.cert_store_mut().add_cert(cert).map_err(|e| openssl_setup(&e))?;
                }
            }
            None => builder.set_default_verify_paths().map_err(|e| openssl_setup(&e))?,
        }
        if let (Some(cert), Some(key)) = (&tls.cert_path, &tls.key_path) {
            let (chain, key) = identity(field, cert, key)?;
            set_identity(&mut builder, field, chain, &key)?;
        }
        if tls.insecure_skip_verify {
            builder.set_verify(SslVerifyMode::NONE);
        }
        Ok(UpstreamTls { connector: builder.build(), verify: !tls.insecure_skip_verify })
    }

    /// A session toward broker `addr` ("host:port"): SNI and, unless
    /// `insecure_skip_verify`, host name verification use its host.
    pub fn session(&self, addr: &str) -> io::Result<Ssl> {
        let host = host_of(addr);
        let mut config = self.connector.configure().map_err(io::Error::other)?;
        config.set_verify_hostname(self.verify);
        if !self.verify {
            config.set_verify(SslVerifyMode::NONE);
        }
        let mut ssl = config.into_ssl(host).map_err(io::Error::other)?;
        ssl.set_connect_state();
        Ok(ssl)
    }

    /// Connect a blocking stream (its timeouts bound the handshake).
    pub fn connect_blocking(&self, addr: &str, stream: std::net::TcpStream) -> Result<SslStream<std::net::TcpStream>, String> {
        let mut tls = SslStream::new(self.session(addr).map_err(|e| e.to_string())?, stream).map_err(|e| e.to_string())?;
        match tls.do_handshake() {
            Ok(()) => Ok(tls),
            Err(e) => Err(handshake_failure(&e, tls.ssl())),
        }
    }
}

/// The host of "host:port" (IPv6 brackets removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn openssl_setup(e: &ErrorStack) -> String {
    format!("cannot set up TLS: {e}")
}

fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field} {}: cannot read: {e}", path.display()))
}

/// Every certificate of a PEM file (at least one).
fn certificates(field: &str, path: &Path) -> Result<Vec<X509>, String> {
    let pem = read_file(field, path)?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(format!("{field} {}: not a PEM certificate file", path.display())),
    }
}

/// A certificate chain and its private key (PKCS#8, or PKCS#1 RSA and
/// SEC1 EC in their traditional PEM forms).
fn identity(section: &str, cert: &Path, key: &Path) -> Result<(Vec<X509>, PKey<Private>), String> {
    let chain = certificates(&format!("{section}.cert_path"), cert)?;
    let pem = read_file(&format!("{section}.key_path"), key)?;
    let key = PKey::private_key_from_pem(&pem)
        .map_err(|_| format!("{section}.key_path {}: not a PEM private key (PKCS#8, RSA or EC)", key.display()))?;
    Ok((chain, key))
}

fn set_identity(builder: &mut ssl::SslContextBuilder, section: &str, chain: Vec<X509>, key: &PKey<Private>) -> Result<(), String> {
    let mut chain = chain.into_iter();
    let leaf = chain.next().expect("certificates returns at least one");
    builder.set_certificate(&leaf).map_err(|e| openssl_setup(&e))?;
    for intermediate in chain {
        builder.add_extra_chain_cert(intermediate).map_err(|e| openssl_setup(&e))?;
    }
    // OpenSSL checks the pair as the key is set, and again on request.
    let mismatch = |_| format!("{section}.key_path does not belong to the certificate in {section}.cert_path");
    builder.set_private_key(key).map_err(mismatch)?;
    builder.check_private_key().map_err(mismatch)
}

/// "CN=...,O=..." of a certificate subject, as Kafka's SSL principal names it.
pub fn subject(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a handshake failed, in OpenSSL's words: the certificate
/// verification result when that was the cause.
pub fn handshake_failure(e: &ssl::Error, ssl: &SslRef) -> String {
    let verify = ssl.verify_result();
    let reason = e
        .ssl_error()
        .and_then(|stack| stack.errors().iter().find_map(|err| err.reason()))
        .map(str::to_string)
        .or_else(|| e.io_error().map(|io| io.to_string()))
        .unwrap_or_else(|| match e.code() {
            ErrorCode::SYSCALL | ErrorCode::ZERO_RETURN => "the peer closed the connection".to_string(),
            _ => e.to_string(),
        });
    if reason == "certificate verify failed" && verify.as_raw() != 0 {
        format!("certificate verify failed: {}", verify.error_string())
    } else {
        reason
    }
}

/// The byte stream under a non-blocking TLS session: the socket shared
/// with the event loop (which registers it by file descriptor).
pub struct Wire(pub Arc<mio::net::TcpStream>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One non-blocking TLS session over a socket shared with the event loop.
/// Its owner keeps it under the socket's lock: reads (the loop), writes
/// (workers) and handshake steps (the loop) all go through it.
pub struct TlsSession {
    stream: SslStream<Wire>,
    established: bool,
    /// For the proxy's upstream connections: the broker, "host:port".
    broker: Option<String>,
    /// Whether the first byte a client sent was looked at (a TLS client
    /// starts with a handshake record, 0x16).
    first_byte_checked: bool,
}

const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl TlsSession {
    /// The server side of an accepted client connection.
    pub fn accepted(ssl: Ssl, wire: Wire) -> io::Result<TlsSession> {
        Ok(TlsSession { stream: SslStream::new(ssl, wire).map_err(io::Error::other)?, established: false, broker: None, first_byte_checked: false })
    }

    /// The client side of a connection to Kafka broker `addr`.
    pub fn to_broker(ssl: Ssl, wire: Wire, addr: &str) -> io::Result<TlsSession> {
        let stream = SslStream::new(ssl, wire).map_err(io::Error::other)?;
        Ok(TlsSession { stream, established: false, broker: Some(addr.to_string()), first_byte_checked: true })
    }

    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Take the handshake as far as the socket allows. Ok(true): done (now
    /// or before); Ok(false): waiting for the peer; Err: why it failed.
    pub fn handshake(&mut self) -> Result<bool, String> {
        if self.established {
            return Ok(true);
        }
        if !self.first_byte_checked {
            let mut first = [0u8; 1];
            match self.stream.get_ref().0.peek(&mut first) {
                Ok(1) if first[0] != TLS_HANDSHAKE_RECORD => {
                    return Err("not a TLS handshake: a plaintext client on the TLS port".to_string())
                }
                Ok(_) => self.first_byte_checked = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(_) => self.first_byte_checked = true,
            }
        }
        match self.stream.do_handshake() {
            Ok(()) => {
                self.established = true;
                Ok(true)
            }
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => Ok(false),
            // The first handshake write on a connect that failed: a TCP
            // failure, not a TLS one.
            Err(e) if self.stream.get_ref().0.peer_addr().is_err() => {
                Err(format!("connect failed: {}", e.io_error().map_or_else(|| e.to_string(), |io| io.to_string())))
            }
            Err(e) => {
                let why = handshake_failure(&e, self.stream.ssl());
                Err(match &self.broker {
                    Some(addr) => format!("TLS handshake with Kafka broker {addr} failed: {why}"),
                    None => format!("TLS handshake failed: {why}"),
                })
            }
        }
    }

    /// The subject of the certificate the peer presented, if it did.
    pub fn peer_subject(&self) -> Option<String> {
        self.stream.ssl().peer_certificate().map(|c| subject(c.subject_name()))
    }

    /// Plaintext received; `WouldBlock` when OpenSSL needs the socket
    /// (to read more, or to write first); Ok(0) when the peer closed.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.ssl_read(buf) {
            Ok(n) => Ok(n),
            Err(e) => match e.code() {
                ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => Err(io::ErrorKind::WouldBlock.into()),
                ErrorCode::ZERO_RETURN => Ok(0),
                // A peer that closes without close_notify is gone all the same.
                ErrorCode::SYSCALL if e.io_error().is_none() => Ok(0),
                _ => Err(tls_io_error(e)),
            },
        }
    }

    /// Encrypt and send some of `buf`; `WouldBlock` when the socket is full
    /// (call again with the same bytes first, as OpenSSL requires).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.stream.ssl_write(buf) {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => Err(tls_io_error(e)),
        }
    }
}

fn tls_io_error(e: ssl::Error) -> io::Error {
    match e.into_io_error() {
        Ok(io) => io,
        Err(e) => io::Error::other(format!("TLS: {e}")),
    }
}

/// A blocking connection to a broker, plain or TLS (`ControlClient`).
pub enum BlockingStream {
    Plain(std::net::TcpStream),
    Tls(Box<SslStream<std::net::TcpStream>>),
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.read(buf),
            BlockingStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(s) => s.write(buf),
            BlockingStream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlockingStream::Plain(s) => s.flush(),
            BlockingStream::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
