//! Which topics are remapped, and the arithmetic between the two partition
//! spaces. Virtual partition `v` of a topic with `P` physical partitions
//! lives on physical partition `p = v % P` with sibling index `k = v / P`;
//! growing V while P stays fixed keeps every existing virtual partition on
//! the same physical one.

use std::collections::{HashMap, HashSet};

use log::{error, info};
use parking_lot::{Mutex, RwLock};

use crate::cluster::ClusterView;
use crate::kafka::api::ErrorCode;
use crate::remap::rules::{MappingRules, Rule, RuleSource};

/// A partition number as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtualPartition(pub i32);

/// A partition number as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhysicalPartition(pub i32);

/// V virtual partitions over P physical ones, V a multiple of P, V > P.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMapping {
    pub virtual_count: i32,
    pub physical_count: i32,
}

impl TopicMapping {
    pub fn new(virtual_count: i32, physical_count: i32) -> TopicMapping {
        assert!(physical_count >= 1 && virtual_count > physical_count && virtual_count % physical_count == 0);
        TopicMapping { virtual_count, physical_count }
    }

    pub fn ratio(&self) -> i32 {
        self.virtual_count / self.physical_count
    }

    /// The physical partition and sibling index of `v`; `None` when `v` is
    /// not a partition of the topic.
    pub fn locate(&self, v: VirtualPartition) -> Option<(PhysicalPartition, i32)> {
        if v.0 < 0 || v.0 >= self.virtual_count {
            return None;
        }
        Some((PhysicalPartition(v.0 % self.physical_count), v.0 / self.physical_count))
    }

    pub fn virtual_of(&self, p: PhysicalPartition, k: i32) -> VirtualPartition {
        VirtualPartition(k * self.physical_count + p.0)
    }

    /// The troubleshooting message of the user's guide.
    pub fn out_of_range_message(&self, v: i32) -> String {
        format!("Virtual partition {v} out of range (max: {})", self.virtual_count - 1)
    }
}

/// What the proxy does with a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Untouched: no rule, a 1:1 rule, an internal topic, or a topic the
    /// default rule does not fit.
    PassThrough,
    Remap(TopicMapping),
    /// An exact or regex rule names the topic but the cluster holds a
    /// different physical count: the proxy refuses to guess.
    Mismatch { rule: String, expected: i32, actual: i32 },
    /// A rule would remap the topic but its `cleanup.policy` compacts:
    /// compaction keeps one record per key per physical partition, so
    /// siblings would erase each other's records. Refused, never passed
    /// through (that would show siblings' records as one partition's).
    Compacted { rule: String },
}

/// A topic's `cleanup.policy` as far as remapping cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// No `compact` in it (Kafka's default, `delete`).
    Delete,
    /// `compact`, or `compact,delete`.
    Compact,
    /// The cluster would not say (no DescribeConfigs permission, or the API
    /// is not offered): the topic is remapped, with a warning, since
    /// refusing would take every remapped topic offline on a permission
    /// change; the operator is told to grant it or check the topic.
    Unreadable(String),
}

impl CleanupPolicy {
    /// From the config value; `None` (not reported) is Kafka's default.
    pub fn from_value(value: Option<&str>) -> CleanupPolicy {
        match value {
            Some(v) if v.split(',').any(|p| p.trim().eq_ignore_ascii_case("compact")) => CleanupPolicy::Compact,
            _ => CleanupPolicy::Delete,
        }
    }
}

/// Why a compacted topic is not remapped, for logs, answers and
/// `--check-config`.
pub fn compacted_message(topic: &str, rule: &str) -> String {
    format!(
        "Topic {topic} is compacted (cleanup.policy contains compact) and falls under {rule}: compacted topics \
         cannot be remapped, because compaction is per physical partition and would erase one virtual \
         partition's records with a sibling's of the same key; the topic is not served until its \
         cleanup.policy or the rule changes"
    )
}

impl Decision {
    /// The error code for a partition of a topic the proxy refuses to
    /// serve; `None` when it serves it.
    pub fn refusal_code(&self) -> Option<i16> {
        match self {
            Decision::PassThrough | Decision::Remap(_) => None,
            Decision::Mismatch { .. } => Some(ErrorCode::INVALID_PARTITIONS.code()),
            Decision::Compacted { .. } => Some(ErrorCode::INVALID_CONFIG.code()),
        }
    }
}

