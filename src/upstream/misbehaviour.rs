//! Words for a broker that misbehaves: what it sent (or did not) said the
//! same way by the data path (`proxy::session::upstreams`, the event loop)
//! and by the proxy's own connections (`control`), each message naming the
//! broker as "broker 1 (127.0.0.1:9092)" and what was wrong, never an
//! `io::Error` ("os error 11" is a read timeout) or a raw size.

use std::time::Duration;

use crate::cluster::Cluster;

/// What follows a bad size prefix in every message about it.
const WHERE_A_SIZE_WAS_EXPECTED: &str = "where a response size was expected";

/// How many bytes of a text a peer sent are quoted.
const QUOTED: usize = 40;

/// "broker 1 (127.0.0.1:9092)" when the cluster lists `addr` under a node
/// id, else "broker 127.0.0.1:9092" (a bootstrap server).
pub fn broker_name(cluster: &Cluster, addr: &str) -> String {
    let view = cluster.read();
    let mut ids: Vec<i32> = view.brokers.iter().filter(|(_, b)| b.to_addr_string() == addr).map(|(id, _)| *id).collect();
    ids.sort_unstable();
    match ids.first() {
        Some(id) => format!("broker {id} ({addr})"),
        None => format!("broker {addr}"),
    }
}

/// What is wrong with `head`, the first bytes where a response frame's
/// size prefix was expected (at least 4), when no Kafka broker would send
/// them: a peer that speaks another protocol (text, TLS), bytes that
/// cannot be a size, or a size above `max`. None for a plausible size.
///
/// A size whose 4 bytes are printable ASCII is at least 512 MiB: taken
/// for text, as a response that large is no real answer (clients' fetch
/// sizes default to 50 MiB, fetch.max.bytes).
pub fn bad_size_prefix(head: &[u8], max: usize) -> Option<String> {
    let prefix: [u8; 4] = head.get(..4)?.try_into().ok()?;
    let size = i32::from_be_bytes(prefix);
    if matches!(prefix, [0x15 | 0x16, 0x03, _, _]) {
        // A TLS record: alert (0x15) or handshake (0x16), version 3.x.
        return Some(format!(
            "is not a Kafka broker: got a TLS record ({}) {WHERE_A_SIZE_WAS_EXPECTED}: is kafka.security_protocol SSL?",
            hex(&prefix)
        ));
    }
    if prefix.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Some(format!("is not a Kafka broker: got '{}' {WHERE_A_SIZE_WAS_EXPECTED}", quoted_text(head)));
    }
    if size < 4 {
        // Too small to hold even a correlation id, or negative.
        return Some(format!(
            "sent bytes that are not a Kafka response: got {} {WHERE_A_SIZE_WAS_EXPECTED}",
            hex(&head[..head.len().min(8)])
        ));
    }
    if size as usize > max {
        return Some(format!("sent a {} response frame (limit {})", human_bytes(size as usize), human_bytes(max)));
    }
    None
}

/// The first line of a text the peer sent, at most `QUOTED` characters,
/// anything unprintable as '?'.
fn quoted_text(head: &[u8]) -> String {
    head.iter()
        .take_while(|b| **b != b'\r' && **b != b'\n')
        .take(QUOTED)
        .map(|b| if (0x20..0x7f).contains(b) { *b as char } else { '?' })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// `n` bytes in binary units, one decimal where it is not whole: "1.2 GiB".
pub fn human_bytes(n: usize) -> String {
    const UNITS: [(&str, usize); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            let value = format!("{:.1}", n as f64 / size as f64);
            return format!("{} {unit}", value.trim_end_matches(".0"));
        }
    }
    format!("{n} bytes")
}

/// A connection closed inside a response frame.
pub fn closed_mid_response(got: usize, size: usize) -> String {
    format!("closed the connection mid-response (got {got} of {size} bytes)")
}

/// A connection closed with a request unanswered. `first` when nothing
/// was ever answered on it: most often a listener speaking TLS or SASL to
/// a proxy that does not (Kafka's NetworkClient says as much).
pub fn closed_without_answer(api: &str, first: bool) -> String {
    let hint = if first { " (is kafka.security_protocol right? a TLS or SASL listener closes on plaintext requests)" } else { "" };
    format!("closed the connection without answering {api}{hint}")
}

