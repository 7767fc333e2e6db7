//! The TLS transport over loopback: both ends are `SharedSocket`s driven
//! without blocking, as the event loop drives them, so partial writes,
//! frames larger than the socket buffers and traffic both ways at once
//! all happen.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::Token;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};

use super::*;
use crate::frame::{FrameReader, MIN_REQUEST_FRAME};
use crate::net::socket::{Handshake, SharedSocket};

/// A self-signed certificate for `localhost` and its key, as PEM files in
/// a fresh directory.
fn self_signed(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("kpr-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", "localhost").unwrap();
    let subject = subject.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&subject).unwrap();
    cert.set_issuer_name(&subject).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    let san = SubjectAlternativeName::new().dns("localhost").build(&cert.x509v3_context(None, None)).unwrap();
    cert.append_extension(san).unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}

fn server_tls(cert: &Path, key: &Path) -> ServerTls {
    ServerTls::from_config(&ListenTls { cert_path: cert.into(), key_path: key.into(), ca_cert_path: None, client_auth: false })
        .unwrap()
}

fn upstream_tls(ca: &Path) -> UpstreamTls {
    UpstreamTls::from_config(Some(&KafkaTls { ca_cert_path: Some(ca.into()), ..Default::default() })).unwrap()
}

/// (proxy's server end of a client connection, proxy's client end toward
/// a "broker" named localhost), connected over loopback, not handshaken.
fn tls_pair(server: &ServerTls, client: &UpstreamTls) -> (SharedSocket, SharedSocket) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let out = std::net::TcpStream::connect(addr).unwrap();
    let (inc, peer) = listener.accept().unwrap();
    for s in [&out, &inc] {
        s.set_nonblocking(true).unwrap();
    }
    let broker = format!("localhost:{}", addr.port());
    let server_end = SharedSocket::with_tls(mio::net::TcpStream::from_std(inc), Token(1), peer, |w| {
        TlsSession::accepted(server.session()?, w)
    })
    .unwrap();
    let client_end = SharedSocket::with_tls(mio::net::TcpStream::from_std(out), Token(2), addr, |w| {
        TlsSession::to_broker(client.session(&broker)?, w, &broker)
    })
    .unwrap();
    (server_end, client_end)
}

/// Drive both handshakes as the event loop would; the first failure, if any.
fn handshake(a: &SharedSocket, b: &SharedSocket) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        assert!(Instant::now() < deadline, "handshake did not finish");
        a_done = a.advance_handshake()? != Handshake::Waiting;
        b_done = b.advance_handshake()? != Handshake::Waiting;
    }
    Ok(())
}

/// Read every complete frame `socket` holds.
fn read_frames(socket: &SharedSocket, reader: &mut FrameReader, frames: &mut Vec<Vec<u8>>) {
    let mut source: &SharedSocket = socket;
    loop {
        match reader.fill_from(&mut source) {
            Ok(crate::frame::Filled::Eof) => panic!("peer closed"),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read failed: {e}"),
        }
        while let Some(frame) = reader.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    while let Some(frame) = reader.next_frame().unwrap() {
        frames.push(frame);
    }
}

fn frames(seed: u8, sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (j as u8).wrapping_mul(31) ^ seed ^ i as u8).collect()).collect()
}

