//! Metadata as clients must see it: a remapped topic lists V partitions,
//! virtual partition `v` carrying the leader, epoch, replicas, ISR and
//! offline replicas of its physical partition. A topic whose physical count
//! contradicts its rule (INVALID_PARTITIONS), or a compacted one a rule
//! would remap (INVALID_CONFIG), is reported with an error instead.

use crate::cluster::ClusterView;
use crate::kafka::api::error;
use crate::kafka::codec::{Struct, Value};

use super::mapping::{Decision, Mapper, PhysicalPartition};

/// Rewrite the topics of a Metadata response body; returns whether
/// anything changed. `view` must already include this response.
pub fn virtualize(body: &mut Struct<'_>, mapper: &Mapper, view: &ClusterView) -> bool {
    let mut changed = false;
    for topic in body.structs_mut("topics") {
        let Some(name) = topic.str("name").map(str::to_string) else { continue };
        if topic.i16("error_code") != Some(error::NONE) {
            continue;
        }
        match mapper.decide(&name, view) {
            Decision::PassThrough => {}
            Decision::Remap(m) => {
                let physical: Vec<Struct<'_>> = topic.structs("partitions").cloned().collect();
                let by_index = |p: PhysicalPartition| physical.iter().find(|s| s.i32("partition_index") == Some(p.0));
                if (0..m.physical_count).any(|p| by_index(PhysicalPartition(p)).is_none()) {
                    // A remapped topic this answer lists without (all) its
                    // physical partitions: what Kafka answers while a topic's
                    // metadata propagates. A client retries; shown with fewer
                    // partitions, a consumer group would rebalance them away.
                    topic.set("error_code", Value::Int16(error::LEADER_NOT_AVAILABLE));
                    topic.set("partitions", Value::Array(Some(Vec::new())));
                    changed = true;
                    continue;
                }
                let mut partitions = Vec::with_capacity(m.virtual_count as usize);
                for v in 0..m.virtual_count {
                    let (p, _) = m.locate(super::mapping::VirtualPartition(v)).expect("in range");
                    if let Some(src) = by_index(p) {
                        let mut s = src.clone();
                        s.set("partition_index", Value::Int32(v));
                        partitions.push(Value::Struct(s));
                    }
                }
                topic.set("partitions", Value::Array(Some(partitions)));
                changed = true;
            }
            refused @ (Decision::Mismatch { .. } | Decision::Compacted { .. }) => {
                topic.set("error_code", Value::Int16(refused.refusal_code().unwrap_or(error::INVALID_PARTITIONS)));
                topic.set("partitions", Value::Array(Some(Vec::new())));
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
    use crate::remap::rules::MappingRules;
    use crate::kafka::codec::{self, Value};
    use crate::kafka::message::response_schema;

    const VERSION: i16 = 12;

    fn response(topic: &str, physical: i32) -> Struct<'static> {
        let schema = response_schema(3).unwrap();
        let mut body = codec::with_defaults(&schema.body, VERSION);
        let ts = codec::element_schema(&schema.body, "topics");
        let ps = codec::element_schema(ts, "partitions");
        let mut t = codec::with_defaults(ts, VERSION);
        t.set("name", Value::str(topic));
        let partitions = (0..physical)
            .map(|i| {
                let mut p = codec::with_defaults(ps, VERSION);
                p.set("partition_index", Value::Int32(i));
                Value::Struct(p)
            })
            .collect();
        t.set("partitions", Value::Array(Some(partitions)));
        body.set("topics", Value::Array(Some(vec![Value::Struct(t)])));
        body
    }

    fn view(topic: &str, physical: usize) -> ClusterView {
        let mut view = ClusterView::default();
        view.topics.insert(topic.into(), TopicInfo { partitions: vec![Default::default(); physical], ..Default::default() });
        view
    }

    fn shown(body: &Struct<'_>) -> (i16, usize) {
        let t = body.structs("topics").next().unwrap();
        (t.i16("error_code").unwrap(), t.array("partitions").len())
    }

    #[test]
    fn a_remapped_topic_listed_without_its_partitions_is_leader_not_available() {
        let mapper = Mapper::new(MappingRules::new(Some((4, 2)), vec![]).unwrap());
        let mut body = response("t", 2);
        assert!(virtualize(&mut body, &mapper, &view("t", 2)));
        assert_eq!(shown(&body), (error::NONE, 4));
        // The same topic, listed while its metadata propagates: no partitions.
        let mut body = response("t", 0);
        assert!(virtualize(&mut body, &mapper, &view("t", 0)));
        assert_eq!(shown(&body), (error::LEADER_NOT_AVAILABLE, 0));
        // A topic never remapped, listed so: as the broker said.
        let mut body = response("u", 0);
        assert!(!virtualize(&mut body, &mapper, &view("u", 0)));
        assert_eq!(shown(&body), (error::NONE, 0));
    }
}

/// Mark `topic` internal (`is_internal`, Metadata v1+) in a Metadata
/// response body, as Kafka marks `__consumer_offsets`: clients leave
/// internal topics out of pattern subscriptions (the Java client's
/// `exclude.internal.topics`, librdkafka's alike). Returns whether it
/// changed anything.
pub fn mark_internal(body: &mut Struct<'_>, topic: &str) -> bool {
    let mut changed = false;
    for t in body.structs_mut("topics") {
        if t.str("name") == Some(topic) && t.has_field("is_internal") && !matches!(t.get("is_internal"), Value::Bool(true)) {
            t.set("is_internal", Value::Bool(true));
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
            let ts = codec::element_schema(&schema.body, "topics");
            let mut body = codec::with_defaults(&schema.body, version);
            let topics = ["orders", "__kpr_producer_ids"]
                .iter()
                .map(|n| {
                    let mut t = codec::with_defaults(ts, version);
                    t.set("name", Value::str(*n));
                    Value::Struct(t)
                })
                .collect();
            body.set("topics", Value::Array(Some(topics)));
            assert!(mark_internal(&mut body, "__kpr_producer_ids"), "v{version}");
            let internal: Vec<bool> =
                body.structs("topics").map(|t| matches!(t.get("is_internal"), Value::Bool(true))).collect();
            assert_eq!(internal, vec![false, true], "v{version}");
            assert!(!mark_internal(&mut body, "__kpr_producer_ids"), "v{version}: already internal");
        }
    }
}
