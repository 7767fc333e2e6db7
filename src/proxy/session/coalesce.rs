//! Produce requests the proxy built for remapped topics, sent upstream
//! together: the pure arithmetic `hold` uses to merge held parts into few
//! requests and to cut a merged answer apart (it keeps nothing).
//!
//! A client writing many virtual partitions sends many small produce
//! requests (librdkafka sends one per partition batch), and a 10:1 mapping
//! means ten times more of them than on the physical topic. Brokers pay per
//! request as well as per batch, so the requests one client burst produced
//! for one broker are merged into as few upstream requests as Kafka allows:
//! one entry per (topic, physical partition) per request, so a partition's
//! batches keep their order across the merged requests. The merged answer
//! is cut back into one answer per original request, and those go on as if
//! each had been sent alone.
//!
//! Only requests the proxy re-encoded anyway are merged (frames forwarded as
//! the client sent them stay untouched), only with equal acks, timeout and
//! client id, never transactional ones, and only when no unknown tagged
//! field would have to be dropped or duplicated.

use std::collections::HashMap;
use std::time::Instant;

use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::produce_request::{self as request, topic_data as req_topic};
use crate::kafka::fields::produce_request::topic_data::partition_data as req_entry;
use crate::kafka::fields::produce_response::{self as response, responses as resp_topic};
use crate::kafka::fields::produce_response::responses::partition_responses as resp_entry;
use crate::kafka::header::RequestHeader;
use crate::kafka::message::{decode_response, encode_request, encode_response, request_schema};

/// A merged request stays below this many bytes unless one part alone is
/// bigger (brokers accept 100 MB; smaller keeps one answer's latency down).
const MAX_MERGED_BYTES: usize = 4 << 20;

/// A produce part waiting to go upstream with the others of its burst.
pub struct Held {
    pub seq: u64,
    pub part: usize,
    pub correlation_id: i32,
    pub frame: Vec<u8>,
    pub deadline: Instant,
}

/// One original part inside a merged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub seq: u64,
    pub part: usize,
    pub correlation_id: i32,
    /// The (topic, physical partition) entries it sent.
    pub entries: Vec<(String, i32)>,
}

/// What goes on the wire for a run of held parts.
pub enum Outgoing {
    /// A part sent as it was built.
    Single(Held),
    /// Several parts in one request.
    Merged { frame: Vec<u8>, correlation_id: i32, version: i16, members: Vec<Member>, deadline: Instant },
}

/// The fields that must agree for requests to share one upstream request.
#[derive(PartialEq, Eq, Clone)]
struct Key {
    version: i16,
    client_id: Option<String>,
    acks: i16,
    timeout_ms: i32,
}

struct Decoded<'f> {
    key: Key,
    body: Struct<'f>,
    entries: Vec<(String, i32)>,
}

/// Read a held part back; `None` for anything that must go alone.
fn decode(frame: &[u8]) -> Option<Decoded<'_>> {
    let (header, body) = RequestHeader::parse(frame).ok()?;
    if header.api_key != ApiKey::Produce as i16 || !header.tags.is_empty() {
        return None;
    }
    let body = codec::decode(request_schema(ApiKey::Produce as i16)?, header.api_version, body).ok()?;
    if body.read(request::TRANSACTIONAL_ID).is_some() || !body.unknown_tags.is_empty() || body.read(request::ACKS)? == 0 {
        return None;
    }
    let mut entries = Vec::new();
    for topic in body.iter(request::TOPIC_DATA) {
        if !topic.unknown_tags.is_empty() {
            return None;
        }
        let name = topic.read(req_topic::NAME)?;
        for entry in topic.iter(req_topic::PARTITION_DATA) {
            entries.push((name.to_string(), entry.read(req_entry::INDEX)?));
        }
    }
    let key = Key {
        version: header.api_version,
        client_id: header.client_id.map(|c| c.into_owned()),
        acks: body.read(request::ACKS)?,
        timeout_ms: body.read(request::TIMEOUT_MS)?,
    };
    Some(Decoded { key, body, entries })
}