pub struct Mapper {
    /// Replaced by a reload only with rules that give no topic the proxy
    /// knows another rule (see [`Mapper::replace_rules`]).
    rules: RwLock<MappingRules>,
    /// Every topic remapped since the proxy started, with its mapping: a
    /// topic once remapped stays remapped while the proxy runs, whatever a
    /// later metadata answer says (see `decide`).
    remapped: RwLock<HashMap<String, TopicMapping>>,
    /// The ids of those topics, so a fetch by id still finds the name when
    /// the cluster view has dropped the topic.
    remapped_ids: RwLock<HashMap<[u8; 16], String>>,
    /// The rule each topic name falls under (regexes are not re-run).
    rule_cache: RwLock<HashMap<String, Option<Rule>>>,
    /// Topics already logged as passed through by the default rule.
    logged_passthrough: Mutex<HashSet<String>>,
    /// The `cleanup.policy` of topics a rule would remap, with the topic
    /// id it was read for (a topic deleted and created again is asked
    /// again). Unknown topics are remapped: the proxy asks before it first
    /// serves one (`upstream::cleanup`).
    policies: RwLock<HashMap<String, ([u8; 16], CleanupPolicy)>>,
}

impl Mapper {
    pub fn new(rules: MappingRules) -> Mapper {
        Mapper {
            rules: RwLock::new(rules),
            remapped: RwLock::new(HashMap::new()),
            remapped_ids: RwLock::new(HashMap::new()),
            rule_cache: RwLock::new(HashMap::new()),
            logged_passthrough: Mutex::new(HashSet::new()),
            policies: RwLock::new(HashMap::new()),
        }
    }

    pub fn rules(&self) -> MappingRules {
        self.rules.read().clone()
    }

    /// Rules from a reloaded configuration. The caller has checked that
    /// every topic that had a rule keeps it (`reload::mapping_refusals`):
    /// only topics without one may gain one. Remembered mappings stay.
    pub fn replace_rules(&self, rules: MappingRules) {
        let mut current = self.rules.write();
        *current = rules;
        self.rule_cache.write().clear();
    }

    /// The topics whose rule was looked up so far.
    pub fn known_topics(&self) -> Vec<String> {
        self.rule_cache.read().keys().cloned().collect()
    }

    /// Whether any rule presents more virtual than physical partitions.
    pub fn remaps_anything(&self) -> bool {
        self.rules.read().has_virtual_partitions()
    }

    /// The largest ratio of any rule: sibling indexes run below it.
    pub fn max_ratio(&self) -> i32 {
        self.rules.read().rules().map(|r| r.ratio() as i32).max().unwrap_or(1)
    }

    pub fn rule_for(&self, topic: &str) -> Option<Rule> {
        if let Some(r) = self.rule_cache.read().get(topic) {
            return r.clone();
        }
        // The rules stay locked until the answer is cached, so that a
        // reload's `replace_rules` (rules, then cache) cannot be undone by
        // an answer from the rules it replaced.
        let rules = self.rules.read();
        let rule = rules.rule_for(topic).cloned();
        self.rule_cache.write().insert(topic.to_string(), rule.clone());
        rule
    }

    /// The decision for `topic` given what the cluster holds.
    ///
    /// A topic remapped once is never passed through again while the proxy
    /// runs: passed through, a k = 0 consumer would get every sibling's
    /// records of its physical partition. So when a later view lacks the
    /// topic (a refresh that failed for it, a broker that does not know it
    /// yet or any more) or lists no partitions for it, the remembered
    /// mapping still applies: requests go upstream remapped and the broker's
    /// own (retriable) errors come back per virtual partition. When the view
    /// shows another physical count (the topic was deleted and created
    /// again, or grown outside the proxy), the topic is a mismatch until the
    /// proxy restarts: its virtual partitions cannot be placed any more.
    pub fn decide(&self, topic: &str, view: &ClusterView) -> Decision {
        let info = view.topics.get(topic);
        if topic.starts_with("__") || info.is_some_and(|i| i.internal) {
            return Decision::PassThrough;
        }
        match self.decide_remembered(topic, info) {
            // A compacted topic (for the id the cluster shows now) is never
            // remapped: compaction is per physical partition.
            Decision::Remap(m) => match (info, self.policies.read().get(topic)) {
                (Some(info), Some((id, CleanupPolicy::Compact))) if *id == info.id => {
                    Decision::Compacted { rule: self.rule_for(topic).map(|r| r.to_string()).unwrap_or_default() }
                }
                _ => Decision::Remap(m),
            },
            other => other,
        }
    }

