//! Round trips through the schema-driven codec, for every message the proxy
//! declares and every version it decodes: random values shaped by the schema
//! (arrays of 0-3 elements, empty and non-ASCII strings, nulls where
//! nullable, tagged fields present or not, and in flexible versions tagged
//! fields the schema does not know, in every struct) are encoded, decoded to
//! the same value, and re-encoded to the same bytes. Request and response
//! headers are round-tripped for every API and version too.

use std::borrow::Cow;

use crate::common::{all_messages, random_message, random_string, unknown_tags, GenOptions, Rng};
use kpr_proxy::kafka::codec::{self, Value};
use kpr_proxy::kafka::header::{
    encode_response_header, parse_response_header, peek_request, response_header_is_flexible, RequestHeader,
};
use kpr_proxy::kafka::message::{encode_request, encode_response};
use kpr_proxy::kafka::schema::{registry, MessageKind};
use kpr_proxy::kafka::wire::{put_i16, put_i32, put_uvarint, DecodeError, Reader};

/// Values generated per (message, version).
const CASES: usize = 400;

#[test]
fn every_version_of_every_message_round_trips() {
    let mut rng = Rng::new(0x6b70_725f_7274);
    let (mut versions, mut values, mut carried_unknown) = (0, 0, 0);
    for (schema, version) in all_messages() {
        versions += 1;
        let flexible = schema.flexible.contains(version);
        for case in 0..CASES {
            let value = random_message(&mut rng, schema, version, GenOptions::default());
            let what = || format!("{} v{version} case {case}", schema.name);
            let mut bytes = Vec::new();
            codec::encode(schema, version, &value, &mut bytes).unwrap_or_else(|e| panic!("{}: {e}", what()));
            let decoded = codec::decode(schema, version, &bytes)
                .unwrap_or_else(|e| panic!("{}: {e}\nvalue: {value:?}\nbytes: {bytes:02x?}", what()));
            assert_eq!(decoded, value, "{}: decoded value differs", what());
            let mut again = Vec::new();
            codec::encode(schema, version, &decoded, &mut again).unwrap();
            assert_eq!(again, bytes, "{}: re-encoded bytes differ", what());

            // The unknown tags are in the decoded structs, where they were put.
            let (mut sent, mut got) = (Vec::new(), Vec::new());
            unknown_tags(&value, "", &mut sent);
            unknown_tags(&decoded, "", &mut got);
            assert_eq!(got, sent, "{}: unknown tags", what());
            if !flexible {
                assert!(sent.is_empty());
            }
            carried_unknown += sent.len();
            values += 1;
        }
    }
    eprintln!("{values} values over {versions} message versions; {carried_unknown} unknown tags carried");
    assert!(versions > 300, "only {versions} message versions declared?");
    assert!(carried_unknown > 1000);
}

/// Each known tagged field is exercised present and absent in every version
/// it is tagged in, and an unknown tag numbered like a field that exists
/// only in later versions stays unknown (Tansu's Fetch v12 tag 0).
#[test]
fn known_tagged_fields_are_decoded_and_unknown_ones_kept() {
    let fetch = registry().get(1, MessageKind::Response).unwrap();
    for version in 12..=17 {
        let mut rng = Rng::new(version as u64);
        let mut value = random_message(&mut rng, fetch, version, GenOptions { unknown_tags: false, max_array: 1 });
        value.unknown_tags = vec![(0, Cow::Owned(vec![0x01])), (7, Cow::Owned(vec![0xaa, 0xbb]))];
        let node_endpoints = value.schema.index_of("node_endpoints").unwrap();
        if version >= 16 {
            // Tag 0 is node_endpoints from v16: an unknown tag 0 beside it
            // would be written twice, so drop the unknown one.
            value.unknown_tags.remove(0);
            value.fields[node_endpoints] = Value::Array(Some(vec![]));
        }
        let mut bytes = Vec::new();
        codec::encode(fetch, version, &value, &mut bytes).unwrap();
        let decoded = codec::decode(fetch, version, &bytes).unwrap();
        assert_eq!(decoded, value, "v{version}");
        if version < 16 {
            assert_eq!(decoded.fields[node_endpoints], Value::Absent);
            assert_eq!(decoded.unknown_tags[0], (0, Cow::Borrowed(&[0x01u8][..])));
            // The tag section at the end: 2 fields, tag 0 (1 byte), tag 7 (2 bytes).
            assert!(bytes.ends_with(&[2, 0, 1, 0x01, 7, 2, 0xaa, 0xbb]), "v{version}: {bytes:02x?}");
        } else {
            assert_eq!(decoded.fields[node_endpoints], Value::Array(Some(vec![])));
            assert!(bytes.ends_with(&[2, 0, 1, 1, 7, 2, 0xaa, 0xbb]), "v{version}: {bytes:02x?}");
        }
    }
}

