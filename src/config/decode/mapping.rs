//! The `mapping` section: the numbers and keys of each rule. The rules
//! themselves (precedence, regexes, their consistency) are
//! `remap::rules`; this file reads the YAML and hands them over.

use serde_yaml::Value;

use super::{get, kind, Decoder};
use crate::config::errors::{child, key_text};
use crate::config::model::OFFSET_RANGE_WARNING;
use crate::remap::rules::{MappingRules, MAX_PARTITIONS};

const MAPPING_KEYS: &[&str] = &[
    "virtual_partitions",
    "physical_partitions",
    "offset_range",
    "topics",
];
const RULE_KEYS: &[&str] = &["virtual_partitions", "physical_partitions"];

impl Decoder {
    pub(super) fn mapping(&mut self, v: &Value) -> Option<MappingRules> {
        let path = "mapping";
        let m = self.section(v, path, MAPPING_KEYS)?;
        let max = u64::from(MAX_PARTITIONS);
        let v_part = get(m, "virtual_partitions")
            .map(|v| self.uint(v, "mapping.virtual_partitions", 0, max));
        let p_part = get(m, "physical_partitions")
            .map(|v| self.uint(v, "mapping.physical_partitions", 0, max));
        let mut ok = true;
        let default = match (v_part, p_part) {
            (None, None) => None,
            (Some(Some(v)), Some(Some(p))) => Some((v as u32, p as u32)),
            (Some(_), None) | (None, Some(_)) => {
                let missing = if v_part.is_none() {
                    "virtual_partitions"
                } else {
                    "physical_partitions"
                };
                self.err(format!(
                    "mapping: virtual_partitions and physical_partitions go together: {missing} is missing"
                ));
                ok = false;
                None
            }
            _ => {
                ok = false; // already reported
                None
            }
        };
        if get(m, "offset_range").is_some() {
            self.warnings.push(OFFSET_RANGE_WARNING.to_string());
        }
        let mut topics = Vec::new();
        if let Some(t) = get(m, "topics") {
            let tp = "mapping.topics";
            match t {
                Value::Mapping(entries) => {
                    for (k, v) in entries {
                        let Some(key) = key_text(k) else {
                            self.err(format!(
                                "{tp}: keys must be topic names or regexes, got {}",
                                kind(k)
                            ));
                            ok = false;
                            continue;
                        };
                        let rp = child(tp, &key);
                        let Some(r) = self.section(v, &rp, RULE_KEYS) else {
                            ok = false;
                            continue;
                        };
                        let vp = self.required(r, &rp, "virtual_partitions").and_then(|v| {
                            self.uint(v, &format!("{rp}.virtual_partitions"), 0, max)
                        });
                        let pp = self.required(r, &rp, "physical_partitions").and_then(|v| {
                            self.uint(v, &format!("{rp}.physical_partitions"), 0, max)
                        });
                        match (vp, pp) {
                            (Some(vp), Some(pp)) => topics.push((key, vp as u32, pp as u32)),
                            _ => ok = false,
                        }
                    }
                }
                other => {
                    self.err(format!(
                        "{tp}: expected a mapping of topic name or regex to {{virtual_partitions, physical_partitions}}, got {}",
                        kind(other)
                    ));
                    ok = false;
                }
            }
        }
        match MappingRules::new(default, topics) {
            Ok(rules) if ok => Some(rules),
            Ok(_) => None,
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{assert_error, mapping, parse};
    use crate::config::OFFSET_RANGE_WARNING;

    #[test]
    fn default_rule_needs_both_numbers() {
        assert_error(
            &mapping("  virtual_partitions: 100\n"),
            "mapping: virtual_partitions and physical_partitions go together: physical_partitions is missing",
        );
        assert_error(
            &mapping("  physical_partitions: 10\n"),
            "mapping: virtual_partitions and physical_partitions go together: virtual_partitions is missing",
        );
    }

    #[test]
    fn rule_validation_messages() {
        assert_error(
            &mapping("  virtual_partitions: 10\n  physical_partitions: 0\n"),
            "mapping: physical_partitions (0) must be at least 1",
        );
        assert_error(
            &mapping("  virtual_partitions: 5\n  physical_partitions: 10\n"),
            "mapping: virtual_partitions (5) must be at least physical_partitions (10)",
        );
        assert_error(
            &mapping("  topics:\n    \"audit\\\\..*\": { virtual_partitions: 52, physical_partitions: 5 }\n"),
            "mapping.topics.\"audit\\..*\": virtual_partitions (52) must be a multiple of physical_partitions (5)",
        );
        assert_error(
            &mapping("  topics:\n    events: { virtual_partitions: 5, physical_partitions: 10 }\n"),
            "mapping.topics.events: virtual_partitions (5) must be at least physical_partitions (10)",
        );
        assert_error(
            &mapping("  topics:\n    events: { virtual_partitions: 5 }\n"),
            "missing required key \"physical_partitions\" at mapping.topics.events",
        );
        assert_error(
            &mapping("  virtual_partitions: 4294967296\n  physical_partitions: 1\n"),
            "mapping.virtual_partitions: must be at most 2147483647 (got 4294967296)",
        );
    }

    #[test]
    fn offset_range_is_accepted_with_a_warning() {
        let loaded = parse(&mapping(
            "  virtual_partitions: 100\n  physical_partitions: 10\n  offset_range: 1099511627776\n",
        ))
        .unwrap();
        assert_eq!(loaded.warnings, vec![OFFSET_RANGE_WARNING]);
        assert!(parse(&mapping(
            "  virtual_partitions: 100\n  physical_partitions: 10\n"
        ))
        .unwrap()
        .warnings
        .is_empty());
    }
}
