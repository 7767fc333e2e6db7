//! Truncated, corrupted and hostile input to the codec and the header
//! parsers: errors, never panics, and no allocation out of proportion to the
//! input however large the counts it announces.
//!
//! Nothing here uses `catch_unwind`: a panic fails the test, which is the
//! point. A counting global allocator (per thread, so parallel tests do not
//! disturb each other) measures what a decode allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use crate::common::{all_messages, random_message, GenOptions, Rng};
use kpr_proxy::kafka::codec::{self, Struct};
use kpr_proxy::kafka::header::{parse_response_header, peek_request, RequestHeader};
use kpr_proxy::kafka::schema::{registry, FieldType, MessageKind, MessageSchema, StructSchema};
use kpr_proxy::kafka::wire::{put_i16, put_i32, put_uvarint, DecodeError};

// ---------------------------------------------------------------------------
// Allocation accounting

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // try_with: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

// A binary has one global allocator: this one counts for every module of
// tests/it, which costs them a thread-local update per allocation and
// disturbs nothing, since the counts are per thread.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f` and return its result with the most bytes it had allocated at
/// once on this thread (beyond what was live before).
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

// ---------------------------------------------------------------------------
// Truncation

/// Every strict prefix of a valid encoding is an error. The decoder reads a
/// prefix exactly as it reads the whole (same bytes, same decisions) until
/// it runs out, and a whole message must use every byte, so no prefix can
/// pass as a complete message.
#[test]
fn every_strict_prefix_of_every_message_is_an_error() {
    let mut rng = Rng::new(0x7472_756e);
    let mut prefixes = 0usize;
    for (schema, version) in all_messages() {
        for case in 0..16 {
            let value = random_message(&mut rng, schema, version, GenOptions::default());
            let mut bytes = Vec::new();
            codec::encode(schema, version, &value, &mut bytes).unwrap();
            for len in 0..bytes.len() {
                match codec::decode(schema, version, &bytes[..len]) {
                    Err(DecodeError::Truncated { .. } | DecodeError::Invalid { .. }) => {}
                    other => panic!(
                        "{} v{version} case {case}: prefix of {len}/{} bytes gave {other:?}\nbytes: {bytes:02x?}",
                        schema.name,
                        bytes.len()
                    ),
                }
                prefixes += 1;
            }
            // One byte too many is an error too.
            bytes.push(0);
            assert!(
                matches!(codec::decode(schema, version, &bytes), Err(DecodeError::TrailingBytes { .. })),
                "{} v{version}: trailing byte accepted",
                schema.name
            );
        }
    }
    eprintln!("{prefixes} truncated bodies refused");
}