/// A request unanswered past its deadline: `request_timeout` (the
/// setting) plus `extra`, the time the request itself lets the broker
/// wait (fetch max wait, produce and rebalance timeouts).
pub fn did_not_answer(api: &str, request_timeout: Duration, extra: Duration) -> String {
    let mut out = format!("did not answer {api} within kafka.request_timeout_ms ({} ms)", request_timeout.as_millis());
    if !extra.is_zero() {
        out += &format!(" + {} ms the request lets the broker wait", extra.as_millis());
    }
    out
}

/// An answer whose correlation id is not the one of the request it
/// answers (answers come in request order on a connection).
pub fn wrong_correlation(got: Option<i32>, expected: i32, api: &str) -> String {
    match got {
        Some(got) => format!("answered correlation id {got}, expected {expected} ({api})"),
        None => format!("sent a response too short to hold a correlation id, expected {expected} ({api})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    fn prefixed(size: u32, rest: &[u8]) -> Vec<u8> {
        let mut v = size.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn text_peers_are_quoted() {
        let http = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            bad_size_prefix(http, GIB).unwrap(),
            "is not a Kafka broker: got 'HTTP/1.1 400 Bad Request' where a response size was expected"
        );
        assert!(bad_size_prefix(b"SSH-2.0-OpenSSH_9.2\r\n", GIB).unwrap().contains("got 'SSH-2.0-OpenSSH_9.2'"));
        // '<htm' is 966 MiB: under the limit, still text.
        assert!(bad_size_prefix(b"<html><body>", GIB).unwrap().contains("got '<html><body>'"));
        let long = vec![b'x'; 100];
        let quoted = format!("got '{}' where", "x".repeat(QUOTED));
        assert!(bad_size_prefix(&long, GIB).unwrap().contains(&quoted));
    }

    #[test]
    fn tls_records_ask_about_the_security_protocol() {
        let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46];
        assert_eq!(
            bad_size_prefix(&alert, GIB).unwrap(),
            "is not a Kafka broker: got a TLS record (15 03 03 00) where a response size was expected: is kafka.security_protocol SSL?"
        );
        assert!(bad_size_prefix(&[0x16, 0x03, 0x01, 0x02, 0x00], GIB).unwrap().contains("TLS record (16 03 01 02)"));
    }

    #[test]
    fn impossible_and_oversize_sizes() {
        let garbage = [0xde, 0xad, 0xbe, 0xef, 0x80, 0x81, 0x82, 0x83, 0x84];
        assert_eq!(
            bad_size_prefix(&garbage, GIB).unwrap(),
            "sent bytes that are not a Kafka response: got de ad be ef 80 81 82 83 where a response size was expected"
        );
        assert!(bad_size_prefix(&prefixed(3, b""), GIB).unwrap().contains("got 00 00 00 03"));
        assert_eq!(bad_size_prefix(&prefixed(1_288_490_189, &[0; 8]), GIB).unwrap(), "sent a 1.2 GiB response frame (limit 1 GiB)");
        assert_eq!(bad_size_prefix(&prefixed(5000, &[0; 8]), 4096).unwrap(), "sent a 4.9 KiB response frame (limit 4 KiB)");
    }

    #[test]
    fn plausible_sizes_pass() {
        for size in [4u32, 100, 5000, 50 << 20, (1 << 30) - 1] {
            assert_eq!(bad_size_prefix(&prefixed(size, &[0; 8]), GIB), None, "size {size}");
        }
        assert_eq!(bad_size_prefix(&[0, 0, 1], GIB), None, "not 4 bytes yet");
    }

    #[test]
    fn brokers_are_named_by_node_id_when_known() {
        let cluster = Cluster::new(vec!["127.0.0.1:9092".into()]);
        assert_eq!(broker_name(&cluster, "127.0.0.1:9092"), "broker 127.0.0.1:9092");
        cluster.write().brokers.insert(7, crate::cluster::BrokerAddr { host: "127.0.0.1".into(), port: 9092 });
        assert_eq!(broker_name(&cluster, "127.0.0.1:9092"), "broker 7 (127.0.0.1:9092)");
    }

    #[test]
    fn timeouts_name_the_setting_and_the_extra_wait() {
        let t = Duration::from_millis(30_000);
        assert_eq!(did_not_answer("Metadata", t, Duration::ZERO), "did not answer Metadata within kafka.request_timeout_ms (30000 ms)");
        assert_eq!(
            did_not_answer("Fetch", t, Duration::from_millis(500)),
            "did not answer Fetch within kafka.request_timeout_ms (30000 ms) + 500 ms the request lets the broker wait"
        );
        assert_eq!(human_bytes(512), "512 bytes");
    }
}
