//! What a reloaded configuration changes, and which of the changes the
//! running proxy can take: a pure comparison of two validated configs.
//!
//! Applied live (to what starts after the reload):
//! `logging.level`, `logging.format`; `listen.security.tls` (certificate,
//! key, CA, client_auth: new client connections); `listen.security.sasl`
//! (users, mechanisms, OAUTHBEARER validation, session lifetime: new
//! logins); `kafka.tls` (new upstream connections); `metrics` (the
//! endpoint moves); `mapping` rules for topics that have none yet.
//!
//! Refused, each with a WARN naming the field (a restart applies them):
//! every other field ([`RESTART_ONLY`]), a changed or removed mapping
//! rule, a rule that would take a topic the proxy knows from its rule,
//! and the first remapping rule when the proxy started with none. The
//! mapping is taken whole or not at all: one refused rule keeps every
//! rule as it was. Everything not refused is applied ("partial").

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::config::{Config, MappingRules};

/// The fields a reload cannot change, and how each is shown.
type Field = (&'static str, fn(&Config) -> String);

fn shown(value: impl Debug) -> String {
    format!("{value:?}")
}

/// Fields read once at start: by the listener, the cluster connections
/// and the threads made then.
pub const RESTART_ONLY: &[Field] = &[
    ("listen.address", |c| shown(&c.listen.address)),
    ("listen.advertised_address", |c| shown(&c.listen.advertised_address)),
    ("listen.max_connections", |c| shown(c.listen.max_connections)),
    ("listen.max_connections_per_ip", |c| shown(c.listen.per_ip.default)),
    // Sorted, so that the same overrides always read the same.
    ("listen.max_connections_per_ip_overrides", |c| {
        shown(c.listen.per_ip.overrides.iter().collect::<std::collections::BTreeMap<_, _>>())
    }),
    ("listen.max_frame_bytes", |c| shown(c.listen.max_frame_bytes)),
    ("listen.queued_max_request_bytes", |c| shown(c.listen.queued_max_request_bytes)),
    ("listen.max_buffered_response_bytes", |c| shown(c.listen.max_buffered_response_bytes)),
    ("listen.connections_max_idle_ms", |c| shown(c.listen.connections_max_idle_ms)),
    ("listen.frame_timeout_ms", |c| shown(c.listen.frame_timeout_ms)),
    ("listen.handshake_timeout_ms", |c| shown(c.listen.handshake_timeout_ms)),
    ("listen.security.protocol", |c| c.listen.security.protocol.to_string()),
    ("kafka.bootstrap_servers", |c| shown(&c.kafka.bootstrap_servers)),
    ("kafka.connection_timeout_ms", |c| shown(c.kafka.connection_timeout_ms)),
    ("kafka.request_timeout_ms", |c| shown(c.kafka.request_timeout_ms)),
    ("kafka.metadata_refresh_interval_ms", |c| shown(c.kafka.metadata_refresh_interval_ms)),
    ("kafka.producer_id_topic", |c| shown(&c.kafka.producer_id_topic)),
    ("kafka.producer_id_idle_ms", |c| shown(c.kafka.producer_id_idle_ms)),
    ("kafka.client_rack", |c| shown(&c.kafka.client_rack)),
    ("kafka.derived_offset_refresh_interval_ms", |c| shown(c.kafka.derived_offset_refresh_interval_ms)),
    ("kafka.security_protocol", |c| c.kafka.security_protocol.to_string()),
];

/// `kafka.sasl`, password included (compared, never shown).
fn kafka_sasl(c: &Config) -> String {
    c.kafka.sasl.as_ref().map_or_else(String::new, |s| {
        format!("{:?} {:?} {:?} {:?} {}", s.mechanism, s.username, s.token_path, s.mode, s.password.expose())
    })
}

/// `listen.security.sasl`, passwords included (compared, never shown).
fn listen_sasl(c: &Config) -> String {
    c.listen.security.sasl.as_ref().map_or_else(String::new, |s| {
        let users: Vec<(&str, &str)> = s.users.iter().map(|u| (u.name.as_str(), u.password.expose())).collect();
        format!("{:?} {users:?} {:?} {}", s.enabled_mechanisms, s.oauthbearer, s.session_lifetime_ms)
    })
}

/// The TLS fields of `c`, each as shown in the summary; a side whose
/// protocol differs in `other` is left out (refused with its protocol).
fn tls_fields(c: &Config, other: &Config) -> Vec<(&'static str, String)> {
    fn path(p: Option<&std::path::PathBuf>) -> String {
        p.map_or_else(|| "none".to_string(), |p| p.display().to_string())
    }
    let mut out = Vec::new();
    if c.listen.security.protocol == other.listen.security.protocol {
        let t = c.listen.security.tls.as_ref();
        out.extend([
            ("listen.security.tls.cert_path", path(t.map(|t| &t.cert_path))),
            ("listen.security.tls.key_path", path(t.map(|t| &t.key_path))),
            ("listen.security.tls.ca_cert_path", path(t.and_then(|t| t.ca_cert_path.as_ref()))),
            ("listen.security.tls.client_auth", shown(t.is_some_and(|t| t.client_auth))),
        ]);
    }
    if c.kafka.security_protocol == other.kafka.security_protocol {
        let t = c.kafka.tls.as_ref();
        out.extend([
            ("kafka.tls.ca_cert_path", path(t.and_then(|t| t.ca_cert_path.as_ref()))),
            ("kafka.tls.cert_path", path(t.and_then(|t| t.cert_path.as_ref()))),
            ("kafka.tls.key_path", path(t.and_then(|t| t.key_path.as_ref()))),
            ("kafka.tls.insecure_skip_verify", shown(t.is_some_and(|t| t.insecure_skip_verify))),
        ]);
    }
    out
}

fn user_names(c: &Config) -> String {
    let names: Vec<&str> = c.listen.security.sasl.iter().flat_map(|s| s.users.iter().map(|u| u.name.as_str())).collect();
    format!("users {}", if names.is_empty() { "none".to_string() } else { names.join(", ") })
}

/// What a reload does.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes taken, for the summary line: `logging.level (info -> debug)`.
    pub applied: Vec<String>,
    /// Changes refused, one WARN line each, naming the field.
    pub refused: Vec<String>,
    /// The new mapping rules are taken.
    pub mapping: bool,
}