    /// `decide` before the cleanup policy is looked at.
    fn decide_remembered(&self, topic: &str, info: Option<&crate::cluster::TopicInfo>) -> Decision {
        let remembered = self.remapped.read().get(topic).copied();
        match (info, remembered) {
            // Unknown to the cluster and never remapped: the broker answers for it.
            (None, None) => Decision::PassThrough,
            (None, Some(m)) => Decision::Remap(m),
            (Some(info), Some(m)) => {
                let actual = info.partitions.len() as i32;
                if actual == 0 || actual == m.physical_count {
                    self.remember_id(topic, info.id);
                    Decision::Remap(m)
                } else {
                    let rule = self.rule_for(topic).map_or_else(|| "its rule".to_string(), |r| r.to_string());
                    Decision::Mismatch { rule, expected: m.physical_count, actual }
                }
            }
            (Some(info), None) => {
                let decision = self.decide_for_count(topic, info.partitions.len() as i32);
                if let Decision::Remap(m) = decision {
                    self.remapped.write().insert(topic.to_string(), m);
                    self.remember_id(topic, info.id);
                }
                decision
            }
        }
    }

    fn remember_id(&self, topic: &str, id: [u8; 16]) {
        if id == [0; 16] || self.remapped_ids.read().get(&id).is_some_and(|n| n == topic) {
            return;
        }
        self.remapped_ids.write().insert(id, topic.to_string());
    }

    /// The name of a remapped topic by id, when the cluster view no longer
    /// knows the id.
    pub fn remapped_name(&self, id: &[u8; 16]) -> Option<String> {
        self.remapped_ids.read().get(id).cloned()
    }

    /// Whether `topic` has been remapped since the proxy started.
    pub fn was_remapped(&self, topic: &str) -> bool {
        self.remapped.read().contains_key(topic)
    }

    /// Whether `topic` would be remapped but its cleanup policy is not
    /// known yet (for the topic id the cluster shows now).
    pub fn needs_policy(&self, topic: &str, view: &ClusterView) -> bool {
        let Some(info) = view.topics.get(topic) else { return false };
        if !matches!(self.decide(topic, view), Decision::Remap(_)) {
            return false;
        }
        self.policies.read().get(topic).map_or(true, |(id, _)| *id != info.id)
    }

    /// Remember what the cluster said about `topic`'s cleanup policy.
    pub fn set_policy(&self, topic: &str, id: [u8; 16], policy: CleanupPolicy) {
        self.policies.write().insert(topic.to_string(), (id, policy));
    }

    pub fn policy(&self, topic: &str) -> Option<CleanupPolicy> {
        self.policies.read().get(topic).map(|(_, p)| p.clone())
    }

    pub fn decide_for_count(&self, topic: &str, actual: i32) -> Decision {
        let Some(rule) = self.rule_for(topic) else { return Decision::PassThrough };
        if rule.is_passthrough() {
            return Decision::PassThrough;
        }
        let (v, p) = (rule.virtual_partitions as i32, rule.physical_partitions as i32);
        if actual == p {
            return Decision::Remap(TopicMapping::new(v, p));
        }
        match rule.source {
            RuleSource::Default => {
                if self.logged_passthrough.lock().insert(topic.to_string()) {
                    info!(
                        "Topic {topic} has {actual} partitions, not the default rule's {p}: passing it through 1:1"
                    );
                }
                Decision::PassThrough
            }
            _ => Decision::Mismatch { rule: rule.to_string(), expected: p, actual },
        }
    }

