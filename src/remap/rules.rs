//! Mapping rules (see `docs` and the design's §2): which topics are
//! remapped, and how many virtual partitions they show on how many physical
//! ones. `config` builds them from the `mapping` section; `remap::mapping`
//! asks them at run time.
//!
//! A rule says "present V virtual partitions on P physical ones". A topic's
//! rule is, in order of precedence: the `mapping.topics` entry naming it
//! exactly, else the first `mapping.topics` regex (in file order) matching
//! the whole name, else the default rule (`mapping.virtual_partitions` /
//! `mapping.physical_partitions`), else none (pass-through).
//!
//! Rules name themselves by their place in the configuration file
//! (`mapping.topics.events`), so validation messages read the same whether
//! the rules come from YAML or from [`MappingRules::new`].

use std::fmt;

use regex::Regex;

/// Kafka's limit on the length of a topic name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// The largest partition count a rule may name (Kafka partition ids are `i32`).
pub const MAX_PARTITIONS: u32 = i32::MAX as u32;

/// "Present `virtual_partitions` partitions to clients on `physical_partitions`
/// partitions of the cluster."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub virtual_partitions: u32,
    pub physical_partitions: u32,
    pub source: RuleSource,
}

/// Where a rule was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// `mapping.virtual_partitions` / `mapping.physical_partitions`.
    Default,
    /// A `mapping.topics` key naming one topic.
    Exact(String),
    /// A `mapping.topics` key that is a regex, as written (unanchored).
    Regex(String),
}

impl Rule {
    /// Virtual partitions per physical partition (V / P).
    pub fn ratio(&self) -> u32 {
        self.virtual_partitions / self.physical_partitions
    }

    /// V == P: the topic is passed through untouched.
    pub fn is_passthrough(&self) -> bool {
        self.virtual_partitions == self.physical_partitions
    }

    /// `Mapping: 100 virtual -> 10 physical partitions (10:1)`, plus
    /// ` for topic events` or ` for topics matching audit\..*`.
    pub fn describe(&self) -> String {
        let scope = match &self.source {
            RuleSource::Default => String::new(),
            RuleSource::Exact(t) => format!(" for topic {t}"),
            RuleSource::Regex(r) => format!(" for topics matching {r}"),
        };
        format!(
            "Mapping: {} virtual -> {} physical partitions ({}:1){scope}",
            self.virtual_partitions,
            self.physical_partitions,
            self.ratio()
        )
    }

    /// The rule as a person reads it in a message: "the default rule", or
    /// its path in the file.
    pub fn name(&self) -> String {
        match self.source {
            RuleSource::Default => "the default rule (mapping.virtual_partitions/physical_partitions)".to_string(),
            _ => self.to_string(),
        }
    }
}

/// The rule's place in the configuration: `mapping`, `mapping.topics.events`,
/// `mapping.topics."audit\..*"`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            RuleSource::Default => f.write_str("mapping"),
            RuleSource::Exact(k) | RuleSource::Regex(k) => {
                write!(f, "mapping.topics.{}", key_segment(k))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct TopicRule {
    rule: Rule,
    /// `Some` for regex rules: the key anchored as `^(?:key)$`.
    regex: Option<Regex>,
}

/// All mapping rules. The empty set (no `mapping` section) passes every topic through.
#[derive(Debug, Clone, Default)]
pub struct MappingRules {
    default: Option<Rule>,
    topics: Vec<TopicRule>,
}

impl MappingRules {
    /// Builds and validates rules without YAML (for tests and tools).
    /// `topics` are `(key, V, P)` in precedence order for regexes; a key made
    /// only of `[a-zA-Z0-9._-]` is an exact topic name, anything else a regex.
    /// Errors are the same messages `load` gives.
    pub fn new(
        default: Option<(u32, u32)>,
        topics: Vec<(String, u32, u32)>,
    ) -> Result<MappingRules, Vec<String>> {
        let mut errors = Vec::new();
        let mut rules = MappingRules::default();
        if let Some((v, p)) = default {
            let rule = Rule {
                virtual_partitions: v,
                physical_partitions: p,
                source: RuleSource::Default,
            };
            match check_rule(&rule) {
                Ok(()) => rules.default = Some(rule),
                Err(e) => errors.push(e),
            }
        }
        for (key, v, p) in topics {
            match topic_rule(key, v, p) {
                Ok(t) => rules.topics.push(t),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }

    /// The rule for `topic`: the exact entry, else the first matching regex in
    /// file order, else the default rule. `None`: no rule applies (pass-through).
    pub fn rule_for(&self, topic: &str) -> Option<&Rule> {
        let exact = self.topics.iter().find(|t| match &t.rule.source {
            RuleSource::Exact(name) => name == topic,
            _ => false,
        });
        exact
            .or_else(|| {
                self.topics
                    .iter()
                    .find(|t| t.regex.as_ref().is_some_and(|r| r.is_match(topic)))
            })
            .map(|t| &t.rule)
            .or(self.default.as_ref())
    }

    /// The default rule, if `mapping.virtual_partitions` / `physical_partitions` are set.
    pub fn default_rule(&self) -> Option<&Rule> {
        self.default.as_ref()
    }

    /// Every rule: the default first, then `mapping.topics` in file order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.default
            .iter()
            .chain(self.topics.iter().map(|t| &t.rule))
    }

    /// No rules at all: every topic passes through.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.topics.is_empty()
    }

    /// Some rule presents more virtual than physical partitions (V > P).
    pub fn has_virtual_partitions(&self) -> bool {
        self.rules().any(|r| !r.is_passthrough())
    }

    /// One line per rule ([`Rule::describe`]), default first; a single line
    /// saying so when there are no rules.
    pub fn describe_mapping(&self) -> Vec<String> {
        if self.is_empty() {
            return vec!["Mapping: none configured, every topic passes through 1:1".to_string()];
        }
        self.rules().map(Rule::describe).collect()
    }
}

/// A `mapping.topics` key made only of legal Kafka topic characters is an
/// exact topic name; anything else is a regex.
pub fn is_exact_topic_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn topic_rule(key: String, v: u32, p: u32) -> Result<TopicRule, String> {
    if key.is_empty() {
        return Err("mapping.topics: a key is empty: give a topic name or a regex".to_string());
    }
    let exact = is_exact_topic_key(&key);
    let source = if exact {
        RuleSource::Exact(key.clone())
    } else {
        RuleSource::Regex(key.clone())
    };
    let rule = Rule {
        virtual_partitions: v,
        physical_partitions: p,
        source,
    };
    if exact && key.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "{rule}: a topic name is at most {MAX_TOPIC_NAME_LEN} characters (this one has {})",
            key.len()
        ));
    }
    let regex = if exact {
        None
    } else {
        match Regex::new(&format!("^(?:{key})$")) {
            Ok(r) => Some(r),
            Err(e) => return Err(format!("{rule}: invalid regular expression: {e}")),
        }
    };
    check_rule(&rule)?;
    Ok(TopicRule { rule, regex })
}