#[test]
fn large_frames_both_ways_at_once_with_writes_queued_before_the_handshake() {
    let (cert, key) = self_signed("both-ways");
    let (server, client) = (server_tls(&cert, &key), upstream_tls(&cert));
    let (proxy_side, broker_side) = tls_pair(&server, &client);
    // Frames larger than socket buffers and TLS records, and small ones.
    let to_server = frames(1, &[5_000_000, 17, 70_000, 3_000_000, 12]);
    let to_client = frames(2, &[4_000_000, 16 * 1024, 9, 6_000_000]);
    // Written before any handshake: queued, sent once it is done.
    let refs: Vec<&[u8]> = to_server.iter().map(Vec::as_slice).collect();
    broker_side.send_frames(&refs[..2]).unwrap();
    assert!(broker_side.is_handshaking() && broker_side.queued_bytes() > 5_000_000);
    handshake(&proxy_side, &broker_side).unwrap();
    broker_side.send_frames(&refs[2..]).unwrap();
    for f in &to_client {
        proxy_side.send_frame(f).unwrap();
    }

    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let mut server_reader = FrameReader::new(1 << 24, MIN_REQUEST_FRAME);
    let mut client_reader = FrameReader::new(1 << 24, 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_server.len() < to_server.len() || at_client.len() < to_client.len() {
        assert!(Instant::now() < deadline, "stalled: {} and {} frames through", at_server.len(), at_client.len());
        proxy_side.flush().unwrap();
        broker_side.flush().unwrap();
        read_frames(&proxy_side, &mut server_reader, &mut at_server);
        read_frames(&broker_side, &mut client_reader, &mut at_client);
    }
    assert!(at_server == to_server, "frames to the server arrived changed");
    assert!(at_client == to_client, "frames to the client arrived changed");
    assert_eq!((proxy_side.queued_bytes(), broker_side.queued_bytes()), (0, 0));
}

#[test]
fn an_untrusted_certificate_is_named() {
    let (cert, key) = self_signed("untrusted");
    let (other_ca, _) = self_signed("other-ca");
    let (proxy_side, broker_side) = tls_pair(&server_tls(&cert, &key), &upstream_tls(&other_ca));
    let err = handshake(&proxy_side, &broker_side).unwrap_err();
    assert!(
        err.starts_with("TLS handshake with Kafka broker localhost:") && err.contains("failed: certificate verify failed: "),
        "{err}"
    );
}

#[test]
fn a_plaintext_client_is_named() {
    let (cert, key) = self_signed("plaintext");
    let server = server_tls(&cert, &key);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut plain = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (inc, peer) = listener.accept().unwrap();
    inc.set_nonblocking(true).unwrap();
    let socket = SharedSocket::with_tls(mio::net::TcpStream::from_std(inc), Token(1), peer, |w| {
        TlsSession::accepted(server.session()?, w)
    })
    .unwrap();
    assert_eq!(socket.advance_handshake(), Ok(Handshake::Waiting), "nothing sent yet");
    // An ApiVersions request's size prefix, as a Kafka client starts.
    plain.write_all(&[0, 0, 0, 20]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match socket.advance_handshake() {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "no verdict"),
        }
    };
    assert!(err.contains("plaintext client"), "{err}");
}

#[test]
fn unreadable_and_mismatched_files_name_their_field() {
    let (cert, key) = self_signed("fields");
    let (_, other_key) = self_signed("fields-other");
    let listen = |cert: &Path, key: &Path| {
        ServerTls::from_config(&ListenTls { cert_path: cert.into(), key_path: key.into(), ca_cert_path: None, client_auth: false })
            .unwrap_err()
    };
    let missing = cert.with_file_name("missing.pem");
    assert!(listen(&missing, &key).starts_with("listen.security.tls.cert_path "), "{}", listen(&missing, &key));
    assert!(listen(&key, &key).contains("not a PEM certificate"), "{}", listen(&key, &key));
    assert!(listen(&cert, &cert).starts_with("listen.security.tls.key_path "), "{}", listen(&cert, &cert));
    assert!(listen(&cert, &other_key).contains("does not belong"), "{}", listen(&cert, &other_key));
    let upstream = UpstreamTls::from_config(Some(&KafkaTls { ca_cert_path: Some(other_key.clone()), ..Default::default() }));
    assert!(upstream.unwrap_err().starts_with("kafka.tls.ca_cert_path "));
}

#[test]
fn a_refused_connect_is_not_called_a_tls_failure() {
    let (cert, _) = self_signed("refused");
    let client = upstream_tls(&cert);
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The listener is gone: the connect is refused.
    let stream = mio::net::TcpStream::connect(addr).unwrap();
    let broker = format!("localhost:{}", addr.port());
    let socket =
        SharedSocket::with_tls(stream, Token(3), addr, |w| TlsSession::to_broker(client.session(&broker)?, w, &broker)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match socket.advance_handshake() {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "no verdict"),
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(err.starts_with("connect failed: "), "{err}");
}
