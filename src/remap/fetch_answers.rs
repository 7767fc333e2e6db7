//! Fetch answers put together: the answers of one round's upstream fetches,
//! split by broker, combined into one decoded answer before each virtual
//! partition is answered from it (`fetch_plan::answer`).

use crate::kafka::api::error;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::fetch_response::{self as response, responses as topic};

/// Several decoded Fetch answers as one: their topics and partitions
/// together, the largest throttle, the first top-level error.
pub fn combine_fetch_answers<'a>(version: i16, mut decoded: impl Iterator<Item = Struct<'a>>) -> Option<Struct<'a>> {
    let mut combined = decoded.next()?;
    for other in decoded {
        let throttle = combined.read(response::THROTTLE_TIME_MS).unwrap_or(0).max(other.read(response::THROTTLE_TIME_MS).unwrap_or(0));
        combined.write_in(response::THROTTLE_TIME_MS, throttle, version);
        if combined.read(response::ERROR_CODE) == Some(error::NONE) {
            if let Some(code) = other.read(response::ERROR_CODE) {
                combined.write_in(response::ERROR_CODE, code, version);
            }
        }
        let topics = combined.items_mut(response::RESPONSES).expect("a Fetch answer has responses");
        for t in other.iter(response::RESPONSES) {
            let same = |x: &Value<'_>| {
                x.as_struct().is_some_and(|x| x.read(topic::TOPIC) == t.read(topic::TOPIC) && x.read(topic::TOPIC_ID) == t.read(topic::TOPIC_ID))
            };
            match topics.iter_mut().find(|x| same(x)).and_then(Value::as_struct_mut) {
                Some(mine) => mine.items_mut(topic::PARTITIONS).expect("a topic has partitions").extend(t.items(topic::PARTITIONS).iter().cloned()),
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
    use crate::kafka::fields::fetch_response::responses::partitions as part;
    use crate::kafka::fields::members;
    use crate::kafka::message::{decode_response, encode_response, response_schema};

    const VERSION: i16 = 12;

    /// A Fetch answer of `partitions` (topic, index, error), with a throttle.
    fn answer(throttle: i32, partitions: &[(&str, i32, i16)]) -> Vec<u8> {
        let schema = response_schema(ApiKey::Fetch as i16).unwrap();
        let ts = members(&schema.body, response::RESPONSES);
        let ps = members(ts, topic::PARTITIONS);
        let mut body = codec::with_defaults(&schema.body, VERSION);
        body.write(response::THROTTLE_TIME_MS, throttle);
        let mut topics: Vec<Value<'_>> = Vec::new();
        for &(topic, index, code) in partitions {
            let mut p = codec::with_defaults(ps, VERSION);
            p.write(part::PARTITION_INDEX, index);
            p.write(part::ERROR_CODE, code);
            let found = topics.iter_mut().filter_map(Value::as_struct_mut).find(|t| t.read(topic::TOPIC) == Some(topic));
            match found {
                Some(t) => t.items_mut(topic::PARTITIONS).unwrap().push(Value::Struct(p)),
                None => {
                    let mut t = codec::with_defaults(ts, VERSION);
                    t.write(topic::TOPIC, topic);
                    t.write(topic::PARTITIONS, vec![Value::Struct(p)]);
                    topics.push(Value::Struct(t));
                }
            }
        }
        body.write(response::RESPONSES, topics);
        encode_response(ApiKey::Fetch as i16, VERSION, 9, &[], &body).unwrap()
    }

    #[test]
    fn answers_of_a_split_fetch_combine_into_one() {
        let a = answer(5, &[("t", 0, error::NONE), ("u", 2, error::NONE)]);
        let b = answer(20, &[("t", 1, error::NOT_LEADER_OR_FOLLOWER), ("v", 0, error::NONE)]);
        let decoded = [&a, &b].map(|frame| decode_response(ApiKey::Fetch as i16, VERSION, frame).unwrap().body);
        let body = combine_fetch_answers(VERSION, decoded.into_iter()).unwrap();
        assert_eq!(body.read(response::THROTTLE_TIME_MS), Some(20));
        let seen: Vec<(String, i32, i16)> = body
            .iter(response::RESPONSES)
            .flat_map(|t| {
                let name = t.read(topic::TOPIC).unwrap().to_string();
                t.iter(topic::PARTITIONS)
                    .map(move |p| (name.clone(), p.read(part::PARTITION_INDEX).unwrap(), p.read(part::ERROR_CODE).unwrap()))
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
