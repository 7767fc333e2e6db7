//! Request and response headers: whatever parses must re-encode to bytes
//! that parse to the same header and body. The first input byte picks a
//! request frame (even) or a response frame (odd); a response frame is
//! preceded by the api key and version it answers (two i16).
#![no_main]

use kpr_proxy::kafka::header::{encode_response_header, parse_response_header, peek_request, RequestHeader};
use libfuzzer_sys::fuzz_target;

fn request(frame: &[u8]) {
    let peeked = peek_request(frame);
    let Ok((header, body)) = RequestHeader::parse(frame) else { return };
    assert_eq!(peeked.ok(), Some((header.api_key, header.api_version, header.correlation_id)));
    let mut encoded = Vec::new();
    header.encode(&mut encoded);
    encoded.extend_from_slice(body);
    let (again, body_again) = RequestHeader::parse(&encoded).expect("a re-encoded request header parses");
    assert_eq!(again, header);
    assert_eq!(body_again, body);
}

fn response(input: &[u8]) {
    let [k0, k1, v0, v1, frame @ ..] = input else { return };
    let (api_key, version) = (i16::from_be_bytes([*k0, *k1]), i16::from_be_bytes([*v0, *v1]));
    let Ok((correlation_id, tags, body)) = parse_response_header(frame, api_key, version) else { return };
    let mut encoded = Vec::new();
    encode_response_header(&mut encoded, correlation_id, api_key, version, &tags);
    encoded.extend_from_slice(body);
    let again = parse_response_header(&encoded, api_key, version).expect("a re-encoded response header parses");
    assert_eq!(again, (correlation_id, tags, body));
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((kind, rest)) if kind % 2 == 0 => request(rest),
        Some((_, rest)) => response(rest),
        None => {}
    }
});
