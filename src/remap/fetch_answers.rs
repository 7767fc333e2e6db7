//! Fetch answers put together: the answers of one round's upstream fetches,
//! split by broker, combined into one decoded answer before each virtual
//! partition is answered from it (`fetch_plan::answer`).

use crate::kafka::api::error;
use crate::kafka::codec::{Struct, Value};
use crate::remap::fetch_plan::set_if_present;

/// Several decoded Fetch answers as one: their topics and partitions
/// together, the largest throttle, the first top-level error.
pub fn combine_fetch_answers<'a>(version: i16, mut decoded: impl Iterator<Item = Struct<'a>>) -> Option<Struct<'a>> {
    let mut combined = decoded.next()?;
    for other in decoded {
        let throttle = combined.i32("throttle_time_ms").unwrap_or(0).max(other.i32("throttle_time_ms").unwrap_or(0));
        set_if_present(&mut combined, "throttle_time_ms", Value::Int32(throttle), version);
        if combined.i16("error_code") == Some(error::NONE) {
            if let Some(code) = other.i16("error_code") {
                set_if_present(&mut combined, "error_code", Value::Int16(code), version);
            }
        }
        let topics = combined.array_mut("responses").expect("a Fetch answer has responses");
        for t in other.structs("responses") {
            let same = |x: &Value<'_>| {
                x.as_struct().is_some_and(|x| x.str("topic") == t.str("topic") && x.uuid("topic_id") == t.uuid("topic_id"))
            };
            match topics.iter_mut().find(|x| same(x)).and_then(Value::as_struct_mut) {
                Some(mine) => mine.array_mut("partitions").expect("a topic has partitions").extend(t.array("partitions").iter().cloned()),
                None => topics.push(Value::Struct(t.clone())),
            }
        }
    }
    Some(combined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::api::ApiKey;
    use crate::kafka::codec;
    use crate::kafka::header::parse_response_header;
    use crate::kafka::message::{encode_response, response_schema};

    const VERSION: i16 = 12;

    /// A Fetch answer of `partitions` (topic, index, error), with a throttle.
    fn answer(throttle: i32, partitions: &[(&str, i32, i16)]) -> Vec<u8> {
        let schema = response_schema(ApiKey::Fetch as i16).unwrap();
        let ts = codec::element_schema(&schema.body, "responses");
        let ps = codec::element_schema(ts, "partitions");
        let mut body = codec::with_defaults(&schema.body, VERSION);
        body.set("throttle_time_ms", Value::Int32(throttle));
        let mut topics: Vec<Value<'_>> = Vec::new();
        for &(topic, index, code) in partitions {
            let mut p = codec::with_defaults(ps, VERSION);
            p.set("partition_index", Value::Int32(index));
            p.set("error_code", Value::Int16(code));
            let found = topics.iter_mut().filter_map(Value::as_struct_mut).find(|t| t.str("topic") == Some(topic));
            match found {
                Some(t) => t.array_mut("partitions").unwrap().push(Value::Struct(p)),
                None => {
                    let mut t = codec::with_defaults(ts, VERSION);
                    t.set("topic", Value::str(topic));
                    t.set("partitions", Value::Array(Some(vec![Value::Struct(p)])));
                    topics.push(Value::Struct(t));
                }
            }
        }
        body.set("responses", Value::Array(Some(topics)));
        encode_response(ApiKey::Fetch as i16, VERSION, 9, &[], &body).unwrap()
    }

    #[test]
    fn answers_of_a_split_fetch_combine_into_one() {
        let a = answer(5, &[("t", 0, error::NONE), ("u", 2, error::NONE)]);
        let b = answer(20, &[("t", 1, error::NOT_LEADER_OR_FOLLOWER), ("v", 0, error::NONE)]);
        let schema = response_schema(ApiKey::Fetch as i16).unwrap();
        let (_, _, body_a) = parse_response_header(&a, ApiKey::Fetch as i16, VERSION).unwrap();
        let (_, _, body_b) = parse_response_header(&b, ApiKey::Fetch as i16, VERSION).unwrap();
        let decoded = [codec::decode(schema, VERSION, body_a).unwrap(), codec::decode(schema, VERSION, body_b).unwrap()];
        let body = combine_fetch_answers(VERSION, decoded.into_iter()).unwrap();
        assert_eq!(body.i32("throttle_time_ms"), Some(20));
        let seen: Vec<(String, i32, i16)> = body
            .structs("responses")
            .flat_map(|t| {
                let name = t.str("topic").unwrap().to_string();
                t.structs("partitions")
                    .map(move |p| (name.clone(), p.i32("partition_index").unwrap(), p.i16("error_code").unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("t".to_string(), 0, error::NONE),
                ("t".to_string(), 1, error::NOT_LEADER_OR_FOLLOWER),
                ("u".to_string(), 2, error::NONE),
                ("v".to_string(), 0, error::NONE),
            ]
        );
    }
}
