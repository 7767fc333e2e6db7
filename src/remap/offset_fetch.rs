//! OffsetFetch answers merged: a client group's committed offsets are read
//! from the group itself (k = 0, and every topic that is not remapped) and
//! from its derived groups (k ≥ 1), then given back under the client's
//! virtual partition numbers, per group, in the client's order.

use std::collections::BTreeMap;

use crate::kafka::api::error;
use crate::remap::mapping::{Decision, PhysicalPartition};

/// Topics and partitions an OffsetFetch asks about; `None` is "all".
pub type TopicPartitions = Option<Vec<(String, Vec<i32>)>>;

/// One partition's committed offset, as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub error_code: i16,
}

impl Committed {
    /// What Kafka answers for a partition with no committed offset.
    pub fn none() -> Committed {
        Committed { offset: -1, leader_epoch: -1, metadata: Some(String::new()), error_code: error::NONE }
    }
}

/// One group's answer in any OffsetFetch version: its error, and per topic
/// the committed offset of each partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupOffsets {
    pub error_code: i16,
    pub topics: Vec<(String, Vec<(i32, Committed)>)>,
}

/// One upstream query of a merged OffsetFetch: the client group it stands
/// for (index into the client's groups) and the sibling index k it reads
/// (0: the group itself, else derived group k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub group: usize,
    pub k: i32,
}

