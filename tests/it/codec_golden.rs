//! Golden frames captured from real clients talking to a real broker (Tansu)
//! through `tests/tools/record_relay.py`: every frame is decoded (header, then
//! body) and re-encoded, and must come back as the identical bytes.
//!
//! The frames live in `tests/golden/<client>/` and are listed in
//! `tests/golden/index.tsv` (client, file, api key, api version, kind,
//! correlation id, size). Responses are decoded with the api key and version
//! of the request they answered, as the proxy does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kpr_proxy::kafka::api::api_name;
use kpr_proxy::kafka::codec::{self, Struct};
use kpr_proxy::kafka::header::{encode_response_header, parse_response_header, peek_request, RequestHeader};
use kpr_proxy::kafka::schema::{registry, MessageKind};
use kpr_proxy::kafka::wire::DecodeError;

struct Golden {
    client: String,
    file: String,
    api_key: i16,
    api_version: i16,
    kind: MessageKind,
    correlation_id: i32,
    bytes: Vec<u8>,
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load() -> Vec<Golden> {
    let dir = golden_dir();
    let index = std::fs::read_to_string(dir.join("index.tsv")).expect("tests/golden/index.tsv");
    let mut out = Vec::new();
    for line in index.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "index line {line:?}");
        let bytes = std::fs::read(dir.join(cols[1])).unwrap_or_else(|e| panic!("{}: {e}", cols[1]));
        assert_eq!(bytes.len(), cols[6].parse::<usize>().unwrap(), "{}: size in index", cols[1]);
        out.push(Golden {
            client: cols[0].to_string(),
            file: cols[1].to_string(),
            api_key: cols[2].parse().unwrap(),
            api_version: cols[3].parse().unwrap(),
            kind: match cols[4] {
                "request" => MessageKind::Request,
                "response" => MessageKind::Response,
                k => panic!("kind {k:?}"),
            },
            correlation_id: cols[5].parse().unwrap(),
            bytes,
        });
    }
    out
}

/// Golden frames that real software sent malformed, and the error the codec
/// must give for them (their headers still round-trip). Kept because that is
/// what the proxy will meet.
const KNOWN_MALFORMED: &[(&str, &str, &str)] = &[
    (
        "confluent-kafka/Metadata_v12_request_2.bin",
        "TrailingBytes { at: 4, left: 3 }",
        "librdkafka (confluentinc/librdkafka#5049) writes the null topics array of an all-topics \
         Metadata v9+ request as a 4-byte int instead of a 1-byte compact length; brokers read \
         the first byte as null and ignore the 3 bytes left over",
    ),
    (
        "kafka-python/OffsetFetch_v3_response_2.bin",
        "Truncated { at: 4, need: 4, have: 2 }",
        "Tansu 0.6.0 answers an all-topics OffsetFetch v3 with no topics array at all \
         (kafka-python: 'Unable to decode response')",
    ),
    (
        "kafka-python/OffsetFetch_v5_response_2.bin",
        "Truncated { at: 4, need: 4, have: 2 }",
        "as v3: Tansu omits the topics array",
    ),
    (
        "kafka-python/OffsetFetch_v7_response_2.bin",
        "Invalid { at: 4, what: \"null in non-nullable field topics\" }",
        "Tansu 0.6.0 answers an all-topics OffsetFetch v7 with a null topics array, which is not \
         nullable in any version",
    ),
];

/// What happened to one golden frame.
enum Outcome {
    /// Header and body decoded and re-encoded to the identical bytes.
    RoundTripped,
    /// A version outside the range the proxy decodes: the header still
    /// round-trips and the body is refused with `UnsupportedVersion`.
    OutsideDeclaredRange,
    /// In `KNOWN_MALFORMED`, and refused with the error listed there.
    KnownMalformed,
}

fn check_body(g: &Golden, body: &[u8], rebuilt: &mut Vec<u8>) -> Result<Outcome, String> {
    let schema = registry().get(g.api_key, g.kind).ok_or("no schema")?;
    let decoded = match codec::decode(schema, g.api_version, body) {
        Ok(s) => s,
        Err(DecodeError::UnsupportedVersion { .. }) if !schema.versions.contains(g.api_version) => {
            rebuilt.extend_from_slice(body);
            return Ok(Outcome::OutsideDeclaredRange);
        }
        Err(e) => {
            return match KNOWN_MALFORMED.iter().find(|(file, _, _)| *file == g.file) {
                Some((_, expected, _)) if format!("{e:?}") == *expected => {
                    rebuilt.extend_from_slice(body);
                    Ok(Outcome::KnownMalformed)
                }
                Some((_, expected, _)) => Err(format!("known malformed, expected {expected}, got {e:?}")),
                None => Err(format!("body does not decode: {e}")),
            }
        }
    };
    if KNOWN_MALFORMED.iter().any(|(file, _, _)| *file == g.file) {
        return Err("listed as malformed but decodes".into());
    }
    codec::encode(schema, g.api_version, &decoded, rebuilt).map_err(|e| e.to_string())?;
    Ok(Outcome::RoundTripped)
}

