//! The generated keys against the schemas the codec uses, and typed reads
//! against string reads of the same decoded messages.

use super::*;
use crate::kafka::codec;
use crate::kafka::message::{request_schema, response_schema};
use crate::kafka::schema::{registry, FieldType, StructSchema};

/// The struct at a dotted path of nested struct fields.
fn struct_at<'s>(mut s: &'s StructSchema, path: &str) -> &'s StructSchema {
    for name in path.split('.').filter(|p| !p.is_empty()) {
        let f = &s.fields[s.index_of(name).unwrap_or_else(|| panic!("no {name} in path {path}"))];
        s = match &f.ty {
            FieldType::Struct(inner) => inner,
            FieldType::Array(elem) => match elem.as_ref() {
                FieldType::Struct(inner) => inner,
                other => panic!("{path}: {other:?}"),
            },
            other => panic!("{path}: {other:?}"),
        };
    }
    s
}

#[test]
fn one_module_per_declared_message() {
    assert_eq!(MESSAGES.len(), registry().iter().count());
    for (name, key) in MESSAGES {
        assert!(registry().iter().any(|m| m.name == *name && m.api_key == *key), "{name}");
    }
}

#[test]
fn every_key_names_the_field_at_its_position() {
    let mut counted = 0;
    for &(message, path, name, index) in ALL_FIELDS {
        let m = registry().iter().find(|m| m.name == message).unwrap();
        assert_eq!(struct_at(&m.body, path).fields[index].name, name, "{message} {path}");
        counted += 1;
    }
    fn count(s: &StructSchema) -> usize {
        s.fields.len()
            + s.fields
                .iter()
                .map(|f| match &f.ty {
                    FieldType::Struct(inner) => count(inner),
                    FieldType::Array(elem) => match elem.as_ref() {
                        FieldType::Struct(inner) => count(inner),
                        _ => 0,
                    },
                    _ => 0,
                })
                .sum::<usize>()
    }
    assert_eq!(counted, registry().iter().map(|m| count(&m.body)).sum::<usize>());
}

#[test]
fn typed_reads_equal_string_reads() {
    use produce_request::topic_data;
    for version in [3i16, 9, 11] {
        let schema = request_schema(0).unwrap();
        let mut req = codec::with_defaults(&schema.body, version);
        req.write(produce_request::ACKS, -1);
        req.write(produce_request::TIMEOUT_MS, 1500);
        req.write(produce_request::TRANSACTIONAL_ID, "tx");
        let mut t = codec::with_defaults(members(&schema.body, produce_request::TOPIC_DATA), version);
        t.write(topic_data::NAME, String::from("orders"));
        let ps = members(members(&schema.body, produce_request::TOPIC_DATA), topic_data::PARTITION_DATA);
        let mut p = codec::with_defaults(ps, version);
        p.write(topic_data::partition_data::INDEX, 7);
        p.write(topic_data::partition_data::RECORDS, Some(Cow::Borrowed(&b"xyz"[..])));
        t.write(topic_data::PARTITION_DATA, vec![p]);
        req.write(produce_request::TOPIC_DATA, vec![t]);
        let bytes = {
            let mut out = Vec::new();
            codec::encode(schema, version, &req, &mut out).unwrap();
            out
        };
        let back = codec::decode(schema, version, &bytes).unwrap();
        assert_eq!(back.read(produce_request::ACKS), back.i16("acks"));
        assert_eq!(back.read(produce_request::TIMEOUT_MS), Some(1500));
        assert_eq!(back.read(produce_request::TRANSACTIONAL_ID), back.str("transactional_id"));
        let t = back.iter(produce_request::TOPIC_DATA).next().unwrap();
        assert_eq!(t.read(topic_data::NAME), Some("orders"));
        let p = t.iter(topic_data::PARTITION_DATA).next().unwrap();
        assert_eq!(p.read(topic_data::partition_data::INDEX), p.i32("index"));
        assert_eq!(p.read(topic_data::partition_data::RECORDS), Some(&b"xyz"[..]));
    }
}

/// A field absent in a version reads `None`, as by name; tagged and
/// nested struct fields read through their own keys.
#[test]
fn fields_of_other_versions_and_tagged_fields() {
    use fetch_response::responses::partitions;
    let schema = response_schema(1).unwrap();
    for version in [4i16, 7, 12, 13, 16] {
        let mut body = codec::with_defaults(&schema.body, version);
        body.write_in(fetch_response::ERROR_CODE, ErrorCode::NOT_COORDINATOR, version);
        let ts = members(&schema.body, fetch_response::RESPONSES);
        let mut t = codec::with_defaults(ts, version);
        t.write_in(fetch_response::responses::TOPIC, "a", version);
        t.write_in(fetch_response::responses::TOPIC_ID, [9; 16], version);
        let mut p = codec::with_defaults(members(ts, fetch_response::responses::PARTITIONS), version);
        p.write(partitions::PARTITION_INDEX, 2);
        p.write(partitions::HIGH_WATERMARK, 40);
        if version >= 12 {
            let ls = members(members(ts, fetch_response::responses::PARTITIONS), partitions::CURRENT_LEADER);
            let mut leader = codec::with_defaults(ls, version);
            leader.write(partitions::current_leader::LEADER_ID, 5);
            p.write(partitions::CURRENT_LEADER, leader);
        }
        t.write(fetch_response::responses::PARTITIONS, vec![p]);
        body.write(fetch_response::RESPONSES, vec![t]);
        let bytes = crate::kafka::message::encode_response(1, version, 3, &[], &body).unwrap();
        let decoded = crate::kafka::message::decode_response(1, version, &bytes).unwrap();
        assert_eq!(decoded.correlation_id, 3);
        let back = decoded.body;
        assert_eq!(back.read(fetch_response::ERROR_CODE), back.i16("error_code"), "v{version}");
        assert_eq!(back.read(fetch_response::ERROR_CODE).is_some(), version >= 7, "v{version}");
        let t = back.iter(fetch_response::RESPONSES).next().unwrap();
        assert_eq!(t.read(fetch_response::responses::TOPIC), t.str("topic"), "v{version}");
        assert_eq!(t.read(fetch_response::responses::TOPIC_ID), t.uuid("topic_id"), "v{version}");
        let p = t.iter(fetch_response::responses::PARTITIONS).next().unwrap();
        assert_eq!(p.read(partitions::HIGH_WATERMARK), Some(40));
        let leader = p.read(partitions::CURRENT_LEADER).and_then(|l| l.read(partitions::current_leader::LEADER_ID));
        assert_eq!(leader, p.child("current_leader").and_then(|l| l.i32("leader_id")), "v{version}");
        assert_eq!(leader.is_some(), version >= 12, "v{version}");
    }
}

/// A key of another message whose field of the same name sits elsewhere
/// reads what a lookup by name reads.
#[test]
fn a_key_of_another_struct_falls_back_to_its_name() {
    let schema = request_schema(1).unwrap();
    let mut req = codec::with_defaults(&schema.body, 12);
    req.write(fetch_request::MAX_WAIT_MS, 250);
    // fetch_request::MAX_WAIT_MS and this key share the name, not the index.
    const ELSEWHERE: Field<i32> = Field::new("max_wait_ms", 0);
    assert_ne!(fetch_request::MAX_WAIT_MS.index, ELSEWHERE.index);
    assert_eq!(req.read(ELSEWHERE), Some(250));
    assert_eq!(req.read(Field::<i32>::named("max_wait_ms")), Some(250));
}
