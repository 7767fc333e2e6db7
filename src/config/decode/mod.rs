//! The hand-written decoder: from an expanded YAML tree to a [`Config`], one
//! section per file (`listen`, `kafka`, `mapping`; `metrics` and `logging`
//! are small enough to live here with the typed getters they share).
//!
//! Every getter reports its own problem, naming the field's full path, and
//! returns `None`, so decoding goes on and one run reports every problem.
//! A getter stays silent for a path whose `${VAR}` expansion failed: that
//! error is already reported.

mod kafka;
mod listen;
mod passthrough;
mod mapping;

use std::collections::HashSet;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use super::addresses::split_host_port;
use super::env::Expansion;
use super::errors::{child, where_};
use super::model::{
    Config, LogFormat, LoggingConfig, MetricsConfig, SecurityProtocol, DEFAULT_METRICS_ADDRESS,
};
use crate::remap::rules::MappingRules;

/// What a YAML value is, as a message names it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Present and not null.
fn get<'v>(m: &'v Mapping, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

const ROOT_KEYS: &[&str] = &["listen", "kafka", "mapping", "metrics", "logging"];
const METRICS_KEYS: &[&str] = &["enabled", "address"];
const LOGGING_KEYS: &[&str] = &["level", "format"];

/// Decodes one expanded tree, collecting every problem and warning on the way.
pub(super) struct Decoder {
    pub(super) errors: Vec<String>,
    pub(super) warnings: Vec<String>,
    /// Paths of strings produced by `${VAR}` substitution: numbers and
    /// booleans may come from the environment.
    expanded: HashSet<String>,
    /// Paths whose expansion failed (already reported; not reported again as a type error).
    failed: HashSet<String>,
    /// `kafka.sasl.mode` is passthrough: the brokers check clients'
    /// passwords, so `listen` needs no `credentials` (read before `listen`).
    passthrough: bool,
}

impl Decoder {
    /// A decoder for a tree expanded with the result `expansion`; its
    /// errors come first, as they were found first.
    pub(super) fn new(expansion: Expansion) -> Decoder {
        Decoder {
            errors: expansion.errors,
            warnings: Vec::new(),
            expanded: expansion.substituted,
            failed: expansion.failed,
            passthrough: false,
        }
    }

    fn err(&mut self, msg: String) {
        self.errors.push(msg);
    }