/// Known wire layouts written out by hand, so that the round trips are not
/// only the codec agreeing with itself.
#[test]
fn hand_written_bytes_decode_as_kafka_defines_them() {
    // MetadataRequest v1: topics is a nullable array of structs; its elements
    // are plain structs with no presence byte.
    let schema = registry().get(3, MessageKind::Request).unwrap();
    let bytes = [0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
    let decoded = codec::decode(schema, 1, &bytes).expect("MetadataRequest v1 with two topics");
    let names: Vec<_> = decoded.structs("topics").map(|t| t.str("name").unwrap().to_string()).collect();
    assert_eq!(names, ["a", "bc"]);
    let mut out = Vec::new();
    codec::encode(schema, 1, &decoded, &mut out).unwrap();
    assert_eq!(out, bytes);
    // Null topics (all topics) in v1.
    let decoded = codec::decode(schema, 1, &[0xff, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(*decoded.get("topics"), Value::Array(None));
    // ...but not in v0.
    assert!(codec::decode(schema, 0, &[0xff, 0xff, 0xff, 0xff]).is_err());

    // MetadataRequest v9 (flexible): compact array of 1 topic, compact
    // nullable name "t", element tags, then allow_auto_topic_creation,
    // include_cluster_authorized_operations (v8-10) and
    // include_topic_authorized_operations, then the body's tags.
    let bytes = [2, 2, b't', 0, 1, 0, 0, 0];
    let decoded = codec::decode(schema, 9, &bytes).expect("MetadataRequest v9");
    assert_eq!(decoded.structs("topics").next().unwrap().str("name"), Some("t"));
    let mut out = Vec::new();
    codec::encode(schema, 9, &decoded, &mut out).unwrap();
    assert_eq!(out, bytes);

    // DescribeTopicPartitionsRequest v0: the nullable cursor struct is
    // preceded by a presence byte (-1 null, 1 present).
    let schema = registry().get(75, MessageKind::Request).unwrap();
    let null_cursor = [2, 2, b'x', 0, 0, 0, 0, 10, 0xff, 0];
    let decoded = codec::decode(schema, 0, &null_cursor).unwrap();
    assert_eq!(*decoded.get("cursor"), Value::NullStruct);
    let with_cursor = [2, 2, b'x', 0, 0, 0, 0, 10, 1, 2, b'x', 0, 0, 0, 3, 0, 0];
    let decoded = codec::decode(schema, 0, &with_cursor).unwrap();
    assert_eq!(decoded.child("cursor").unwrap().i32("partition_index"), Some(3));

    // FetchResponse v4: aborted_transactions is a nullable array of structs.
    let schema = registry().get(1, MessageKind::Response).unwrap();
    let mut bytes = Vec::new();
    put_i32(&mut bytes, 0); // throttle_time_ms
    put_i32(&mut bytes, 1); // responses
    put_i16(&mut bytes, 1);
    bytes.push(b't');
    put_i32(&mut bytes, 1); // partitions
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // partition_index, error_code
    bytes.extend_from_slice(&[0; 16]); // high_watermark, last_stable_offset
    put_i32(&mut bytes, 1); // one aborted transaction
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5]);
    put_i32(&mut bytes, -1); // records: null
    let decoded = codec::decode(schema, 4, &bytes).expect("FetchResponse v4 with an aborted transaction");
    let p = decoded.structs("responses").next().unwrap().structs("partitions").next().unwrap();
    let aborted: Vec<_> = p.structs("aborted_transactions").map(|a| a.i64("producer_id").unwrap()).collect();
    assert_eq!(aborted, [9]);
}

// ---------------------------------------------------------------------------
// Headers

#[test]
fn request_headers_round_trip_for_every_api_and_version() {
    let mut rng = Rng::new(0x0068_6472);
    for (schema, version) in all_messages().into_iter().filter(|(m, _)| m.kind == MessageKind::Request) {
        let flexible = schema.flexible.contains(version);
        for case in 0..40 {
            let client_id = match rng.below(4) {
                0 => None,
                1 => Some(String::new()),
                _ => Some(random_string(&mut rng)),
            };
            let mut tags = Vec::new();
            if flexible {
                let mut t = 0;
                for _ in 0..rng.below(3) {
                    t += 1 + rng.below(1000) as u32;
                    tags.push((t, Cow::Owned(rng.bytes(5))));
                }
            }
            let header = RequestHeader {
                api_key: schema.api_key,
                api_version: version,
                correlation_id: rng.next_u64() as i32,
                client_id: client_id.clone().map(Cow::Owned),
                tags,
                flexible,
            };
            let mut frame = Vec::new();
            header.encode(&mut frame);
            // The client id is a classic nullable string (int16 length) in
            // header v1 and v2 alike.
            let mut r = Reader::new(&frame[8..]);
            assert_eq!(r.nullable_string().unwrap(), client_id.as_deref(), "{} v{version}", schema.name);
            if flexible {
                assert!(!r.is_empty(), "header v2 has a tag section");
            } else {
                assert!(r.is_empty(), "header v1 ends with the client id");
            }
            let header_len = frame.len();
            let body = random_message(&mut rng, schema, version, GenOptions::default());
            codec::encode(schema, version, &body, &mut frame).unwrap();

            let what = format!("{} v{version} case {case}", schema.name);
            assert_eq!(peek_request(&frame).unwrap(), (schema.api_key, version, header.correlation_id), "{what}");
            let (parsed, rest) = RequestHeader::parse(&frame).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(parsed, header, "{what}");
            assert_eq!(rest.len(), frame.len() - header_len, "{what}: body starts after the header");
            assert_eq!(codec::decode(schema, version, rest).unwrap(), body, "{what}");
            let mut again = Vec::new();
            parsed.encode(&mut again);
            assert_eq!(again, frame[..header_len], "{what}");
        }
        // encode_request writes the header version the body calls for.
        let body = codec::with_defaults(&schema.body, version);
        let frame = encode_request(schema.api_key, version, 7, Some("kpr"), &body).unwrap();
        let (parsed, rest) = RequestHeader::parse(&frame).unwrap();
        assert_eq!((parsed.flexible, parsed.client_id.as_deref()), (flexible, Some("kpr")));
        assert_eq!(codec::decode(schema, version, rest).unwrap(), body);
    }
}

#[test]
fn response_headers_round_trip_for_every_api_and_version() {
    let mut rng = Rng::new(0x0072_7370);
    for (schema, version) in all_messages().into_iter().filter(|(m, _)| m.kind == MessageKind::Response) {
        let flexible = schema.flexible.contains(version);
        let api_versions = schema.api_key == 18;
        // Header v1 exactly when the body is flexible, except ApiVersions: v0.
        assert_eq!(response_header_is_flexible(schema.api_key, version), flexible && !api_versions, "{} v{version}", schema.name);
        for case in 0..40 {
            let corr = rng.next_u64() as i32;
            let mut tags = Vec::new();
            if flexible && !api_versions {
                for t in 0..rng.below(3) as u32 {
                    tags.push((t * 5 + 1, Cow::Owned(rng.bytes(4))));
                }
            }
            let mut frame = Vec::new();
            encode_response_header(&mut frame, corr, schema.api_key, version, &tags);
            let header_len = frame.len();
            if !flexible || api_versions {
                assert_eq!(header_len, 4, "{} v{version}: header v0 is the correlation id alone", schema.name);
            }
            let body = random_message(&mut rng, schema, version, GenOptions::default());
            codec::encode(schema, version, &body, &mut frame).unwrap();

            let what = format!("{} v{version} case {case}", schema.name);
            let (c, t, rest) = parse_response_header(&frame, schema.api_key, version).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((c, &t), (corr, &tags), "{what}");
            assert_eq!(rest.len(), frame.len() - header_len, "{what}");
            assert_eq!(codec::decode(schema, version, rest).unwrap(), body, "{what}");

            let whole = encode_response(schema.api_key, version, corr, &tags, &body).unwrap();
            assert_eq!(whole, frame, "{what}: encode_response");
        }
    }
}

/// A client may open with an ApiVersions request newer than anything the
/// proxy knows (it cannot know what the broker speaks yet). Its first eight
/// bytes are still readable, and its header (v2 from ApiVersions v3 on) too,
/// so the proxy can answer with the versions it supports.
#[test]
fn api_versions_requests_newer_than_the_proxy_knows_have_a_parseable_header() {
    let known_max = registry().get(18, MessageKind::Request).unwrap().versions.max;
    for version in [known_max + 1, known_max + 2, 42, i16::MAX] {
        let mut frame = Vec::new();
        put_i16(&mut frame, 18);
        put_i16(&mut frame, version);
        put_i32(&mut frame, 0x0102_0304);
        put_i16(&mut frame, 6);
        frame.extend_from_slice(b"client");
        put_uvarint(&mut frame, 1); // one header tag
        put_uvarint(&mut frame, 3);
        put_uvarint(&mut frame, 1);
        frame.push(0x55);
        // A body in some future layout.
        frame.extend_from_slice(&[0x07, b'f', b'u', b't', b'u', b'r', b'e', 0x02, b'9', 0x00, 0xde, 0xad]);

        assert_eq!(peek_request(&frame).unwrap(), (18, version, 0x0102_0304), "v{version}");
        let (header, body) = RequestHeader::parse(&frame).unwrap_or_else(|e| panic!("v{version}: {e}"));
        assert_eq!(header.client_id.as_deref(), Some("client"));
        assert!(header.flexible);
        assert_eq!(header.tags, vec![(3, Cow::Borrowed(&[0x55u8][..]))]);
        assert_eq!(body.len(), 12);
        let schema = registry().get(18, MessageKind::Request).unwrap();
        assert_eq!(
            codec::decode(schema, version, body),
            Err(DecodeError::UnsupportedVersion { api_key: 18, version })
        );
        // Just the eight bytes are enough to peek.
        assert_eq!(peek_request(&frame[..8]).unwrap(), (18, version, 0x0102_0304));
    }
    for short in 0..8 {
        assert!(peek_request(&[0u8; 8][..short]).is_err());
    }
}

/// A request of an API the proxy does not declare (here GetTelemetry-
/// Subscriptions, key 71, flexible in Kafka) is parsed with header v1: the
/// proxy cannot know where a v2 header's tags end, so they stay at the start
/// of the body, and writing the header back and appending the body gives
/// the frame unchanged.
#[test]
fn requests_of_undeclared_apis_keep_their_bytes() {
    assert!(registry().get(71, MessageKind::Request).is_none());
    let mut frame = Vec::new();
    put_i16(&mut frame, 71);
    put_i16(&mut frame, 0);
    put_i32(&mut frame, 77);
    put_i16(&mut frame, 2);
    frame.extend_from_slice(b"id");
    frame.extend_from_slice(&[0x00, 0x01, 0x02, 0x03, 0x00]); // header tags, then a body
    let (header, body) = RequestHeader::parse(&frame).unwrap();
    assert!(!header.flexible);
    assert_eq!((header.api_key, header.api_version, header.correlation_id), (71, 0, 77));
    assert_eq!(body, &frame[12..]);
    let mut again = Vec::new();
    header.encode(&mut again);
    again.extend_from_slice(body);
    assert_eq!(again, frame);
}

/// What the codec assumes of the schemas: a field is tagged only in versions
/// it exists in (the decoder matches tags by tagged range alone, the encoder
/// skips fields outside their versions, so a mismatch would drop data), and
/// no two fields of a struct share a tag in a version.
#[test]
fn tagged_fields_are_consistent_with_their_versions() {
    fn walk(s: &kpr_proxy::kafka::schema::StructSchema, version: i16, path: &str, bad: &mut Vec<String>) {
        let mut tags = Vec::new();
        for f in &s.fields {
            if let Some((tag, range)) = f.tagged {
                if range.contains(version) && !f.versions.contains(version) {
                    bad.push(format!("{path}.{} v{version}: tagged but absent", f.name));
                }
                if f.is_tagged_in(version) && f.versions.contains(version) {
                    if tags.contains(&tag) {
                        bad.push(format!("{path}.{} v{version}: tag {tag} used twice", f.name));
                    }
                    tags.push(tag);
                }
            }
            let mut ty = &f.ty;
            while let kpr_proxy::kafka::schema::FieldType::Array(inner) = ty {
                ty = inner;
            }
            if let kpr_proxy::kafka::schema::FieldType::Struct(inner) = ty {
                walk(inner, version, &format!("{path}.{}", f.name), bad);
            }
        }
    }
    let mut bad = Vec::new();
    for (schema, version) in all_messages() {
        walk(&schema.body, version, &schema.name, &mut bad);
        if !schema.flexible.contains(version) {
            assert!(
                !schema.body.fields.iter().any(|f| f.is_tagged_in(version)),
                "{} v{version}: tagged field in a version without tags",
                schema.name
            );
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