/// The client's answer, one `GroupOffsets` per group `asked`, from the
/// `answers` of `queries` (the first group of each answer, `None` when it
/// named none). `decide` says how a topic is mapped; `refusal` gives the
/// error of a virtual partition asked for that the proxy refuses (out of
/// range, mismatched or compacted topic). A group's error is its own
/// query's, else a derived group's. Partitions asked for that hold nothing
/// answer offset -1; a group asked for all its topics gets every topic any
/// of its queries answered, partitions in order.
pub fn merge(
    asked: &[(String, TopicPartitions)],
    queries: &[Query],
    answers: Vec<Option<GroupOffsets>>,
    decide: &dyn Fn(&str) -> Decision,
    refusal: &dyn Fn(&str, i32) -> Option<i16>,
) -> Vec<GroupOffsets> {
    let mut per_group: Vec<GroupOffsets> = asked.iter().map(|_| GroupOffsets::default()).collect();
    let mut found: Vec<BTreeMap<(String, i32), Committed>> = asked.iter().map(|_| BTreeMap::new()).collect();
    let mut all_topics: Vec<Vec<String>> = asked.iter().map(|_| Vec::new()).collect();
    for (&Query { group: gi, k }, answer) in queries.iter().zip(answers) {
        let Some(g) = answer else { continue };
        if g.error_code != error::NONE && (per_group[gi].error_code == error::NONE || k == 0) {
            per_group[gi].error_code = g.error_code;
        }
        for (topic, parts) in g.topics {
            let decision = decide(&topic);
            if !all_topics[gi].contains(&topic) {
                all_topics[gi].push(topic.clone());
            }
            for (p, c) in parts {
                let v = match (&decision, k) {
                    (Decision::Remap(m), k) => m.virtual_of(PhysicalPartition(p), k).0,
                    (_, 0) => p,
                    // A derived group holds only remapped topics.
                    _ => continue,
                };
                found[gi].insert((topic.clone(), v), c);
            }
        }
    }
    for (gi, (_, topics)) in asked.iter().enumerate() {
        per_group[gi].topics = match topics {
            Some(ts) => ts
                .iter()
                .map(|(name, ps)| {
                    let entries = ps
                        .iter()
                        .map(|&v| {
                            let c = match refusal(name, v) {
                                Some(code) => Committed { error_code: code, ..Committed::none() },
                                None => found[gi].get(&(name.clone(), v)).cloned().unwrap_or_else(Committed::none),
                            };
                            (v, c)
                        })
                        .collect();
                    (name.clone(), entries)
                })
                .collect(),
            None => all_topics[gi]
                .iter()
                .map(|name| {
                    let mut entries: Vec<(i32, Committed)> =
                        found[gi].iter().filter(|((t, _), _)| t == name).map(|((_, v), c)| (*v, c.clone())).collect();
                    entries.sort_by_key(|(v, _)| *v);
                    (name.clone(), entries)
                })
                .collect(),
        };
    }
    per_group
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remap::mapping::TopicMapping;

    fn at(offset: i64) -> Committed {
        Committed { offset, leader_epoch: 3, metadata: Some("m".into()), error_code: error::NONE }
    }

    fn held(error_code: i16, topics: &[(&str, &[(i32, i64)])]) -> Option<GroupOffsets> {
        let topics = topics.iter().map(|(t, ps)| (t.to_string(), ps.iter().map(|&(p, o)| (p, at(o))).collect())).collect();
        Some(GroupOffsets { error_code, topics })
    }

    /// "r" is remapped 4 virtual on 2 physical; "plain" passes through.
    fn decide(topic: &str) -> Decision {
        if topic == "r" {
            Decision::Remap(TopicMapping::new(4, 2))
        } else {
            Decision::PassThrough
        }
    }

    fn no_refusal(_: &str, _: i32) -> Option<i16> {
        None
    }

    fn offsets(g: &GroupOffsets) -> Vec<(String, i32, i64, i16)> {
        g.topics.iter().flat_map(|(t, ps)| ps.iter().map(move |(v, c)| (t.clone(), *v, c.offset, c.error_code))).collect()
    }

    #[test]
    fn named_partitions_come_from_the_group_and_its_derived_groups() {
        let asked = vec![("g".to_string(), Some(vec![("r".to_string(), vec![3, 0, 1]), ("plain".to_string(), vec![5])]))];
        let queries = [Query { group: 0, k: 0 }, Query { group: 0, k: 1 }];
        let answers = vec![held(0, &[("r", &[(0, 10)]), ("plain", &[(5, 50)])]), held(0, &[("r", &[(1, 31)])])];
        let merged = merge(&asked, &queries, answers, &decide, &no_refusal);
        assert_eq!(
            offsets(&merged[0]),
            vec![
                ("r".into(), 3, 31, 0),
                ("r".into(), 0, 10, 0),
                // Asked, but committed nowhere.
                ("r".into(), 1, -1, 0),
                ("plain".into(), 5, 50, 0),
            ]
        );
        assert_eq!(merged[0].topics[0].1[2].1, Committed::none());
    }

    #[test]
    fn all_topics_are_gathered_in_virtual_order_and_derived_groups_hold_only_remapped_topics() {
        let asked = vec![("g".to_string(), None)];
        let queries = [Query { group: 0, k: 0 }, Query { group: 0, k: 1 }];
        let answers = vec![
            held(0, &[("r", &[(1, 11), (0, 10)]), ("plain", &[(0, 7)])]),
            held(0, &[("r", &[(0, 20)]), ("plain", &[(0, 99)])]),
        ];
        let merged = merge(&asked, &queries, answers, &decide, &no_refusal);
        assert_eq!(
            offsets(&merged[0]),
            vec![("r".into(), 0, 10, 0), ("r".into(), 1, 11, 0), ("r".into(), 2, 20, 0), ("plain".into(), 0, 7, 0)]
        );
    }

    #[test]
    fn the_groups_own_error_wins_and_refused_partitions_carry_theirs() {
        const COORDINATOR_LOADING: i16 = 14;
        const NOT_COORDINATOR: i16 = 16;
        let asked = vec![
            ("a".to_string(), Some(vec![("r".to_string(), vec![0, 9])])),
            ("b".to_string(), Some(vec![("r".to_string(), vec![2])])),
        ];
        let queries = [Query { group: 0, k: 1 }, Query { group: 0, k: 0 }, Query { group: 1, k: 1 }, Query { group: 1, k: 0 }];
        let answers = vec![held(COORDINATOR_LOADING, &[]), held(NOT_COORDINATOR, &[]), held(COORDINATOR_LOADING, &[]), None];
        let refusal = |_: &str, v: i32| (v >= 4).then_some(error::UNKNOWN_TOPIC_OR_PARTITION);
        let merged = merge(&asked, &queries, answers, &decide, &refusal);
        assert_eq!(merged[0].error_code, NOT_COORDINATOR);
        assert_eq!(offsets(&merged[0]), vec![("r".into(), 0, -1, 0), ("r".into(), 9, -1, error::UNKNOWN_TOPIC_OR_PARTITION)]);
        // A derived group's error shows while the group's own has none.
        assert_eq!(merged[1].error_code, COORDINATOR_LOADING);
    }
}
