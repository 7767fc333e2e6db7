//! Metadata as clients must see it: a remapped topic lists V partitions,
//! virtual partition `v` carrying the leader, epoch, replicas, ISR and
//! offline replicas of its physical partition. A topic whose physical count
//! contradicts its rule (INVALID_PARTITIONS), or a compacted one a rule
//! would remap (INVALID_CONFIG), is reported with an error instead.

use crate::cluster::ClusterView;
use crate::kafka::api::ErrorCode;
use crate::kafka::codec::{Struct, Value};
use crate::kafka::fields::metadata_response::topics::{self as topic_f, partitions as partition_f};
use crate::kafka::fields::metadata_response as response;

use super::mapping::{Decision, Mapper, PhysicalPartition};

/// Rewrite the topics of a Metadata response body; returns whether
/// anything changed. `view` must already include this response.
pub fn virtualize(body: &mut Struct<'_>, mapper: &Mapper, view: &ClusterView) -> bool {
    let mut changed = false;
    for topic in body.iter_mut(response::TOPICS) {
        let Some(name) = topic.read(topic_f::NAME).map(str::to_string) else { continue };
        if topic.read(topic_f::ERROR_CODE) != Some(ErrorCode::NONE.code()) {
            continue;
        }
        match mapper.decide(&name, view) {
            Decision::PassThrough => {}
            Decision::Remap(m) => {
                let physical: Vec<Struct<'_>> = topic.iter(topic_f::PARTITIONS).cloned().collect();
                let by_index = |p: PhysicalPartition| physical.iter().find(|s| s.read(partition_f::PARTITION_INDEX) == Some(p.0));
                if (0..m.physical_count).any(|p| by_index(PhysicalPartition(p)).is_none()) {
                    // A remapped topic this answer lists without (all) its
                    // physical partitions: what Kafka answers while a topic's
                    // metadata propagates. A client retries; shown with fewer
                    // partitions, a consumer group would rebalance them away.
                    topic.write(topic_f::ERROR_CODE, ErrorCode::LEADER_NOT_AVAILABLE);
                    topic.write(topic_f::PARTITIONS, Vec::<Value>::new());
                    changed = true;
                    continue;
                }
                let mut partitions = Vec::with_capacity(m.virtual_count as usize);
                for v in 0..m.virtual_count {
                    let (p, _) = m.locate(super::mapping::VirtualPartition(v)).expect("in range");
                    if let Some(src) = by_index(p) {
                        let mut s = src.clone();
                        s.write(partition_f::PARTITION_INDEX, v);
                        partitions.push(s);
                    }
                }
                topic.write(topic_f::PARTITIONS, partitions);
                changed = true;
            }
            refused @ (Decision::Mismatch { .. } | Decision::Compacted { .. }) => {
                topic.write(topic_f::ERROR_CODE, refused.refusal_code().unwrap_or(ErrorCode::INVALID_PARTITIONS.code()));
                topic.write(topic_f::PARTITIONS, Vec::<Value>::new());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterView, TopicInfo};
    use crate::kafka::codec;
    use crate::kafka::fields::members;
    use crate::remap::rules::MappingRules;
    use crate::kafka::message::response_schema;

    const VERSION: i16 = 12;

    fn response(topic: &str, physical: i32) -> Struct<'static> {
        let schema = response_schema(3).unwrap();
        let mut body = codec::with_defaults(&schema.body, VERSION);
        let ts = members(&schema.body, response::TOPICS);
        let ps = members(ts, topic_f::PARTITIONS);
        let mut t = codec::with_defaults(ts, VERSION);
        t.write(topic_f::NAME, topic.to_string());
        let partitions = (0..physical)
            .map(|i| {
                let mut p = codec::with_defaults(ps, VERSION);
                p.write(partition_f::PARTITION_INDEX, i);
                p
            })
            .collect::<Vec<_>>();
        t.write(topic_f::PARTITIONS, partitions);
        body.write(response::TOPICS, vec![t]);
        body
    }

    fn view(topic: &str, physical: usize) -> ClusterView {
        let mut view = ClusterView::default();
        view.topics.insert(topic.into(), TopicInfo { partitions: vec![Default::default(); physical], ..Default::default() });
        view
    }

    fn shown(body: &Struct<'_>) -> (i16, usize) {
        let t = body.iter(response::TOPICS).next().unwrap();
        (t.read(topic_f::ERROR_CODE).unwrap(), t.items(topic_f::PARTITIONS).len())
    }

    #[test]
    fn a_remapped_topic_listed_without_its_partitions_is_leader_not_available() {
        let mapper = Mapper::new(MappingRules::new(Some((4, 2)), vec![]).unwrap());
        let mut body = response("t", 2);
        assert!(virtualize(&mut body, &mapper, &view("t", 2)));
        assert_eq!(shown(&body), (ErrorCode::NONE.code(), 4));
        // The same topic, listed while its metadata propagates: no partitions.
        let mut body = response("t", 0);
        assert!(virtualize(&mut body, &mapper, &view("t", 0)));
        assert_eq!(shown(&body), (ErrorCode::LEADER_NOT_AVAILABLE.code(), 0));
        // A topic never remapped, listed so: as the broker said.
        let mut body = response("u", 0);
        assert!(!virtualize(&mut body, &mapper, &view("u", 0)));
        assert_eq!(shown(&body), (ErrorCode::NONE.code(), 0));
    }
}

/// Mark `topic` internal (`is_internal`, Metadata v1+) in a Metadata
/// response body, as Kafka marks `__consumer_offsets`: clients leave
/// internal topics out of pattern subscriptions (the Java client's
/// `exclude.internal.topics`, librdkafka's alike). Returns whether it
/// changed anything.
pub fn mark_internal(body: &mut Struct<'_>, topic: &str) -> bool {
    let mut changed = false;
    for t in body.iter_mut(response::TOPICS) {
        if t.read(topic_f::NAME) == Some(topic) && t.has(topic_f::IS_INTERNAL) && t.read(topic_f::IS_INTERNAL) != Some(true) {
            t.write(topic_f::IS_INTERNAL, true);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod internal_tests {
    use super::*;
    use crate::kafka::codec;
    use crate::kafka::message::response_schema;

    #[test]
    fn the_proxys_own_topic_is_marked_internal_in_every_version_that_can_say_so() {
        let schema = response_schema(3).unwrap();
        for version in 1..=12 {
            let ts = crate::kafka::fields::members(&schema.body, response::TOPICS);
            let mut body = codec::with_defaults(&schema.body, version);
            let topics = ["orders", "__kpr_producer_ids"]
                .iter()
                .map(|n| {
                    let mut t = codec::with_defaults(ts, version);
                    t.write(topic_f::NAME, *n);
                    t
                })
                .collect::<Vec<_>>();
            body.write(response::TOPICS, topics);
            assert!(mark_internal(&mut body, "__kpr_producer_ids"), "v{version}");
            let internal: Vec<bool> =
                body.iter(response::TOPICS).map(|t| t.read(topic_f::IS_INTERNAL) == Some(true)).collect();
            assert_eq!(internal, vec![false, true], "v{version}");
            assert!(!mark_internal(&mut body, "__kpr_producer_ids"), "v{version}: already internal");
        }
    }
}