    /// Log every topic whose physical count contradicts its rule (at start
    /// and after each metadata refresh). Returns how many there are.
    pub fn report_mismatches(&self, view: &ClusterView) -> usize {
        let mut count = 0;
        let mut names: Vec<&String> = view.topics.keys().collect();
        names.sort();
        for name in names {
            if let Decision::Mismatch { rule, expected, actual } = self.decide(name, view) {
                if self.was_remapped(name) {
                    error!(
                        "Topic {name} was remapped on {expected} physical partitions and now has {actual} \
                         (deleted and created again, or grown outside the proxy): its virtual partitions \
                         cannot be placed, so it is refused until the proxy restarts"
                    );
                    count += 1;
                    continue;
                }
                error!(
                    "Topic {name} has {actual} physical partitions but {rule} expects {expected}: \
                     the topic is not served until the cluster or the rule is fixed"
                );
                count += 1;
            }
        }
        count
    }

    /// Log every compacted topic a rule would remap (at start and after
    /// each metadata refresh). Returns how many there are.
    pub fn report_compacted(&self, view: &ClusterView) -> usize {
        let mut names: Vec<&String> = view.topics.keys().collect();
        names.sort();
        let mut count = 0;
        for name in names {
            if let Decision::Compacted { rule } = self.decide(name, view) {
                error!("{}", compacted_message(name, &rule));
                count += 1;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_and_back() {
        let m = TopicMapping::new(100, 10);
        assert_eq!(m.locate(VirtualPartition(0)), Some((PhysicalPartition(0), 0)));
        assert_eq!(m.locate(VirtualPartition(50)), Some((PhysicalPartition(0), 5)));
        assert_eq!(m.locate(VirtualPartition(99)), Some((PhysicalPartition(9), 9)));
        assert_eq!(m.locate(VirtualPartition(100)), None);
        assert_eq!(m.locate(VirtualPartition(-1)), None);
        assert_eq!(m.virtual_of(PhysicalPartition(9), 9), VirtualPartition(99));
        assert_eq!(m.out_of_range_message(150), "Virtual partition 150 out of range (max: 99)");
    }

    fn mapper(default: Option<(u32, u32)>, topics: Vec<(&str, u32, u32)>) -> Mapper {
        let topics = topics.into_iter().map(|(n, v, p)| (n.to_string(), v, p)).collect();
        Mapper::new(MappingRules::new(default, topics).unwrap())
    }

    #[test]
    fn default_rule_applies_only_to_its_physical_count() {
        let m = mapper(Some((100, 10)), vec![]);
        assert_eq!(m.decide_for_count("a", 10), Decision::Remap(TopicMapping::new(100, 10)));
        assert_eq!(m.decide_for_count("b", 3), Decision::PassThrough);
    }

    #[test]
    fn named_rules_report_mismatches() {
        let m = mapper(Some((100, 10)), vec![("events", 500, 10), ("audit\\..*", 50, 5), ("config", 3, 3)]);
        assert_eq!(m.decide_for_count("events", 10), Decision::Remap(TopicMapping::new(500, 10)));
        assert!(matches!(m.decide_for_count("events", 12), Decision::Mismatch { expected: 10, actual: 12, .. }));
        assert_eq!(m.decide_for_count("audit.log", 5), Decision::Remap(TopicMapping::new(50, 5)));
        assert!(matches!(m.decide_for_count("audit.log", 4), Decision::Mismatch { .. }));
        assert_eq!(m.decide_for_count("config", 3), Decision::PassThrough);
        assert_eq!(m.max_ratio(), 50);
    }

    fn view_with(topic: &str, id: u8, partitions: usize) -> ClusterView {
        let mut view = ClusterView::default();
        let info = crate::cluster::TopicInfo { id: [id; 16], partitions: vec![Default::default(); partitions], ..Default::default() };
        view.topics.insert(topic.into(), info);
        view.topic_names.insert([id; 16], topic.into());
        view
    }

    #[test]
    fn a_remapped_topic_stays_remapped_when_the_view_loses_it() {
        let m = mapper(Some((100, 10)), vec![]);
        let remapped = Decision::Remap(TopicMapping::new(100, 10));
        assert_eq!(m.decide("never-seen", &ClusterView::default()), Decision::PassThrough);
        assert_eq!(m.decide("a", &view_with("a", 7, 10)), remapped);
        // Missing (UNKNOWN_TOPIC_OR_PARTITION removed it, or a failed refresh).
        assert_eq!(m.decide("a", &ClusterView::default()), remapped);
        assert_eq!(m.remapped_name(&[7; 16]).as_deref(), Some("a"));
        // Listed with no partitions while metadata propagates.
        assert_eq!(m.decide("a", &view_with("a", 7, 0)), remapped);
        // Created again with the same count: same mapping, the new id learnt.
        assert_eq!(m.decide("a", &view_with("a", 8, 10)), remapped);
        assert_eq!(m.remapped_name(&[8; 16]).as_deref(), Some("a"));
    }

    #[test]
    fn a_remapped_topic_with_another_count_is_a_mismatch_until_restart() {
        let m = mapper(Some((100, 10)), vec![]);
        assert!(matches!(m.decide("a", &view_with("a", 1, 10)), Decision::Remap(_)));
        // Under the default rule a fresh proxy would pass a 3-partition topic
        // through; this one knows the topic's virtual partitions.
        assert_eq!(
            m.decide("a", &view_with("a", 2, 3)),
            Decision::Mismatch { rule: "mapping".to_string(), expected: 10, actual: 3 }
        );
        assert_eq!(m.report_mismatches(&view_with("a", 2, 3)), 1);
        let fresh = mapper(Some((100, 10)), vec![]);
        assert_eq!(fresh.decide("a", &view_with("a", 2, 3)), Decision::PassThrough);
        assert_eq!(fresh.report_mismatches(&view_with("a", 2, 3)), 0);
    }

    #[test]
    fn internal_topics_are_never_remapped() {
        let m = mapper(Some((100, 10)), vec![(".*", 20, 10)]);
        let mut view = ClusterView::default();
        let info = crate::cluster::TopicInfo {
            internal: true,
            partitions: vec![Default::default(); 10],
            ..Default::default()
        };
        view.topics.insert("__consumer_offsets".into(), info.clone());
        assert_eq!(m.decide("__consumer_offsets", &view), Decision::PassThrough);
        view.topics.insert("__other".into(), crate::cluster::TopicInfo { internal: false, ..info });
        assert_eq!(m.decide("__other", &view), Decision::PassThrough);
    }

    #[test]
    fn compacted_topics_under_a_remapping_rule_are_refused() {
        let m = mapper(Some((100, 10)), vec![("events", 20, 2)]);
        let mut view = ClusterView::default();
        let info = |id: u8| crate::cluster::TopicInfo { id: [id; 16], partitions: vec![Default::default(); 2], ..Default::default() };
        view.topics.insert("events".into(), info(1));
        view.topics.insert("plain".into(), info(2));
        // Not known yet: remapped, and asked about.
        assert_eq!(m.decide("events", &view), Decision::Remap(TopicMapping::new(20, 2)));
        assert!(m.needs_policy("events", &view));
        assert!(!m.needs_policy("plain", &view), "the default rule does not remap 2 partitions");
        m.set_policy("events", [1; 16], CleanupPolicy::from_value(Some("delete,compact")));
        assert!(matches!(m.decide("events", &view), Decision::Compacted { .. }));
        assert_eq!(m.decide("events", &view).refusal_code(), Some(crate::kafka::api::error::INVALID_CONFIG));
        assert!(!m.needs_policy("events", &view));
        assert_eq!(m.report_compacted(&view), 1);
        // Deleted and created again (a new id): asked again, remapped meanwhile.
        view.topics.insert("events".into(), info(3));
        assert!(m.needs_policy("events", &view));
        assert_eq!(m.decide("events", &view), Decision::Remap(TopicMapping::new(20, 2)));
        m.set_policy("events", [3; 16], CleanupPolicy::Unreadable("TOPIC_AUTHORIZATION_FAILED".into()));
        assert_eq!(m.decide("events", &view), Decision::Remap(TopicMapping::new(20, 2)));
        assert_eq!(CleanupPolicy::from_value(None), CleanupPolicy::Delete);
        assert_eq!(CleanupPolicy::from_value(Some("delete")), CleanupPolicy::Delete);
        assert_eq!(CleanupPolicy::from_value(Some("Compact")), CleanupPolicy::Compact);
    }
}