fn check(g: &Golden) -> Result<Outcome, String> {
    let mut rebuilt = Vec::with_capacity(g.bytes.len());
    let outcome = match g.kind {
        MessageKind::Request => {
            let (key, version, corr) = peek_request(&g.bytes).map_err(|e| e.to_string())?;
            if (key, version, corr) != (g.api_key, g.api_version, g.correlation_id) {
                return Err(format!("peek_request gives {key}/{version}/{corr}"));
            }
            let (header, body) = RequestHeader::parse(&g.bytes).map_err(|e| format!("header: {e}"))?;
            header.encode(&mut rebuilt);
            check_body(g, body, &mut rebuilt)?
        }
        MessageKind::Response => {
            let (corr, tags, body) =
                parse_response_header(&g.bytes, g.api_key, g.api_version).map_err(|e| format!("header: {e}"))?;
            if corr != g.correlation_id {
                return Err(format!("correlation id {corr}, index says {}", g.correlation_id));
            }
            encode_response_header(&mut rebuilt, corr, g.api_key, g.api_version, &tags);
            check_body(g, body, &mut rebuilt)?
        }
    };
    if rebuilt != g.bytes {
        let at = rebuilt.iter().zip(&g.bytes).position(|(a, b)| a != b).unwrap_or(rebuilt.len().min(g.bytes.len()));
        return Err(format!(
            "re-encoded {} bytes differ from the {} captured, first at byte {at}\n  captured: {:02x?}\n  rebuilt:  {:02x?}",
            rebuilt.len(),
            g.bytes.len(),
            &g.bytes[at.saturating_sub(8)..(at + 24).min(g.bytes.len())],
            &rebuilt[at.saturating_sub(8)..(at + 24).min(rebuilt.len())],
        ));
    }
    Ok(outcome)
}

#[test]
fn golden_frames_decode_and_re_encode_to_identical_bytes() {
    let frames = load();
    assert!(!frames.is_empty(), "no golden frames in {}", golden_dir().display());
    let mut failures = Vec::new();
    let mut outside = Vec::new();
    let (mut round_tripped, mut malformed) = (0, 0);
    for g in &frames {
        match check(g) {
            Ok(Outcome::RoundTripped) => round_tripped += 1,
            Ok(Outcome::OutsideDeclaredRange) => outside.push(g.file.clone()),
            Ok(Outcome::KnownMalformed) => malformed += 1,
            Err(e) => failures.push(format!("{} ({} v{} {:?}): {e}", g.file, api_name(g.api_key), g.api_version, g.kind)),
        }
    }
    eprintln!("{round_tripped} golden frames round-tripped; outside the declared version ranges: {outside:?}");
    assert!(failures.is_empty(), "{} of {} golden frames fail:\n{}", failures.len(), frames.len(), failures.join("\n"));
    assert!(round_tripped > 0);
    assert_eq!(malformed, KNOWN_MALFORMED.len(), "every known malformed frame is in the golden set");
}

#[test]
fn golden_frames_cover_the_core_apis_in_both_directions() {
    let frames = load();
    let mut seen: BTreeMap<i16, BTreeSet<&str>> = BTreeMap::new();
    let mut clients = BTreeSet::new();
    for g in &frames {
        let schema = registry().get(g.api_key, g.kind);
        if schema.is_some_and(|s| s.versions.contains(g.api_version)) {
            seen.entry(g.api_key).or_default().insert(match g.kind {
                MessageKind::Request => "request",
                MessageKind::Response => "response",
            });
        }
        clients.insert(g.client.as_str());
    }
    let required = [
        ("Produce", 0),
        ("Fetch", 1),
        ("Metadata", 3),
        ("ApiVersions", 18),
        ("FindCoordinator", 10),
        ("JoinGroup", 11),
        ("SyncGroup", 14),
        ("Heartbeat", 12),
        ("OffsetCommit", 8),
        ("OffsetFetch", 9),
        ("ListOffsets", 2),
        ("CreateTopics", 19),
        ("DeleteTopics", 20),
    ];
    let missing: Vec<_> = required
        .iter()
        .filter(|(_, key)| seen.get(key).map_or(0, BTreeSet::len) < 2)
        .map(|(name, _)| *name)
        .collect();
    assert!(missing.is_empty(), "no decodable golden request and response for {missing:?}");
    for client in ["kafka-python", "confluent-kafka"] {
        assert!(clients.contains(client), "no golden frames from {client}");
    }
}

/// Tansu answers Fetch v12 and v13 with a top-level tagged field 0, which
/// Kafka's schema defines (NodeEndpoints) only from v16. The codec must keep
/// it as an unknown tag and write it back where it was.
#[test]
fn fetch_response_with_a_tag_the_version_does_not_define_keeps_it() {
    let frames = load();
    let mut found = 0;
    for g in frames.iter().filter(|g| g.api_key == 1 && g.kind == MessageKind::Response && (12..16).contains(&g.api_version)) {
        let (_, _, body) = parse_response_header(&g.bytes, g.api_key, g.api_version).unwrap();
        let schema = registry().get(1, MessageKind::Response).unwrap();
        let decoded: Struct = codec::decode(schema, g.api_version, body).unwrap();
        if let Some((_, data)) = decoded.unknown_tags.iter().find(|(t, _)| *t == 0) {
            found += 1;
            eprintln!("{}: top-level unknown tag 0 = {:02x?}", g.file, data);
            assert!(!data.is_empty(), "{}", g.file);
            let mut out = Vec::new();
            codec::encode(schema, g.api_version, &decoded, &mut out).unwrap();
            assert_eq!(out, body, "{}", g.file);
        }
    }
    assert!(found > 0, "no golden Fetch v12-v15 response carries the top-level tag 0");
}