/// Compare the running configuration with the reloaded one; `known` are
/// the topics the proxy has seen (their rule must not change).
pub fn plan(old: &Config, new: &Config, known: &[String]) -> Plan {
    let mut plan = Plan::default();
    for (name, value) in RESTART_ONLY {
        let (was, is) = (value(old), value(new));
        if was != is {
            plan.refused.push(format!("{name} cannot change while the proxy runs ({was} -> {is}); it keeps {was} until a restart"));
        }
    }
    if kafka_sasl(old) != kafka_sasl(new) {
        plan.refused.push("kafka.sasl cannot change while the proxy runs (its connections to the cluster are logged in); the old settings stay until a restart".into());
    }
    let applied = |plan: &mut Plan, name: &str, was: String, is: String| {
        if was != is {
            plan.applied.push(format!("{name} ({was} -> {is})"));
        }
    };
    applied(&mut plan, "logging.level", old.logging.level.to_string().to_lowercase(), new.logging.level.to_string().to_lowercase());
    applied(&mut plan, "logging.format", old.logging.format.as_str().into(), new.logging.format.as_str().into());
    for ((name, was), (_, is)) in tls_fields(old, new).into_iter().zip(tls_fields(new, old)) {
        applied(&mut plan, name, was, is);
    }
    if old.listen.security.protocol == new.listen.security.protocol && listen_sasl(old) != listen_sasl(new) {
        plan.applied.push(format!("listen.security.sasl ({} -> {})", user_names(old), user_names(new)));
    }
    applied(&mut plan, "metrics", shown(&old.metrics), shown(&new.metrics));
    let refused = mapping_refusals(&old.mapping, &new.mapping, known);
    if refused.is_empty() {
        let (was, is) = (old.mapping.describe_mapping(), new.mapping.describe_mapping());
        if was != is {
            plan.mapping = true;
            let added: Vec<String> = new.mapping.rules().filter(|r| !old.mapping.rules().any(|o| o == *r)).map(|r| r.to_string()).collect();
            plan.applied.push(format!("mapping (new rules: {})", added.join(", ")));
        }
    } else {
        plan.refused.extend(refused.into_iter().map(|r| format!("{r}; the mapping stays as it was until a restart")));
    }
    plan
}