/// A merged request being put together; `key` is `None` for a part that
/// goes alone, which no other part joins.
struct Group {
    key: Option<Key>,
    members: Vec<usize>,
    bytes: usize,
}

/// Merge held parts, in order, into as few requests as allowed. A part goes
/// into the first request after the last one holding any of its partitions,
/// so every partition's batches go upstream in the order they came.
pub fn coalesce(held: Vec<Held>, mut next_correlation_id: impl FnMut() -> i32) -> Vec<Outgoing> {
    if held.len() < 2 {
        return held.into_iter().map(Outgoing::Single).collect();
    }
    let decoded: Vec<Option<Decoded<'_>>> = held.iter().map(|h| decode(&h.frame)).collect();
    // Groups in send order; a part that cannot be merged is a group alone.
    let mut groups: Vec<Group> = Vec::new();
    let mut last_group_of: HashMap<(&str, i32), usize> = HashMap::new();
    let mut barrier = 0;
    for (i, d) in decoded.iter().enumerate() {
        let size = held[i].frame.len();
        let Some(d) = d else {
            // Nothing after it may move before it.
            groups.push(Group { key: None, members: vec![i], bytes: size });
            barrier = groups.len();
            continue;
        };
        let after = d.entries.iter().filter_map(|(t, p)| last_group_of.get(&(t.as_str(), *p))).map(|g| g + 1).max();
        let from = after.unwrap_or(0).max(barrier);
        let target = (from..groups.len())
            .find(|&g| groups[g].key.as_ref() == Some(&d.key) && groups[g].bytes + size <= MAX_MERGED_BYTES)
            .unwrap_or_else(|| {
                groups.push(Group { key: Some(d.key.clone()), members: Vec::new(), bytes: 0 });
                groups.len() - 1
            });
        groups[target].members.push(i);
        groups[target].bytes += size;
        for (t, p) in &d.entries {
            last_group_of.insert((t.as_str(), *p), target);
        }
    }
    // Encode the merges while the decoded parts borrow the frames; the
    // frames move into the output afterwards.
    let merges: Vec<Option<Outgoing>> = groups
        .iter()
        .map(|g| {
            if g.members.len() < 2 {
                return None;
            }
            let version = g.key.as_ref()?.version;
            let parts: Vec<&Decoded<'_>> = g.members.iter().map(|&i| decoded[i].as_ref().expect("merged parts decoded")).collect();
            let correlation_id = next_correlation_id();
            let frame = merged_request(&parts, correlation_id)?;
            let members = g
                .members
                .iter()
                .zip(&parts)
                .map(|(&i, d)| Member { seq: held[i].seq, part: held[i].part, correlation_id: held[i].correlation_id, entries: d.entries.clone() })
                .collect();
            let deadline = g.members.iter().map(|&i| held[i].deadline).max().expect("two or more members");
            Some(Outgoing::Merged { frame, correlation_id, version, members, deadline })
        })
        .collect();
    drop(decoded);
    let mut held: Vec<Option<Held>> = held.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(groups.len());
    for (g, merge) in groups.iter().zip(merges) {
        match merge {
            Some(merged) => out.push(merged),
            // A group of one, or a merge that failed to encode: each part
            // as it was built.
            None => out.extend(g.members.iter().filter_map(|&i| held[i].take()).map(Outgoing::Single)),
        }
    }
    out
}