    /// `v` as a mapping whose keys are all in `keys`; reports unknown keys.
    fn section<'v>(&mut self, v: &'v Value, path: &str, keys: &[&str]) -> Option<&'v Mapping> {
        let Value::Mapping(m) = v else {
            self.err(format!(
                "{}: expected a mapping of keys ({}), got {}",
                where_(path),
                keys.join(", "),
                kind(v)
            ));
            return None;
        };
        for k in m.keys() {
            match k.as_str() {
                Some(k) if keys.contains(&k) => {}
                Some(k) => self.err(format!(
                    "unknown key \"{k}\" at {} (expected one of: {})",
                    where_(path),
                    keys.join(", ")
                )),
                None => self.err(format!(
                    "{}: keys must be strings, got {} (expected one of: {})",
                    where_(path),
                    kind(k),
                    keys.join(", ")
                )),
            }
        }
        Some(m)
    }

    /// An optional sub-section: `None` when absent or null.
    fn opt_section<'v>(
        &mut self,
        m: &'v Mapping,
        path: &str,
        key: &str,
        keys: &[&str],
    ) -> Option<&'v Mapping> {
        let v = get(m, key)?;
        self.section(v, &child(path, key), keys)
    }

    fn required<'v>(&mut self, m: &'v Mapping, path: &str, key: &str) -> Option<&'v Value> {
        let v = get(m, key);
        if v.is_none() {
            self.err(format!(
                "missing required key \"{key}\" at {}",
                where_(path)
            ));
        }
        v
    }

    /// A string value. Like every typed getter, stays silent for a path whose
    /// `${VAR}` expansion failed: that error is already reported.
    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        if self.failed.contains(path) {
            return None;
        }
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(format!(
                    "{path}: expected a string, got {} (quote it)",
                    kind(other)
                ));
                None
            }
        }
    }

    fn non_empty(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        if s.is_empty() {
            self.err(format!("{path}: must not be empty"));
            return None;
        }
        Some(s)
    }

    fn path_buf(&mut self, v: &Value, path: &str) -> Option<PathBuf> {
        self.non_empty(v, path).map(PathBuf::from)
    }

    fn opt_path(&mut self, m: &Mapping, path: &str, key: &str) -> Option<PathBuf> {
        let v = get(m, key)?;
        self.path_buf(v, &child(path, key))
    }

    fn uint(&mut self, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
        if self.failed.contains(path) {
            return None;
        }
        let n = match v {
            Value::Number(n) => {
                if let Some(n) = n.as_u64() {
                    n
                } else if n.as_i64().is_some() {
                    self.err(format!("{path}: must be at least {min} (got {n})"));
                    return None;
                } else {
                    self.err(format!("{path}: expected a whole number, got {n}"));
                    return None;
                }
            }
            Value::String(s) if self.expanded.contains(path) => match s.trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    self.err(format!(
                        "{path}: expected a whole number, got {s:?} from the environment"
                    ));
                    return None;
                }
            },
            other => {
                self.err(format!(
                    "{path}: expected a whole number, got {}",
                    kind(other)
                ));
                return None;
            }
        };
        if n < min {
            self.err(format!("{path}: must be at least {min} (got {n})"));
            None
        } else if n > max {
            self.err(format!("{path}: must be at most {max} (got {n})"));
            None
        } else {
            Some(n)
        }
    }

    fn opt_uint(
        &mut self,
        m: &Mapping,
        path: &str,
        key: &str,
        min: u64,
        max: u64,
        default: u64,
    ) -> u64 {
        match get(m, key) {
            Some(v) => self.uint(v, &child(path, key), min, max).unwrap_or(default),
            None => default,
        }
    }

    fn opt_bool(&mut self, m: &Mapping, path: &str, key: &str) -> bool {
        let Some(v) = get(m, key) else { return false };
        let path = child(path, key);
        if self.failed.contains(&path) {
            return false;
        }
        match v {
            Value::Bool(b) => *b,
            Value::String(s)
                if self.expanded.contains(&path) && matches!(s.trim(), "true" | "false") =>
            {
                s.trim() == "true"
            }
            other => {
                self.err(format!(
                    "{path}: expected true or false, got {}",
                    kind(other)
                ));
                false
            }
        }
    }

    fn choice<T: Copy>(&mut self, v: &Value, path: &str, table: &[(&str, T)]) -> Option<T> {
        let s = self.string(v, path)?;
        match table.iter().find(|(name, _)| *name == s) {
            Some((_, value)) => Some(*value),
            None => {
                let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                self.err(format!(
                    "{path}: unknown value {s:?} (expected one of: {})",
                    names.join(", ")
                ));
                None
            }
        }
    }

    fn host_port(&mut self, v: &Value, path: &str) -> Option<String> {
        let s = self.string(v, path)?;
        match split_host_port(&s) {
            Ok(_) => Some(s),
            Err(e) => {
                self.err(format!("{path}: {s:?} is not host:port: {e}"));
                None
            }
        }
    }

    pub(super) fn config(&mut self, root: &Value) -> Option<Config> {
        if root.is_null() {
            self.err("the configuration is empty: listen and kafka are required".to_string());
            return None;
        }
        let m = self.section(root, "", ROOT_KEYS)?;
        self.passthrough = passthrough::asked(m);
        let listen = match self.required(m, "", "listen") {
            Some(v) => self.listen(v),
            None => None,
        };
        let kafka = match self.required(m, "", "kafka") {
            Some(v) => self.kafka(v),
            None => None,
        };
        let mapping = match get(m, "mapping") {
            Some(v) => self.mapping(v),
            None => Some(MappingRules::default()),
        };
        let metrics = match get(m, "metrics") {
            Some(v) => self.metrics(v),
            None => Some(MetricsConfig::default()),
        };
        let logging = match get(m, "logging") {
            Some(v) => self.logging(v),
            None => Some(LoggingConfig::default()),
        };
        if let (Some(listen), Some(kafka)) = (&listen, &kafka) {
            self.check_passthrough(listen, kafka);
        }
        Some(Config {
            listen: listen?,
            kafka: kafka?,
            mapping: mapping?,
            metrics: metrics?,
            logging: logging?,
        })
    }

    /// TLS settings present exactly when the protocol uses TLS (`tls_required`:
    /// whether the protocol needs the section, or can do without it).
    fn check_protocol(
        &mut self,
        field: &str,
        protocol: SecurityProtocol,
        section: &str,
        present: bool,
        tls_required: bool,
    ) {
        if protocol.uses_tls() && !present && tls_required {
            self.err(format!("{section} is required when {field} is {protocol}"));
        }
        if !protocol.uses_tls() && present {
            self.err(format!(
                "{section} is set but {field} is {protocol}: use {} or remove {section}",
                if protocol.uses_sasl() {
                    "SASL_SSL"
                } else {
                    "SSL or SASL_SSL"
                }
            ));
        }
    }

    fn check_protocol_sasl(
        &mut self,
        field: &str,
        protocol: SecurityProtocol,
        section: &str,
        present: bool,
    ) {
        if protocol.uses_sasl() && !present {
            self.err(format!("{section} is required when {field} is {protocol}"));
        }
        if !protocol.uses_sasl() && present {
            self.err(format!(
                "{section} is set but {field} is {protocol}: use {} or remove {section}",
                if protocol.uses_tls() {
                    "SASL_SSL"
                } else {
                    "SASL_PLAINTEXT or SASL_SSL"
                }
            ));
        }
    }

    fn metrics(&mut self, v: &Value) -> Option<MetricsConfig> {
        let path = "metrics";
        let m = self.section(v, path, METRICS_KEYS)?;
        let enabled = self.opt_bool(m, path, "enabled");
        let address = match get(m, "address") {
            Some(v) => self.host_port(v, "metrics.address")?,
            None => DEFAULT_METRICS_ADDRESS.to_string(),
        };
        Some(MetricsConfig { enabled, address })
    }

    fn logging(&mut self, v: &Value) -> Option<LoggingConfig> {
        let path = "logging";
        let m = self.section(v, path, LOGGING_KEYS)?;
        let mut out = LoggingConfig::default();
        let mut ok = true;
        if let Some(v) = get(m, "level") {
            match self
                .string(v, "logging.level")
                .map(|s| crate::logging::level_from_config(&s))
            {
                Some(Ok(level)) => out.level = level,
                Some(Err(e)) => {
                    self.err(format!("logging.level: {e}"));
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(v) = get(m, "format") {
            match self
                .string(v, "logging.format")
                .map(|s| LogFormat::from_config(&s))
            {
                Some(Ok(format)) => out.format = format,
                Some(Err(e)) => {
                    self.err(format!("logging.format: {e}"));
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use log::LevelFilter;

    use crate::config::test_support::{assert_error, errors, listen, ok, with};
    use crate::config::LogFormat;

    #[test]
    fn every_field_is_read() {
        let c = ok("
listen:
  address: \"[::1]:9093\"
  advertised_address: proxy.example.com:19093
  max_connections: 5
  max_frame_bytes: 2048
kafka:
  bootstrap_servers: [\"a:1\", \"b:2\"]
  connection_timeout_ms: 1
  request_timeout_ms: 2
  metadata_refresh_interval_ms: 3
  client_rack: use1-az2
  derived_offset_refresh_interval_ms: 4
metrics:
  enabled: true
  address: 127.0.0.1:9999
logging:
  level: trace
  format: json
");
        assert_eq!(c.listen.address, "[::1]:9093");
        assert_eq!(
            c.listen.advertised_host_port(),
            ("proxy.example.com", 19093)
        );
        assert_eq!(
            (c.listen.max_connections, c.listen.max_frame_bytes),
            (5, 2048)
        );
        assert_eq!(c.kafka.bootstrap_servers, vec!["a:1", "b:2"]);
        assert_eq!(c.kafka.client_rack.as_deref(), Some("use1-az2"));
        assert_eq!(
            (
                c.kafka.connection_timeout_ms,
                c.kafka.request_timeout_ms,
                c.kafka.metadata_refresh_interval_ms,
                c.kafka.derived_offset_refresh_interval_ms
            ),
            (1, 2, 3, 4)
        );
        assert!(c.metrics.enabled);
        assert_eq!(c.metrics.address, "127.0.0.1:9999");
        assert_eq!(c.logging.level, LevelFilter::Trace);
        assert_eq!(c.logging.format, LogFormat::Json);
    }

    // --- unknown keys ---------------------------------------------------

    #[test]
    fn unknown_key_names_key_path_and_expected_keys() {
        assert_error(
            "listen:\n  adress: \"127.0.0.1:9092\"\n  address: \"127.0.0.1:9092\"\nkafka:\n  bootstrap_servers: [\"k:1\"]\n",
            "unknown key \"adress\" at listen (expected one of: address, advertised_address, \
             max_connections, max_frame_bytes, queued_max_request_bytes, max_buffered_response_bytes, \
             connections_max_idle_ms, frame_timeout_ms, handshake_timeout_ms, security)",
        );
    }

    #[test]
    fn unknown_key_at_top_level() {
        assert_error(
            &with("mappings: {}\n"),
            "unknown key \"mappings\" at top level (expected one of: listen, kafka, mapping, metrics, logging)",
        );
    }

    #[test]
    fn unknown_key_deep_path() {
        assert_error(
            &with("mapping:\n  topics:\n    \"audit\\\\..*\": { virtual_partitions: 10, physical_partitions: 5, ratio: 2 }\n"),
            "unknown key \"ratio\" at mapping.topics.\"audit\\..*\" (expected one of: virtual_partitions, physical_partitions)",
        );
        let e = errors(
            "listen:\n  address: \"127.0.0.1:9092\"\n  security:\n    protocol: SSL\n    tls: { cert_path: a, key_path: b, client_cert: c }\nkafka:\n  bootstrap_servers: [\"k:1\"]\n",
        );
        assert_eq!(
            e,
            vec!["unknown key \"client_cert\" at listen.security.tls (expected one of: cert_path, key_path, ca_cert_path, client_auth)"]
        );
    }

    #[test]
    fn required_sections_and_keys() {
        assert_error(
            "kafka:\n  bootstrap_servers: [\"k:1\"]\n",
            "missing required key \"listen\" at top level",
        );
        assert_error(
            "listen:\n  address: h:1\n",
            "missing required key \"kafka\" at top level",
        );
        assert_error(
            &listen("  max_connections: 5\n"),
            "missing required key \"address\" at listen",
        );
        assert_error(
            "listen:\n  address: h:1\nkafka: {}\n",
            "missing required key \"bootstrap_servers\" at kafka",
        );
        assert_error(
            "",
            "the configuration is empty: listen and kafka are required",
        );
        assert_error("- a\n", "top level: expected a mapping of keys (listen, kafka, mapping, metrics, logging), got a list");
        assert_error("listen: 5\nkafka:\n  bootstrap_servers: [\"k:1\"]\n",
            "listen: expected a mapping of keys (address, advertised_address, max_connections, max_frame_bytes, queued_max_request_bytes, max_buffered_response_bytes, connections_max_idle_ms, frame_timeout_ms, handshake_timeout_ms, security), got a number");
    }

    #[test]
    fn logging_and_metrics_errors() {
        assert_error(
            &with("logging: { format: xml }\n"),
            "logging.format: unknown log format \"xml\" (expected one of: text, json)",
        );
        assert_error(
            &with("metrics: { enabled: yes }\n"),
            "metrics.enabled: expected true or false, got a string",
        );
        assert_error(
            &with("metrics: { address: \"9090\" }\n"),
            "metrics.address: \"9090\" is not host:port: missing \":port\"",
        );
    }

    #[test]
    fn null_sections_mean_defaults() {
        let c = ok(&with("mapping:\nmetrics:\nlogging:\n"));
        assert!(c.mapping.is_empty());
        assert!(!c.metrics.enabled);
    }

}