/// The running config with what `plan` takes from `new`: the config the
/// proxy runs with after the reload (and compares the next one with).
pub fn merge(old: &Config, new: &Config, plan: &Plan) -> Config {
    let mut merged = old.clone();
    merged.logging = new.logging;
    // TLS and SASL settings go with their protocol: when it is refused,
    // they stay too (a PLAINTEXT file has no certificate to take).
    if old.listen.security.protocol == new.listen.security.protocol {
        merged.listen.security.tls = new.listen.security.tls.clone();
        merged.listen.security.sasl = new.listen.security.sasl.clone();
    }
    if old.kafka.security_protocol == new.kafka.security_protocol {
        merged.kafka.tls = new.kafka.tls.clone();
    }
    merged.metrics = new.metrics.clone();
    if plan.mapping {
        merged.mapping = new.mapping.clone();
    }
    merged
}

/// Why the new rules cannot replace the old ones; empty: they can.
pub fn mapping_refusals(old: &MappingRules, new: &MappingRules, known: &[String]) -> Vec<String> {
    let by_name = |rules: &MappingRules| -> BTreeMap<String, (u32, u32)> {
        rules.rules().map(|r| (r.to_string(), (r.virtual_partitions, r.physical_partitions))).collect()
    };
    let (was, is) = (by_name(old), by_name(new));
    let mut out = Vec::new();
    for (name, (v, p)) in &was {
        match is.get(name) {
            None => out.push(format!("{name} cannot be removed while the proxy runs (its topics are served with it)")),
            Some((nv, np)) => {
                if nv != v {
                    out.push(format!("{name}.virtual_partitions cannot change while the proxy runs ({v} -> {nv}): clients place records by it"));
                }
                if np != p {
                    out.push(format!("{name}.physical_partitions cannot change while the proxy runs ({p} -> {np})"));
                }
            }
        }
    }
    if !old.has_virtual_partitions() && new.has_virtual_partitions() {
        out.push("mapping: the first rule with more virtual than physical partitions needs a restart (the proxy sets up derived producer ids at start)".into());
    }
    if !out.is_empty() {
        return out;
    }
    let mut taken: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for topic in known {
        let before = old.rule_for(topic);
        if before.is_some() && before != new.rule_for(topic) {
            let to = new.rule_for(topic).map_or_else(|| "no rule".to_string(), |r| r.to_string());
            taken.entry(to).or_default().push(topic);
        }
    }
    for (rule, topics) in taken {
        out.push(format!("{rule} would take topic(s) {} from their rule while the proxy runs", topics.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{mapping, ok, with};

    fn topics(yaml: &str) -> Config {
        ok(&mapping(&format!("  topics:\n{yaml}")))
    }

    #[test]
    fn nothing_changed_plans_nothing() {
        let c = ok(&with("logging:\n  level: info\n"));
        assert_eq!(plan(&c, &c.clone(), &[]), Plan::default());
    }

    #[test]
    fn log_level_and_format_apply() {
        let old = ok(&with("logging:\n  level: info\n"));
        let new = ok(&with("logging:\n  level: debug\n  format: json\n"));
        let p = plan(&old, &new, &[]);
        assert_eq!(p.applied, vec!["logging.level (info -> debug)", "logging.format (text -> json)"]);
        assert!(p.refused.is_empty());
        assert_eq!(merge(&old, &new, &p).logging.level, log::LevelFilter::Debug);
    }

    #[test]
    fn listen_address_is_refused_and_kept() {
        let old = ok(&with(""));
        let new = ok(&with("").replace("127.0.0.1:9092", "127.0.0.1:9093"));
        let p = plan(&old, &new, &[]);
        assert_eq!(p.refused.len(), 2, "{:?}", p.refused);
        assert!(p.refused[0].starts_with("listen.address cannot change while the proxy runs (\"127.0.0.1:9092\" -> \"127.0.0.1:9093\")"), "{:?}", p.refused);
        assert!(p.refused[1].starts_with("listen.advertised_address"), "{:?}", p.refused);
        assert_eq!(merge(&old, &new, &p).listen.address, "127.0.0.1:9092");
    }

    #[test]
    fn every_restart_only_field_is_named() {
        let old = ok(&with(""));
        let new = ok("
listen:
  address: \"127.0.0.1:9093\"
  advertised_address: \"proxy:9093\"
  max_connections: 5
  max_connections_per_ip: 4
  max_connections_per_ip_overrides:
    \"10.0.0.1\": 9
  max_frame_bytes: 2048
  queued_max_request_bytes: 1048576
  max_buffered_response_bytes: 1048576
  connections_max_idle_ms: 60000
  frame_timeout_ms: 5000
  handshake_timeout_ms: 5000
kafka:
  bootstrap_servers: [\"other:1\"]
  connection_timeout_ms: 1
  request_timeout_ms: 2
  metadata_refresh_interval_ms: 3
  producer_id_topic: __ids
  producer_id_idle_ms: 4000
  client_rack: r1
  derived_offset_refresh_interval_ms: 5
");
        let refused = plan(&old, &new, &[]).refused;
        for (name, _) in RESTART_ONLY.iter().filter(|(n, _)| !n.ends_with("protocol")) {
            assert!(refused.iter().any(|r| r.starts_with(&format!("{name} "))), "{name} not refused: {refused:?}");
        }
    }

    /// A field added to `listen` or `kafka` must be sorted here (restart
    /// only, or applied live), or a reload would ignore it silently.
    #[test]
    fn every_listen_and_kafka_field_is_classified() {
        let live = ["listen.security", "listen.advertised_source", "kafka.tls", "kafka.sasl"];
        let c = ok(&with(""));
        for (section, debug) in [("listen", format!("{:#?}", c.listen)), ("kafka", format!("{:#?}", c.kafka))] {
            let top_level = |l: &&str| l.starts_with("    ") && l.chars().nth(4).is_some_and(|c| c.is_ascii_alphabetic());
            for line in debug.lines().filter(top_level) {
                let field = format!("{section}.{}", line.trim().split(':').next().unwrap());
                // One struct holds the two per-address settings.
                let names = match field.as_str() {
                    "listen.per_ip" => {
                        vec!["listen.max_connections_per_ip".to_string(), "listen.max_connections_per_ip_overrides".to_string()]
                    }
                    _ => vec![field],
                };
                for field in names {
                    assert!(
                        RESTART_ONLY.iter().any(|(name, _)| *name == field) || live.contains(&field.as_str()),
                        "{field} is neither restart-only nor applied by a reload"
                    );
                }
            }
        }
    }

    #[test]
    fn a_changed_v_is_refused_and_the_mapping_kept() {
        let old = topics("    events: {virtual_partitions: 4, physical_partitions: 2}\n");
        let new = topics("    events: {virtual_partitions: 8, physical_partitions: 2}\n    fresh: {virtual_partitions: 6, physical_partitions: 2}\n");
        let p = plan(&old, &new, &["events".into()]);
        assert!(!p.mapping);
        assert_eq!(p.refused.len(), 1, "{:?}", p.refused);
        assert!(p.refused[0].starts_with("mapping.topics.events.virtual_partitions cannot change while the proxy runs (4 -> 8)"), "{:?}", p.refused);
        assert_eq!(merge(&old, &new, &p).mapping.rule_for("fresh"), None, "the mapping is taken whole or not at all");
    }

    #[test]
    fn a_rule_for_a_topic_without_one_applies() {
        let old = topics("    events: {virtual_partitions: 4, physical_partitions: 2}\n");
        let new = topics("    events: {virtual_partitions: 4, physical_partitions: 2}\n    fresh: {virtual_partitions: 6, physical_partitions: 2}\n");
        let p = plan(&old, &new, &["events".into(), "fresh".into()]);
        assert!(p.mapping && p.refused.is_empty(), "{p:?}");
        assert_eq!(p.applied, vec!["mapping (new rules: mapping.topics.fresh)"]);
        assert_eq!(merge(&old, &new, &p).mapping.rule_for("fresh").map(|r| r.virtual_partitions), Some(6));
    }

    #[test]
    fn a_new_rule_may_not_take_a_known_topic_from_its_rule() {
        let old = topics("    \"ev.*\": {virtual_partitions: 4, physical_partitions: 2}\n");
        let new = topics("    events: {virtual_partitions: 6, physical_partitions: 2}\n    \"ev.*\": {virtual_partitions: 4, physical_partitions: 2}\n");
        let p = plan(&old, &new, &["events".into(), "evening".into()]);
        assert_eq!(p.refused.len(), 1, "{:?}", p.refused);
        assert!(p.refused[0].starts_with("mapping.topics.events would take topic(s) events from their rule"), "{:?}", p.refused);
        // A topic the proxy has not seen yet may gain it.
        assert!(plan(&old, &new, &["evening".into()]).mapping);
    }

    #[test]
    fn removing_a_rule_or_adding_the_first_remapping_is_refused() {
        let none = ok(&with(""));
        let one = topics("    events: {virtual_partitions: 4, physical_partitions: 2}\n");
        let refused = plan(&one, &none, &[]).refused;
        assert!(refused[0].starts_with("mapping.topics.events cannot be removed"), "{refused:?}");
        let refused = plan(&none, &one, &[]).refused;
        assert!(refused[0].starts_with("mapping: the first rule with more virtual than physical partitions needs a restart"), "{refused:?}");
    }

    #[test]
    fn sasl_users_apply_and_passwords_are_compared_not_shown() {
        let sasl = |users: &str| {
            ok(&format!(
                "listen:\n  address: \"127.0.0.1:9092\"\n  security:\n    protocol: SASL_PLAINTEXT\n    sasl:\n      \
                 enabled_mechanisms: [PLAIN]\n      credentials:\n        users:\n{users}kafka:\n  bootstrap_servers: [\"k:1\"]\n"
            ))
        };
        let old = sasl("          alice: pw-1\n");
        let new = sasl("          alice: pw-2\n          carol: pw-3\n");
        let p = plan(&old, &new, &[]);
        assert_eq!(p.applied, vec!["listen.security.sasl (users alice -> users alice, carol)"]);
        let rotated = plan(&old, &sasl("          alice: pw-9\n"), &[]);
        assert_eq!(rotated.applied, vec!["listen.security.sasl (users alice -> users alice)"], "a new password is a change");
        assert!(!format!("{p:?}{rotated:?}").contains("pw-"), "no password in the plan");
    }

    #[test]
    fn a_new_certificate_names_the_paths_that_changed() {
        let tls = |cert: &str| {
            ok(&format!("listen:\n  address: \"127.0.0.1:9092\"\n  security:\n    protocol: SSL\n    tls:\n      cert_path: {cert}\n      \
                         key_path: /k.pem\nkafka:\n  bootstrap_servers: [\"k:1\"]\n"))
        };
        let p = plan(&tls("/old.pem"), &tls("/new.pem"), &[]);
        assert_eq!(p.applied, vec!["listen.security.tls.cert_path (/old.pem -> /new.pem)"]);
        assert!(p.refused.is_empty());
    }

    #[test]
    fn a_refused_protocol_keeps_its_tls_and_sasl() {
        let tls = ok("listen:\n  address: \"127.0.0.1:9092\"\n  security:\n    protocol: SSL\n    tls:\n      cert_path: /c.pem\n      key_path: /k.pem\nkafka:\n  bootstrap_servers: [\"k:1\"]\n");
        let plain = ok(&with(""));
        let p = plan(&tls, &plain, &[]);
        assert!(p.refused[0].starts_with("listen.security.protocol cannot change while the proxy runs (SSL -> PLAINTEXT)"), "{:?}", p.refused);
        assert!(p.applied.is_empty(), "{:?}", p.applied);
        assert!(merge(&tls, &plain, &p).listen.security.tls.is_some(), "the certificate stays with its protocol");
    }
}