/// Whole request and response frames, cut anywhere: the header parsers and
/// the body decoder return errors or (for a cut inside the body) a header
/// and a body that does not decode.
#[test]
fn truncated_frames_never_panic_and_never_decode() {
    let mut rng = Rng::new(0x6672_616d);
    for (schema, version) in all_messages() {
        let value = random_message(&mut rng, schema, version, GenOptions::default());
        let mut body = Vec::new();
        codec::encode(schema, version, &value, &mut body).unwrap();
        let frame = match schema.kind {
            MessageKind::Request => {
                kpr_proxy::kafka::message::encode_request(schema.api_key, version, 9, Some("cut"), &value).unwrap()
            }
            MessageKind::Response => {
                kpr_proxy::kafka::message::encode_response(schema.api_key, version, 9, &[], &value).unwrap()
            }
        };
        let header_len = frame.len() - body.len();
        for len in 0..frame.len() {
            let cut = &frame[..len];
            let body_result = match schema.kind {
                MessageKind::Request => {
                    let _ = peek_request(cut);
                    RequestHeader::parse(cut).map(|(_, b)| b)
                }
                MessageKind::Response => parse_response_header(cut, schema.api_key, version).map(|(_, _, b)| b),
            };
            match body_result {
                Err(_) => assert!(len < header_len, "{} v{version}: whole header refused at {len}", schema.name),
                Ok(b) => {
                    assert!(len >= header_len, "{} v{version}: header parsed from {len} of {header_len} bytes", schema.name);
                    assert!(codec::decode(schema, version, b).is_err(), "{} v{version}: cut body decoded", schema.name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Corruption

/// Random corruptions of valid encodings: flipped bits, bytes set to the
/// values lengths are made of, bytes inserted and deleted. Decoding must not
/// panic; whatever does decode must encode again (in the same version) and
/// decode to the same value.
#[test]
fn corrupted_messages_never_panic_and_what_decodes_is_consistent() {
    let mut rng = Rng::new(0x666c_6970);
    let (mut tried, mut still_decoded) = (0usize, 0usize);
    for (schema, version) in all_messages() {
        for _ in 0..12 {
            let value = random_message(&mut rng, schema, version, GenOptions::default());
            let mut bytes = Vec::new();
            codec::encode(schema, version, &value, &mut bytes).unwrap();
            for _ in 0..40 {
                let mut bad = bytes.clone();
                for _ in 0..1 + rng.below(3) {
                    corrupt(&mut rng, &mut bad);
                }
                tried += 1;
                if let Ok(decoded) = codec::decode(schema, version, &bad) {
                    still_decoded += 1;
                    check_consistent(schema, version, &decoded, &bad);
                }
            }
        }
    }
    eprintln!("{tried} corrupted bodies, {still_decoded} still decoded (consistently)");
}

fn corrupt(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let at = |rng: &mut Rng, n: usize| rng.below(n.max(1) as u64) as usize;
    match rng.below(5) {
        0 if !bytes.is_empty() => {
            let i = at(rng, bytes.len());
            bytes[i] ^= 1 << rng.below(8);
        }
        1 if !bytes.is_empty() => {
            let i = at(rng, bytes.len());
            bytes[i] = *rng.pick(&[0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]);
        }
        2 => {
            let i = at(rng, bytes.len() + 1);
            bytes.insert(i, rng.next_u64() as u8);
        }
        3 if !bytes.is_empty() => {
            let i = at(rng, bytes.len());
            bytes.remove(i);
        }
        _ if bytes.len() >= 4 => {
            // A length-sized run of 0xff or 0x7f: null or huge counts.
            let i = at(rng, bytes.len() - 3);
            let b = *rng.pick(&[0xff, 0x7f]);
            bytes[i..i + 4].iter_mut().for_each(|x| *x = b);
        }
        _ => bytes.push(0xff),
    }
}

fn check_consistent(schema: &MessageSchema, version: i16, decoded: &Struct<'_>, input: &[u8]) {
    let mut again = Vec::new();
    codec::encode(schema, version, decoded, &mut again)
        .unwrap_or_else(|e| panic!("{} v{version}: decoded {input:02x?} but cannot encode it: {e}", schema.name));
    let redecoded = codec::decode(schema, version, &again)
        .unwrap_or_else(|e| panic!("{} v{version}: re-encoding of {input:02x?} does not decode: {e}", schema.name));
    assert_eq!(&redecoded, decoded, "{} v{version}: {input:02x?}", schema.name);
}

/// Random garbage, biased towards the bytes lengths and varints are made
/// of, into every message version and both header parsers.
#[test]
fn random_garbage_never_panics() {
    let mut rng = Rng::new(0x6761_7262);
    for (schema, version) in all_messages() {
        for _ in 0..400 {
            let n = rng.below(80) as usize;
            let garbage: Vec<u8> = (0..n)
                .map(|_| match rng.below(3) {
                    0 => rng.next_u64() as u8,
                    1 => *rng.pick(&[0x00, 0x01, 0x02, 0x80, 0xff]),
                    _ => rng.below(4) as u8,
                })
                .collect();
            if let Ok(decoded) = codec::decode(schema, version, &garbage) {
                check_consistent(schema, version, &decoded, &garbage);
            }
            let _ = peek_request(&garbage);
            let _ = RequestHeader::parse(&garbage);
            let _ = parse_response_header(&garbage, schema.api_key, version);
        }
    }
}

/// Tagged-field sections that break the rules: out of order, repeated,
/// longer than the message, a known tag with bytes left over in it.
#[test]
fn malformed_tag_sections_are_errors() {
    // HeartbeatResponse v4 (flexible): throttle_time_ms, error_code, tags.
    let schema = registry().get(12, MessageKind::Response).unwrap();
    let body = |tags: &[u8]| {
        let mut b = vec![0, 0, 0, 0, 0, 0];
        b.extend_from_slice(tags);
        b
    };
    assert!(codec::decode(schema, 4, &body(&[0])).is_ok());
    assert!(codec::decode(schema, 4, &body(&[2, 5, 0, 9, 0])).is_ok());
    // Out of order, and repeated.
    assert!(codec::decode(schema, 4, &body(&[2, 9, 0, 5, 0])).is_err());
    assert!(codec::decode(schema, 4, &body(&[2, 5, 0, 5, 0])).is_err());
    // A tag whose size runs past the end.
    assert!(codec::decode(schema, 4, &body(&[1, 5, 9, 1, 2])).is_err());
    // More tags announced than there are bytes.
    assert!(codec::decode(schema, 4, &body(&[0xff, 0xff, 0xff, 0xff, 0x0f])).is_err());
    // A varint tag number longer than 32 bits.
    assert!(codec::decode(schema, 4, &body(&[1, 0xff, 0xff, 0xff, 0xff, 0x7f, 0])).is_err());

    // ApiVersionsResponse v3 knows tag 1 (finalized_features_epoch, int64):
    // with 9 bytes instead of 8 the field is malformed.
    let schema = registry().get(18, MessageKind::Response).unwrap();
    let mut b = vec![0, 0, 1, 0, 0, 0, 0];
    b.extend_from_slice(&[1, 1, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
    let decoded = codec::decode(schema, 3, &b).expect("finalized_features_epoch = 5");
    assert_eq!(decoded.i64("finalized_features_epoch"), Some(5));
    let mut b = vec![0, 0, 1, 0, 0, 0, 0];
    b.extend_from_slice(&[1, 1, 9, 0, 0, 0, 0, 0, 0, 0, 5, 0]);
    assert!(matches!(codec::decode(schema, 3, &b), Err(DecodeError::TrailingBytes { .. })));
    b.truncate(b.len() - 5);
    b[9] = 4; // too short for an int64
    assert!(codec::decode(schema, 3, &b).is_err());
}

// ---------------------------------------------------------------------------
// Huge counts

/// The bound that `checked_count` relies on: every array element takes at
/// least one byte on the wire, in every version of every message.
#[test]
fn every_array_element_takes_at_least_one_byte() {
    fn walk(s: &StructSchema, version: i16, flexible: bool, path: &str, bad: &mut Vec<String>) {
        for f in s.fields.iter().filter(|f| f.versions.contains(version)) {
            let mut ty = &f.ty;
            while let FieldType::Array(inner) = ty {
                if min_size(inner, false, version, flexible) == 0 {
                    bad.push(format!("{path}.{} v{version}", f.name));
                }
                ty = inner;
            }
            if let FieldType::Struct(inner) = ty {
                walk(inner, version, flexible, &format!("{path}.{}", f.name), bad);
            }
        }
    }
    let mut bad = Vec::new();
    for (schema, version) in all_messages() {
        walk(&schema.body, version, schema.flexible.contains(version), &schema.name, &mut bad);
    }
    assert!(bad.is_empty(), "arrays whose elements can be empty on the wire: {bad:?}");
}

/// Fewest bytes a value of `ty` takes.
fn min_size(ty: &FieldType, nullable: bool, version: i16, flexible: bool) -> usize {
    match ty {
        FieldType::Bool | FieldType::Int8 => 1,
        FieldType::Int16 | FieldType::Uint16 => 2,
        FieldType::Int32 | FieldType::Uint32 => 4,
        FieldType::Int64 | FieldType::Float64 => 8,
        FieldType::Uuid => 16,
        FieldType::String if !flexible => 2,
        FieldType::Bytes | FieldType::Records | FieldType::Array(_) if !flexible => 4,
        FieldType::String | FieldType::Bytes | FieldType::Records | FieldType::Array(_) => 1,
        FieldType::Struct(_) if nullable => 1,
        FieldType::Struct(s) => {
            let fields: usize = s
                .fields
                .iter()
                .filter(|f| f.versions.contains(version) && !f.is_tagged_in(version))
                .map(|f| min_size(&f.ty, f.nullable.contains(version), version, flexible))
                .sum();
            fields + usize::from(flexible)
        }
    }
}

/// Counts far beyond the input are refused before anything is allocated
/// for them.
#[test]
fn impossible_counts_are_refused_without_allocating_for_them() {
    let metadata = registry().get(3, MessageKind::Request).unwrap();
    let cases: Vec<(&str, &MessageSchema, i16, Vec<u8>)> = vec![
        ("classic array count i32::MAX", metadata, 0, vec![0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']),
        ("compact array count u32::MAX", metadata, 9, vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0]),
        ("tag count u32::MAX", metadata, 9, vec![0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ("classic bytes length i32::MAX", registry().get(36, MessageKind::Request).unwrap(), 0, vec![0x7f, 0xff, 0xff, 0xff, 0]),
        ("compact bytes length", registry().get(36, MessageKind::Request).unwrap(), 2, vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0]),
        ("classic string length i16::MAX", registry().get(17, MessageKind::Request).unwrap(), 0, vec![0x7f, 0xff, b'a']),
    ];
    for (what, schema, version, bytes) in cases {
        let (result, peak) = peak_allocation(|| codec::decode(schema, version, &bytes).map(|_| ()));
        assert!(result.is_err(), "{what}: decoded");
        assert!(peak < 4096, "{what}: {peak} bytes allocated to refuse {} bytes", bytes.len());
    }
    // Header tag sections too.
    let mut frame = Vec::new();
    put_i16(&mut frame, 18);
    put_i16(&mut frame, 3);
    put_i32(&mut frame, 1);
    put_i16(&mut frame, -1);
    put_uvarint(&mut frame, u32::MAX);
    let (result, peak) = peak_allocation(|| RequestHeader::parse(&frame).map(|_| ()));
    assert!(result.is_err());
    assert!(peak < 4096, "{peak} bytes allocated for a header tag count of u32::MAX");
    let (result, peak) = peak_allocation(|| parse_response_header(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], 3, 12).map(|_| ()));
    assert!(result.is_err());
    assert!(peak < 4096, "{peak} bytes allocated for a response header tag count of u32::MAX");
}

/// A count that fits in the bytes left (so `checked_count` lets it through)
/// but whose elements are corrupt from the first one: the decoder must not
/// allocate for the announced count up front. With one `Value` (tens of
/// bytes) per announced element, a 100 MiB request would otherwise cost
/// gigabytes before the first element is read.
#[test]
fn plausible_counts_with_corrupt_elements_allocate_little() {
    const INPUT: usize = 1 << 20;
    // DescribeGroupsRequest v0: groups []string. Announce as many groups as
    // there are bytes, then a string length of -2.
    let schema = registry().get(15, MessageKind::Request).unwrap();
    let mut bytes = Vec::with_capacity(INPUT);
    put_i32(&mut bytes, (INPUT - 4) as i32);
    bytes.resize(INPUT, 0xff);
    bytes[4] = 0xff;
    bytes[5] = 0xfe;
    let (result, peak) = peak_allocation(|| codec::decode(schema, 0, &bytes).map(|_| ()));
    assert!(result.is_err());
    assert!(peak < INPUT / 4, "{peak} bytes allocated to refuse a {INPUT}-byte message at its first element");

    // The same through a compact count in a flexible version
    // (DescribeGroupsRequest v5) and a header tag section.
    let mut bytes = Vec::with_capacity(INPUT);
    put_uvarint(&mut bytes, (INPUT - 8) as u32);
    bytes.resize(INPUT, 0xff);
    let (result, peak) = peak_allocation(|| codec::decode(schema, 5, &bytes).map(|_| ()));
    assert!(result.is_err());
    assert!(peak < INPUT / 4, "{peak} bytes allocated to refuse a {INPUT}-byte flexible message");

    let mut frame = Vec::with_capacity(INPUT);
    frame.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff]);
    put_uvarint(&mut frame, (INPUT - 16) as u32);
    frame.resize(INPUT, 0xff);
    let (result, peak) = peak_allocation(|| RequestHeader::parse(&frame).map(|_| ()));
    assert!(result.is_err());
    assert!(peak < INPUT / 4, "{peak} bytes allocated to refuse a {INPUT}-byte header tag section");
}