fn check_rule(rule: &Rule) -> Result<(), String> {
    let (v, p) = (rule.virtual_partitions, rule.physical_partitions);
    if p < 1 {
        Err(format!(
            "{rule}: physical_partitions ({p}) must be at least 1"
        ))
    } else if v < p {
        Err(format!(
            "{rule}: virtual_partitions ({v}) must be at least physical_partitions ({p})"
        ))
    } else if v % p != 0 {
        Err(format!(
            "{rule}: virtual_partitions ({v}) must be a multiple of physical_partitions ({p})"
        ))
    } else if v > MAX_PARTITIONS {
        Err(format!(
            "{rule}: virtual_partitions ({v}) must be at most {MAX_PARTITIONS}"
        ))
    } else {
        Ok(())
    }
}

/// The path segment of a mapping key: bare when made of `[A-Za-z0-9_-]`,
/// quoted otherwise. It lives here rather than in `config` because a rule
/// names itself by its path, and the rules must not depend on the loader.
pub fn key_segment(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        format!("\"{}\"", key.replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{errors, mapping, ok};

    #[test]
    fn default_rule() {
        let c = ok(&mapping(
            "  virtual_partitions: 100\n  physical_partitions: 10\n",
        ));
        let r = c.mapping.rule_for("my-topic").unwrap();
        assert_eq!(
            (r.virtual_partitions, r.physical_partitions, r.ratio()),
            (100, 10, 10)
        );
        assert_eq!(r.source, RuleSource::Default);
        assert!(!r.is_passthrough());
        assert_eq!(r.to_string(), "mapping");
        assert!(c.mapping.has_virtual_partitions());
        assert_eq!(
            c.describe_mapping(),
            vec!["Mapping: 100 virtual -> 10 physical partitions (10:1)"]
        );
    }

    #[test]
    fn invalid_regex_error_includes_regex_error() {
        let e = errors(&mapping(
            "  topics:\n    \"audit(\": { virtual_partitions: 10, physical_partitions: 5 }\n",
        ));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("mapping.topics.\"audit(\": invalid regular expression: "),
            "{e:?}"
        );
        assert!(e[0].contains("unclosed group"), "{e:?}");
    }

    const PRECEDENCE: &str = "
  virtual_partitions: 100
  physical_partitions: 10
  topics:
    \"audit\\\\..*\": { virtual_partitions: 50, physical_partitions: 5 }
    \"audit\\\\.special.*\": { virtual_partitions: 40, physical_partitions: 4 }
    audit.special: { virtual_partitions: 3, physical_partitions: 3 }
    \".*-raw\": { virtual_partitions: 20, physical_partitions: 2 }
    events: { virtual_partitions: 500, physical_partitions: 10 }
";

    #[test]
    fn precedence_exact_then_regex_in_file_order_then_default() {
        let c = ok(&mapping(PRECEDENCE));
        let v = |topic: &str| c.mapping.rule_for(topic).map(|r| r.virtual_partitions);
        // Exact beats regexes written before it.
        assert_eq!(v("audit.special"), Some(3));
        assert_eq!(
            c.mapping.rule_for("audit.special").unwrap().source,
            RuleSource::Exact("audit.special".into())
        );
        // The first matching regex in file order wins, not the most specific.
        assert_eq!(v("audit.specialist"), Some(50));
        assert_eq!(v("audit.x-raw"), Some(50));
        assert_eq!(v("events-raw"), Some(20));
        assert_eq!(v("events"), Some(500));
        assert_eq!(v("orders"), Some(100));
    }

    #[test]
    fn regexes_match_the_whole_topic_name() {
        let c = ok(&mapping(
            "  topics:\n    \"audit\\\\..*\": { virtual_partitions: 50, physical_partitions: 5 }\n",
        ));
        assert!(c.mapping.rule_for("audit.x").is_some());
        assert!(c.mapping.rule_for("xaudit.x").is_none());
        assert!(c.mapping.rule_for("audit").is_none());
        assert!(
            c.mapping.rule_for("auditx").is_none(),
            "the escaped dot is a literal dot"
        );
        // An alternation is anchored as a whole, not just its first branch.
        let c = ok(&mapping(
            "  topics:\n    \"a|b\": { virtual_partitions: 2, physical_partitions: 1 }\n",
        ));
        assert!(c.mapping.rule_for("b").is_some());
        assert!(c.mapping.rule_for("ab").is_none());
        assert!(c.mapping.rule_for("bx").is_none());
    }

    #[test]
    fn exact_keys_are_not_regexes() {
        // "audit.x" is made of topic characters: the dot is literal.
        let c = ok(&mapping(
            "  topics:\n    audit.x: { virtual_partitions: 2, physical_partitions: 1 }\n",
        ));
        assert!(c.mapping.rule_for("audit.x").is_some());
        assert!(c.mapping.rule_for("auditXx").is_none());
        assert!(is_exact_topic_key("Orders_v2-eu.1"));
        assert!(!is_exact_topic_key("orders.*"));
        assert!(!is_exact_topic_key(""));
        // A numeric key is a topic name too.
        let c = ok(&mapping(
            "  topics:\n    123: { virtual_partitions: 2, physical_partitions: 1 }\n",
        ));
        assert_eq!(
            c.mapping.rule_for("123").unwrap().source,
            RuleSource::Exact("123".into())
        );
    }

    #[test]
    fn rules_and_descriptions_in_file_order() {
        let c = ok(&mapping(PRECEDENCE));
        let shown: Vec<String> = c.mapping.rules().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "mapping",
                "mapping.topics.\"audit\\..*\"",
                "mapping.topics.\"audit\\.special.*\"",
                "mapping.topics.\"audit.special\"",
                "mapping.topics.\".*-raw\"",
                "mapping.topics.events",
            ]
        );
        assert_eq!(
            c.describe_mapping(),
            [
                "Mapping: 100 virtual -> 10 physical partitions (10:1)",
                "Mapping: 50 virtual -> 5 physical partitions (10:1) for topics matching audit\\..*",
                "Mapping: 40 virtual -> 4 physical partitions (10:1) for topics matching audit\\.special.*",
                "Mapping: 3 virtual -> 3 physical partitions (1:1) for topic audit.special",
                "Mapping: 20 virtual -> 2 physical partitions (10:1) for topics matching .*-raw",
                "Mapping: 500 virtual -> 10 physical partitions (50:1) for topic events",
            ]
        );
    }

    #[test]
    fn has_virtual_partitions_only_when_some_rule_remaps() {
        let c = ok(&mapping(
            "  topics:\n    a: { virtual_partitions: 3, physical_partitions: 3 }\n",
        ));
        assert!(!c.mapping.has_virtual_partitions());
        assert!(c.mapping.rule_for("a").unwrap().is_passthrough());
        assert_eq!(c.mapping.rule_for("b"), None);
        let c = ok(&mapping(
            "  topics:\n    a: { virtual_partitions: 3, physical_partitions: 3 }\n    b: { virtual_partitions: 6, physical_partitions: 3 }\n",
        ));
        assert!(c.mapping.has_virtual_partitions());
    }

    #[test]
    fn mapping_rules_new_validates_like_load() {
        let rules = MappingRules::new(Some((20, 10)), vec![("t".into(), 4, 2)]).unwrap();
        assert_eq!(rules.rule_for("t").unwrap().ratio(), 2);
        assert_eq!(rules.default_rule().unwrap().ratio(), 2);
        let e = MappingRules::new(Some((15, 10)), vec![("bad[".into(), 4, 2)]).unwrap_err();
        assert_eq!(
            e[0],
            "mapping: virtual_partitions (15) must be a multiple of physical_partitions (10)"
        );
        assert!(
            e[1].starts_with("mapping.topics.\"bad[\": invalid regular expression"),
            "{e:?}"
        );
    }
}