/// One request holding every topic entry of `parts`, a topic named once.
fn merged_request(parts: &[&Decoded<'_>], correlation_id: i32) -> Option<Vec<u8>> {
    let first = parts.first()?;
    let mut body = first.body.clone();
    let mut topics: Vec<Struct<'_>> = Vec::new();
    for part in parts {
        for topic in part.body.iter(request::TOPIC_DATA) {
            let name = topic.read(req_topic::NAME);
            match topics.iter_mut().find(|t| t.read(req_topic::NAME) == name) {
                Some(existing) => {
                    let entries = topic.items(req_topic::PARTITION_DATA).to_vec();
                    existing.items_mut(req_topic::PARTITION_DATA)?.extend(entries);
                }
                None => topics.push(topic.clone()),
            }
        }
    }
    body.write(request::TOPIC_DATA, topics);
    encode_request(ApiKey::Produce as i16, first.key.version, correlation_id, first.key.client_id.as_deref(), &body).ok()
}

/// Cut the answer to a merged request into the answer each member would
/// have had alone: its own partitions, the shared throttle time and leader
/// endpoints, its own correlation id.
pub fn split_response(frame: &[u8], version: i16, members: &[Member]) -> Result<Vec<Vec<u8>>, String> {
    let api = ApiKey::Produce as i16;
    let answer = decode_response(api, version, frame)?;
    let (header_tags, mut shared) = (answer.header_tags, answer.body);
    // The partition answers are handed out; the rest is copied to each.
    let responses = std::mem::replace(shared.value_mut(response::RESPONSES).ok_or("no responses")?, Value::Array(Some(Vec::new())));
    // Each topic once without its partition answers (copied per member
    // that has some), and its partition answers.
    let topics: Vec<(Struct<'_>, Vec<&Struct<'_>>)> = match &responses {
        Value::Array(Some(items)) => items
            .iter()
            .filter_map(Value::as_struct)
            .map(|t| {
                let mut shell = t.clone();
                shell.write(resp_topic::PARTITION_RESPONSES, Vec::<Value>::new());
                (shell, t.iter(resp_topic::PARTITION_RESPONSES).collect())
            })
            .collect(),
        _ => Vec::new(),
    };
    members
        .iter()
        .map(|m| {
            let mut own = shared.clone();
            let own_topics: Vec<Value<'_>> = topics
                .iter()
                .filter_map(|(shell, entries)| {
                    let name = shell.read(resp_topic::NAME)?;
                    let entries: Vec<Value<'_>> = entries
                        .iter()
                        .filter(|e| e.read(resp_entry::INDEX).is_some_and(|p| m.entries.iter().any(|(n, q)| n == name && *q == p)))
                        .map(|e| Value::Struct((*e).clone()))
                        .collect();
                    if entries.is_empty() {
                        return None;
                    }
                    let mut t = shell.clone();
                    t.write(resp_topic::PARTITION_RESPONSES, entries);
                    Some(Value::Struct(t))
                })
                .collect();
            own.write(response::RESPONSES, own_topics);
            encode_response(api, version, m.correlation_id, &header_tags, &own).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::codec::with_defaults;
    use crate::kafka::fields::members as members_of;
    use crate::kafka::message::response_schema;
    use std::borrow::Cow;

    fn produce(version: i16, correlation_id: i32, acks: i16, entries: &[(&str, i32, &[u8])]) -> Vec<u8> {
        let schema = request_schema(0).unwrap();
        let mut body = with_defaults(&schema.body, version);
        body.put(request::TRANSACTIONAL_ID, Value::String(None));
        body.write(request::ACKS, acks);
        body.write(request::TIMEOUT_MS, 30_000);
        let topic_schema = members_of(&schema.body, request::TOPIC_DATA);
        let entry_schema = members_of(topic_schema, req_topic::PARTITION_DATA);
        let mut topics: Vec<Struct<'_>> = Vec::new();
        for (name, p, records) in entries {
            let mut e = with_defaults(entry_schema, version);
            e.write(req_entry::INDEX, *p);
            e.put(req_entry::RECORDS, Value::Records(Some(Cow::Owned(records.to_vec()))));
            match topics.iter_mut().find(|t| t.read(req_topic::NAME) == Some(*name)) {
                Some(t) => t.items_mut(req_topic::PARTITION_DATA).unwrap().push(Value::Struct(e)),
                None => {
                    let mut t = with_defaults(topic_schema, version);
                    t.write(req_topic::NAME, *name);
                    t.write(req_topic::PARTITION_DATA, vec![Value::Struct(e)]);
                    topics.push(t);
                }
            }
        }
        body.write(request::TOPIC_DATA, topics);
        encode_request(0, version, correlation_id, Some("client"), &body).unwrap()
    }

    fn held(seq: u64, frame: Vec<u8>) -> Held {
        let correlation_id = crate::kafka::header::peek_request(&frame).unwrap().2;
        Held { seq, part: 0, correlation_id, frame, deadline: Instant::now() }
    }

    /// (topic, partition, records) of every entry of a request frame.
    fn entries_of(frame: &[u8]) -> Vec<(String, i32, Vec<u8>)> {
        let (h, body) = RequestHeader::parse(frame).unwrap();
        let body = codec::decode(request_schema(0).unwrap(), h.api_version, body).unwrap();
        let mut out = Vec::new();
        for t in body.iter(request::TOPIC_DATA) {
            for e in t.iter(req_topic::PARTITION_DATA) {
                let records = match e.value(req_entry::RECORDS) {
                    Value::Records(Some(r)) => r.to_vec(),
                    _ => Vec::new(),
                };
                out.push((t.read(req_topic::NAME).unwrap().to_string(), e.read(req_entry::INDEX).unwrap(), records));
            }
        }
        out
    }

    fn sent(out: &[Outgoing]) -> Vec<Vec<(String, i32, Vec<u8>)>> {
        out.iter()
            .map(|o| match o {
                Outgoing::Single(h) => entries_of(&h.frame),
                Outgoing::Merged { frame, .. } => entries_of(frame),
            })
            .collect()
    }

    #[test]
    fn parts_for_different_partitions_share_a_request_and_siblings_keep_their_order() {
        for version in [3, 8, 9, 11] {
            let held_parts = vec![
                held(0, produce(version, 1, -1, &[("t", 0, b"a0")])),
                held(1, produce(version, 2, -1, &[("t", 1, b"b1")])),
                held(2, produce(version, 3, -1, &[("t", 0, b"c0"), ("u", 0, b"c0u")])),
                held(3, produce(version, 4, -1, &[("t", 2, b"d2")])),
            ];
            let mut next = 100;
            let out = coalesce(held_parts, || {
                next += 1;
                next
            });
            let e = |t: &str, p: i32, r: &[u8]| (t.to_string(), p, r.to_vec());
            assert_eq!(
                sent(&out),
                vec![
                    vec![e("t", 0, b"a0"), e("t", 1, b"b1"), e("t", 2, b"d2")],
                    vec![e("t", 0, b"c0"), e("u", 0, b"c0u")],
                ],
                "v{version}"
            );
            match &out[0] {
                Outgoing::Merged { members, correlation_id, .. } => {
                    assert_eq!(*correlation_id, 101);
                    assert_eq!(members.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![0, 1, 3]);
                }
                Outgoing::Single(_) => panic!("v{version}: first request not merged"),
            }
            // A group of one goes as it was built.
            assert!(matches!(&out[1], Outgoing::Single(h) if h.seq == 2));
        }
    }

    #[test]
    fn different_acks_transactions_and_other_apis_are_not_merged() {
        let mut txn = produce(9, 3, -1, &[("t", 2, b"x")]);
        // Rebuild with a transactional id.
        {
            let (h, body) = RequestHeader::parse(&txn).unwrap();
            let mut b = codec::decode(request_schema(0).unwrap(), 9, body).unwrap().into_owned();
            b.write(request::TRANSACTIONAL_ID, "tx");
            txn = encode_request(0, 9, h.correlation_id, Some("client"), &b).unwrap();
        }
        let out = coalesce(
            vec![
                held(0, produce(9, 1, -1, &[("t", 0, b"a")])),
                held(1, produce(9, 2, 1, &[("t", 1, b"b")])),
                held(2, txn),
                held(3, produce(9, 4, -1, &[("t", 3, b"d")])),
            ],
            || 7,
        );
        assert_eq!(out.len(), 4, "nothing may merge across a part that goes alone");
        assert!(out.iter().all(|o| matches!(o, Outgoing::Single(_))));
    }

    #[test]
    fn the_merged_answer_is_cut_back_per_member() {
        for version in [3, 8, 9, 10, 11] {
            let members = vec![
                Member { seq: 0, part: 0, correlation_id: 11, entries: vec![("t".into(), 0), ("u".into(), 1)] },
                Member { seq: 1, part: 2, correlation_id: 12, entries: vec![("t".into(), 1)] },
            ];
            let schema = response_schema(0).unwrap();
            let mut body = with_defaults(&schema.body, version);
            let topic_schema = members_of(&schema.body, response::RESPONSES);
            let entry_schema = members_of(topic_schema, resp_topic::PARTITION_RESPONSES);
            let topic = |name: &str, parts: &[(i32, i64)]| {
                let mut t = with_defaults(topic_schema, version);
                t.write(resp_topic::NAME, name.to_string());
                let entries: Vec<Value> = parts
                    .iter()
                    .map(|(p, offset)| {
                        let mut e = with_defaults(entry_schema, version);
                        e.write(resp_entry::INDEX, *p);
                        e.write(resp_entry::BASE_OFFSET, *offset);
                        Value::Struct(e)
                    })
                    .collect();
                t.write(resp_topic::PARTITION_RESPONSES, entries);
                Value::Struct(t)
            };
            body.write(response::RESPONSES, vec![topic("t", &[(0, 100), (1, 200)]), topic("u", &[(1, 300)])]);
            body.write(response::THROTTLE_TIME_MS, 5);
            let frame = encode_response(0, version, 99, &[], &body).unwrap();
            let answers = split_response(&frame, version, &members).unwrap();
            let read = |a: &[u8]| {
                let answer = decode_response(0, version, a).unwrap();
                let (corr, b) = (answer.correlation_id, answer.body);
                let offsets: Vec<(String, i32, i64)> = b
                    .iter(response::RESPONSES)
                    .flat_map(|t| {
                        let name = t.read(resp_topic::NAME).unwrap().to_string();
                        t.iter(resp_topic::PARTITION_RESPONSES)
                            .map(move |e| (name.clone(), e.read(resp_entry::INDEX).unwrap(), e.read(resp_entry::BASE_OFFSET).unwrap()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (corr, b.read(response::THROTTLE_TIME_MS), offsets)
            };
            assert_eq!(read(&answers[0]), (11, Some(5), vec![("t".into(), 0, 100), ("u".into(), 1, 300)]), "v{version}");
            assert_eq!(read(&answers[1]), (12, Some(5), vec![("t".into(), 1, 200)]), "v{version}");
        }
    }

    /// A produce response naming every entry of a request frame, with the
    /// entry's records length as its base offset (a value to check).
    fn answer_for(frame: &[u8], version: i16) -> Vec<u8> {
        let schema = response_schema(0).unwrap();
        let mut body = with_defaults(&schema.body, version);
        let topic_schema = members_of(&schema.body, response::RESPONSES);
        let entry_schema = members_of(topic_schema, resp_topic::PARTITION_RESPONSES);
        let mut topics: Vec<Struct<'_>> = Vec::new();
        for (name, p, records) in entries_of(frame) {
            let mut e = with_defaults(entry_schema, version);
            e.write(resp_entry::INDEX, p);
            e.write(resp_entry::BASE_OFFSET, records.len() as i64);
            match topics.iter_mut().find(|t| t.read(resp_topic::NAME) == Some(name.as_str())) {
                Some(t) => t.items_mut(resp_topic::PARTITION_RESPONSES).unwrap().push(Value::Struct(e)),
                None => {
                    let mut t = with_defaults(topic_schema, version);
                    t.write(resp_topic::NAME, name);
                    t.write(resp_topic::PARTITION_RESPONSES, vec![Value::Struct(e)]);
                    topics.push(t);
                }
            }
        }
        body.write(response::RESPONSES, topics);
        encode_response(0, version, 1, &[], &body).unwrap()
    }

    proptest::proptest! {
        /// Any run of produce parts: every entry goes upstream exactly once,
        /// no request names a partition twice, each partition's entries keep
        /// their order, a merged request only joins parts of equal acks, and
        /// its answer is cut back into exactly each part's own entries.
        #[test]
        fn merging_keeps_every_entry_once_in_partition_order(
            version in proptest::sample::select(vec![3i16, 7, 8, 9, 10, 11]),
            parts in proptest::collection::vec(
                (proptest::sample::select(vec![-1i16, 1]),
                 proptest::collection::btree_set((0usize..2, 0i32..4), 1..4)),
                1..14),
        ) {
            let topics = ["t", "u"];
            let mut held_parts = Vec::new();
            let mut acks_of = HashMap::new();
            let mut want: HashMap<(String, i32), Vec<Vec<u8>>> = HashMap::new();
            for (n, (acks, entries)) in parts.iter().enumerate() {
                // Records are told apart by their length: unique per entry.
                let records: Vec<(&str, i32, Vec<u8>)> = entries
                    .iter()
                    .enumerate()
                    .map(|(j, (t, p))| (topics[*t], *p, vec![b'r'; 1 + n * 8 + j]))
                    .collect();
                for (t, p, r) in &records {
                    want.entry((t.to_string(), *p)).or_default().push(r.clone());
                }
                let borrowed: Vec<(&str, i32, &[u8])> = records.iter().map(|(t, p, r)| (*t, *p, r.as_slice())).collect();
                held_parts.push(held(n as u64, produce(version, 1000 + n as i32, *acks, &borrowed)));
                acks_of.insert(n as u64, *acks);
            }
            let mut next = 0;
            let out = coalesce(held_parts, || { next += 1; next });
            let mut got: HashMap<(String, i32), Vec<Vec<u8>>> = HashMap::new();
            for o in &out {
                let (frame, members) = match o {
                    Outgoing::Single(h) => (&h.frame, None),
                    Outgoing::Merged { frame, members, .. } => (frame, Some(members)),
                };
                let entries = entries_of(frame);
                let mut names = std::collections::HashSet::new();
                for (t, p, r) in &entries {
                    proptest::prop_assert!(names.insert((t.clone(), *p)), "{}/{} twice in one request", t, p);
                    got.entry((t.clone(), *p)).or_default().push(r.clone());
                }
                if let Some(members) = members {
                    let (h, body) = RequestHeader::parse(frame).unwrap();
                    let acks = codec::decode(request_schema(0).unwrap(), h.api_version, body).unwrap().read(request::ACKS);
                    for m in members {
                        proptest::prop_assert_eq!(Some(acks_of[&m.seq]), acks);
                    }
                    let answers = split_response(&answer_for(frame, version), version, members).unwrap();
                    for (m, a) in members.iter().zip(answers) {
                        let answer = decode_response(0, version, &a).unwrap();
                        proptest::prop_assert_eq!(answer.correlation_id, m.correlation_id);
                        let b = answer.body;
                        let mut answered: Vec<(String, i32)> = b
                            .iter(response::RESPONSES)
                            .flat_map(|t| {
                                let name = t.read(resp_topic::NAME).unwrap().to_string();
                                t.iter(resp_topic::PARTITION_RESPONSES).map(move |e| (name.clone(), e.read(resp_entry::INDEX).unwrap())).collect::<Vec<_>>()
                            })
                            .collect();
                        let mut own = m.entries.clone();
                        answered.sort();
                        own.sort();
                        proptest::prop_assert_eq!(answered, own);
                    }
                }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }
}
