//! Every declared message, decode → encode → decode. Input: a kind byte
//! (bit 0: 0 request, 1 response), the api key and version (two i16,
//! big-endian; a version the schema does not declare is folded into its
//! range), then the body without its header. A body that decodes must
//! encode, and the encoding must decode to the same value and encode to
//! the same bytes again.
#![no_main]

use kpr_proxy::kafka::codec;
use kpr_proxy::kafka::schema::{registry, MessageKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [kind, k0, k1, v0, v1, body @ ..] = data else { return };
    let kind = if kind & 1 == 0 { MessageKind::Request } else { MessageKind::Response };
    let Some(schema) = registry().get(i16::from_be_bytes([*k0, *k1]), kind) else { return };
    let versions = schema.versions;
    let mut version = i16::from_be_bytes([*v0, *v1]);
    if !versions.contains(version) {
        let span = i32::from(versions.max) - i32::from(versions.min) + 1;
        version = (i32::from(versions.min) + i32::from(version).rem_euclid(span)) as i16;
    }
    let Ok(decoded) = codec::decode(schema, version, body) else { return };
    let mut encoded = Vec::new();
    codec::encode(schema, version, &decoded, &mut encoded)
        .unwrap_or_else(|e| panic!("{} v{version}: a decoded body does not encode: {e:?}", schema.name));
    let again = codec::decode(schema, version, &encoded)
        .unwrap_or_else(|e| panic!("{} v{version}: a re-encoded body does not decode: {e}", schema.name));
    if again != decoded {
        // A NaN float64 differs from itself; as text it does not.
        assert_eq!(format!("{again:?}"), format!("{decoded:?}"), "{} v{version}", schema.name);
    }
    let mut encoded_again = Vec::new();
    codec::encode(schema, version, &again, &mut encoded_again).expect("encodes twice");
    assert_eq!(encoded_again, encoded, "{} v{version}", schema.name);
});
