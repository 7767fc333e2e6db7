//! The YAML configuration: loading, `${VAR}` expansion, validation, and the
//! partition mapping rules.
//!
//! Loading goes YAML text → `serde_yaml::Value` → environment expansion on
//! string scalars → a hand-written decoder that knows every section's keys.
//! Decoding by hand (rather than `#[derive(Deserialize)]`) is what lets every
//! error name the full path of the field and the rule it breaks, and lets one
//! run report all problems at once: serde_yaml's errors from a `Value` carry
//! no path, and its errors from text point at lines of the unexpanded file.
//!
//! Mapping rules (see `docs` and the design's §2): a rule says "present V
//! virtual partitions on P physical ones". A topic's rule is, in order of
//! precedence: the `mapping.topics` entry naming it exactly, else the first
//! `mapping.topics` regex (in file order) matching the whole name, else the
//! default rule (`mapping.virtual_partitions` / `mapping.physical_partitions`),
//! else none (pass-through).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use regex::Regex;
use serde_yaml::{Mapping, Value};

pub use crate::logging::LogFormat;

/// `listen.max_connections` when not set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `listen.max_frame_bytes` when not set: 100 MiB, as Kafka's `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;
/// The smallest accepted `listen.max_frame_bytes`.
pub const MIN_MAX_FRAME_BYTES: usize = 1024;
/// `kafka.connection_timeout_ms` when not set.
pub const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 10_000;
/// `kafka.request_timeout_ms` when not set.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// `kafka.metadata_refresh_interval_ms` when not set.
pub const DEFAULT_METADATA_REFRESH_INTERVAL_MS: u64 = 30_000;
/// `kafka.producer_id_topic` when not set.
pub const DEFAULT_PRODUCER_ID_TOPIC: &str = "__kpr_producer_ids";
/// `kafka.producer_id_idle_ms` when not set: seven days, as long as Kafka
/// keeps an idle transactional id (`transactional.id.expiration.ms`).
pub const DEFAULT_PRODUCER_ID_IDLE_MS: u64 = 7 * 24 * 3600 * 1000;
/// `kafka.derived_offset_refresh_interval_ms` when not set: a day, well
/// inside Kafka's default `offsets.retention.minutes` (7 days), which the
/// proxy cannot read.
pub const DEFAULT_DERIVED_OFFSET_REFRESH_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;
/// `metrics.address` when not set.
pub const DEFAULT_METRICS_ADDRESS: &str = "0.0.0.0:9090";
/// The warning returned when a configuration sets `mapping.offset_range`.
pub const OFFSET_RANGE_WARNING: &str =
    "mapping.offset_range is ignored: virtual partition offsets are the physical offsets";
/// Kafka's limit on the length of a topic name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// The largest partition count a rule may name (Kafka partition ids are `i32`).
pub const MAX_PARTITIONS: u32 = i32::MAX as u32;

// ---------------------------------------------------------------------------
// The configuration

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub kafka: KafkaConfig,
    pub mapping: MappingRules,
    pub metrics: MetricsConfig,
    pub logging: LoggingConfig,
}

/// A configuration and the warnings its loading produced (the caller logs
/// them once logging is set up).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// `listen`: where clients connect.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// `host:port` to bind, as written (syntax checked, not resolved).
    pub address: String,
    /// `host:port` given to clients in Metadata, FindCoordinator, ... responses.
    /// Defaults to `address`; required when `address` binds all interfaces.
    pub advertised_address: String,
    pub max_connections: usize,
    /// The largest request frame accepted from a client (size prefix excluded).
    pub max_frame_bytes: usize,
    pub security: ListenSecurity,
}

impl ListenConfig {
    /// The advertised address split into host (without IPv6 brackets) and port.
    pub fn advertised_host_port(&self) -> (&str, u16) {
        split_host_port(&self.advertised_address).expect("validated when loaded")
    }
}

/// `listen.security`.
#[derive(Debug, Clone, Default)]
pub struct ListenSecurity {
    pub protocol: SecurityProtocol,
    pub tls: Option<ListenTls>,
    pub sasl: Option<ListenSasl>,
}

/// `listen.security.tls`: the proxy's server certificate.
#[derive(Debug, Clone)]
pub struct ListenTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_cert_path: Option<PathBuf>,
    /// Require client certificates (signed by `ca_cert_path`).
    pub client_auth: bool,
}

/// `listen.security.sasl`: how clients authenticate to the proxy.
#[derive(Debug, Clone)]
pub struct ListenSasl {
    pub enabled_mechanisms: Vec<SaslMechanism>,
    /// `credentials.users`, in file order.
    pub users: Vec<SaslUser>,
}

/// One entry of `listen.security.sasl.credentials.users`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslUser {
    pub name: String,
    pub password: Secret,
}

/// `kafka`: the upstream cluster.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port` strings as written (syntax checked, not resolved).
    pub bootstrap_servers: Vec<String>,
    pub connection_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub metadata_refresh_interval_ms: u64,
    /// The compacted topic where derived producer ids are kept.
    pub producer_id_topic: String,
    /// Derived producer ids unused this long by every instance are removed.
    pub producer_id_idle_ms: u64,
    /// The rack id the proxy sends on its own fetches of remapped topics
    /// (KIP-392 follower fetching); `None`: no rack, fetch from leaders.
    pub client_rack: Option<String>,
    /// How often, at most, a group's derived offsets are re-committed (see
    /// `remap::groups::KeepAlive`).
    pub derived_offset_refresh_interval_ms: u64,
    pub security_protocol: SecurityProtocol,
    pub tls: Option<KafkaTls>,
    pub sasl: Option<KafkaSasl>,
}

impl KafkaConfig {
    pub fn connection_timeout(&self) -> Duration {
        Duration::from_millis(self.connection_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn metadata_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.metadata_refresh_interval_ms)
    }
    pub fn producer_id_idle(&self) -> Duration {
        Duration::from_millis(self.producer_id_idle_ms)
    }
    pub fn derived_offset_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.derived_offset_refresh_interval_ms)
    }
}

/// `kafka.tls`. Every field is optional: with no `ca_cert_path` the system's
/// trust store is meant; `cert_path` and `key_path` (client certificate) go together.
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    pub ca_cert_path: Option<PathBuf>,
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// `kafka.sasl`: how the proxy authenticates to the brokers.
#[derive(Debug, Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// `metrics`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub address: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            address: DEFAULT_METRICS_ADDRESS.to_string(),
        }
    }
}

/// `logging`.
#[derive(Debug, Clone, Copy)]
pub struct LoggingConfig {
    pub level: LevelFilter,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LevelFilter::Info,
            format: LogFormat::Text,
        }
    }
}

/// Kafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    const ALL: &'static [(&'static str, SecurityProtocol)] = &[
        ("PLAINTEXT", SecurityProtocol::Plaintext),
        ("SSL", SecurityProtocol::Ssl),
        ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
        ("SASL_SSL", SecurityProtocol::SaslSsl),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SASL mechanisms the configuration may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    const ALL: &'static [(&'static str, SaslMechanism)] = &[
        ("PLAIN", SaslMechanism::Plain),
        ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
        ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A password: `Debug` does not show it, so configs can be logged with `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// Features the configuration asks for that this version does not
    /// implement. `main` refuses to start when this is not empty: silently
    /// running without TLS or SASL that was asked for would be worse.
    pub fn unsupported_features(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |field: &str, protocol: SecurityProtocol| {
            if protocol != SecurityProtocol::Plaintext {
                out.push(format!(
                    "{field} {protocol} is not supported yet by this version of kpr-proxy: \
                     refusing to start rather than ignoring it"
                ));
            }
        };
        check("listen.security.protocol", self.listen.security.protocol);
        check("kafka.security_protocol", self.kafka.security_protocol);
        out
    }

    /// One line per mapping rule; see [`MappingRules::describe_mapping`].
    pub fn describe_mapping(&self) -> Vec<String> {
        self.mapping.describe_mapping()
    }
}

// ---------------------------------------------------------------------------
// Mapping rules

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
}

/// The rule's place in the configuration: `mapping`, `mapping.topics.events`,
/// `mapping.topics."audit\..*"`.
impl Rule {
    /// The rule as a person reads it in a message: "the default rule", or
    /// its path in the file.
    pub fn name(&self) -> String {
        match self.source {
            RuleSource::Default => "the default rule (mapping.virtual_partitions/physical_partitions)".to_string(),
            _ => self.to_string(),
        }
    }
}

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

// ---------------------------------------------------------------------------
// Addresses

/// Splits `host:port` (IPv6 in brackets: `[::1]:9092`) into the host, without
/// brackets, and the port. The host is not resolved.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("missing \"]\" after the IPv6 address".to_string());
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err("missing \":port\" after the address".to_string());
        };
        (host, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err("missing \":port\"".to_string());
        };
        if host.contains(':') {
            return Err("an IPv6 address must be in brackets, e.g. [::1]:9092".to_string());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is empty".to_string());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '[' | ']' | '@'))
    {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host, p)),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

/// The host binds every interface (0.0.0.0, ::).
fn is_wildcard_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

// ---------------------------------------------------------------------------
// Errors

/// Why a configuration was refused: every problem found, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: Option<PathBuf>,
    errors: Vec<String>,
}

impl ConfigError {
    fn new(errors: Vec<String>) -> ConfigError {
        ConfigError { file: None, errors }
    }
    fn in_file(mut self, file: &Path) -> ConfigError {
        self.file = Some(file.to_path_buf());
        self
    }
    /// The file the configuration came from, when loaded with [`load`].
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
    /// Each problem, one message each.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// `FILE: message`, or with several problems `FILE: N problems:` and one
/// indented line each.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match self.errors.as_slice() {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} problems in the configuration:", many.len())?;
                for e in many {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Loading

/// Reads, expands (from the process environment) and validates a configuration file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(vec![format!("cannot read the configuration file: {e}")]).in_file(path)
    })?;
    parse_str(&text, &|name| std::env::var(name).ok()).map_err(|e| e.in_file(path))
}

/// Parses and validates configuration text; `env` looks up `${VAR}` values.
pub fn parse_str(
    yaml: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    let mut root: Value = serde_yaml::from_str(yaml)
        .map_err(|e| ConfigError::new(vec![format!("invalid YAML: {e}")]))?;
    root.apply_merge()
        .map_err(|e| ConfigError::new(vec![format!("invalid YAML merge (<<): {e}")]))?;
    let mut d = Decoder {
        env,
        errors: Vec::new(),
        warnings: Vec::new(),
        expanded: HashSet::new(),
        failed: HashSet::new(),
    };
    d.expand_tree(&mut root, "");
    let config = d.config(&root);
    match config {
        Some(config) if d.errors.is_empty() => Ok(LoadedConfig {
            config,
            warnings: d.warnings,
        }),
        _ => {
            if d.errors.is_empty() {
                d.errors.push("invalid configuration".to_string()); // not reached: None comes with an error
            }
            Err(ConfigError::new(d.errors))
        }
    }
}

/// Expands `${NAME}` from `env`; `$${` is a literal `${`. Returns the new
/// text and whether a variable was substituted.
fn expand_vars(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut substituted = false;
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err("unterminated \"${\" (write \"$${\" for a literal \"${\")".to_string());
            };
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "\"${{{name}}}\" is not a valid environment variable reference \
                     (names are letters, digits and _; write \"$${{\" for a literal \"${{\")"
                ));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("environment variable {name} is not set")),
            }
            substituted = true;
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok((out, substituted))
}

/// The path of a mapping key: bare when made of `[A-Za-z0-9_-]`, quoted otherwise.
fn key_segment(key: &str) -> String {
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

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key_segment(key)
    } else {
        format!("{path}.{}", key_segment(key))
    }
}

fn where_(path: &str) -> &str {
    if path.is_empty() {
        "top level"
    } else {
        path
    }
}

/// A YAML key as text: strings as they are, numbers and booleans as written.
fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

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
const LISTEN_KEYS: &[&str] = &[
    "address",
    "advertised_address",
    "max_connections",
    "max_frame_bytes",
    "security",
];
const LISTEN_SECURITY_KEYS: &[&str] = &["protocol", "tls", "sasl"];
const LISTEN_TLS_KEYS: &[&str] = &["cert_path", "key_path", "ca_cert_path", "client_auth"];
const LISTEN_SASL_KEYS: &[&str] = &["enabled_mechanisms", "credentials"];
const CREDENTIALS_KEYS: &[&str] = &["users"];
const KAFKA_KEYS: &[&str] = &[
    "bootstrap_servers",
    "connection_timeout_ms",
    "request_timeout_ms",
    "metadata_refresh_interval_ms",
    "producer_id_topic",
    "producer_id_idle_ms",
    "client_rack",
    "derived_offset_refresh_interval_ms",
    "security_protocol",
    "tls",
    "sasl",
];
const KAFKA_TLS_KEYS: &[&str] = &[
    "ca_cert_path",
    "cert_path",
    "key_path",
    "insecure_skip_verify",
];
const KAFKA_SASL_KEYS: &[&str] = &["mechanism", "username", "password"];
const MAPPING_KEYS: &[&str] = &[
    "virtual_partitions",
    "physical_partitions",
    "offset_range",
    "topics",
];
const RULE_KEYS: &[&str] = &["virtual_partitions", "physical_partitions"];
const METRICS_KEYS: &[&str] = &["enabled", "address"];
const LOGGING_KEYS: &[&str] = &["level", "format"];

struct Decoder<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    errors: Vec<String>,
    warnings: Vec<String>,
    /// Paths of strings produced by `${VAR}` substitution: numbers and
    /// booleans may come from the environment.
    expanded: HashSet<String>,
    /// Paths whose expansion failed (already reported; not reported again as a type error).
    failed: HashSet<String>,
}

impl Decoder<'_> {
    fn err(&mut self, msg: String) {
        self.errors.push(msg);
    }

    fn expand_tree(&mut self, v: &mut Value, path: &str) {
        match v {
            Value::String(s) => {
                if s.contains('$') {
                    match expand_vars(s, self.env) {
                        Ok((new, substituted)) => {
                            *s = new;
                            if substituted {
                                self.expanded.insert(path.to_string());
                            }
                        }
                        Err(e) => {
                            self.failed.insert(path.to_string());
                            self.err(format!("{}: {e}", where_(path)));
                        }
                    }
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_tree(item, &format!("{path}[{i}]"));
                }
            }
            Value::Mapping(m) => {
                for (k, item) in m.iter_mut() {
                    let key = key_text(k).unwrap_or_else(|| "?".to_string());
                    self.expand_tree(item, &child(path, &key));
                }
            }
            Value::Tagged(t) => self.expand_tree(&mut t.value, path),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
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

    fn config(&mut self, root: &Value) -> Option<Config> {
        if root.is_null() {
            self.err("the configuration is empty: listen and kafka are required".to_string());
            return None;
        }
        let m = self.section(root, "", ROOT_KEYS)?;
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
        Some(Config {
            listen: listen?,
            kafka: kafka?,
            mapping: mapping?,
            metrics: metrics?,
            logging: logging?,
        })
    }

    fn listen(&mut self, v: &Value) -> Option<ListenConfig> {
        let path = "listen";
        let m = self.section(v, path, LISTEN_KEYS)?;
        let address = self
            .required(m, path, "address")
            .and_then(|v| self.host_port(v, "listen.address"));
        let advertised = match get(m, "advertised_address") {
            Some(v) => self
                .host_port(v, "listen.advertised_address")
                .and_then(|adv| {
                    let (host, _) = split_host_port(&adv).ok()?;
                    if is_wildcard_host(host) {
                        self.err(format!(
                            "listen.advertised_address: {adv} is a wildcard address: \
                         give an address clients can reach"
                        ));
                        return None;
                    }
                    Some(adv)
                }),
            None => match &address {
                Some(addr) if split_host_port(addr).is_ok_and(|(h, _)| is_wildcard_host(h)) => {
                    self.err(format!(
                        "listen.advertised_address is required when listen.address binds all \
                         interfaces ({addr}): clients must be told an address they can reach"
                    ));
                    None
                }
                other => other.clone(),
            },
        };
        let max_connections = self.opt_uint(
            m,
            path,
            "max_connections",
            1,
            u64::from(u32::MAX),
            DEFAULT_MAX_CONNECTIONS as u64,
        );
        let max_frame_bytes = self.opt_uint(
            m,
            path,
            "max_frame_bytes",
            MIN_MAX_FRAME_BYTES as u64,
            i32::MAX as u64,
            DEFAULT_MAX_FRAME_BYTES as u64,
        );
        let security = match get(m, "security") {
            Some(v) => self.listen_security(v)?,
            None => ListenSecurity::default(),
        };
        Some(ListenConfig {
            address: address?,
            advertised_address: advertised?,
            max_connections: max_connections as usize,
            max_frame_bytes: max_frame_bytes as usize,
            security,
        })
    }

    fn listen_security(&mut self, v: &Value) -> Option<ListenSecurity> {
        let path = "listen.security";
        let m = self.section(v, path, LISTEN_SECURITY_KEYS)?;
        let protocol = match get(m, "protocol") {
            Some(v) => self.choice(v, "listen.security.protocol", SecurityProtocol::ALL)?,
            None => SecurityProtocol::Plaintext,
        };
        let tls = match self.opt_section(m, path, "tls", LISTEN_TLS_KEYS) {
            Some(t) => {
                let p = "listen.security.tls";
                let cert = self
                    .required(t, p, "cert_path")
                    .and_then(|v| self.path_buf(v, "listen.security.tls.cert_path"));
                let key = self
                    .required(t, p, "key_path")
                    .and_then(|v| self.path_buf(v, "listen.security.tls.key_path"));
                let ca = self.opt_path(t, p, "ca_cert_path");
                let client_auth = self.opt_bool(t, p, "client_auth");
                if client_auth && get(t, "ca_cert_path").is_none() {
                    self.err(
                        "listen.security.tls.client_auth: requires ca_cert_path, the CA that signs client certificates"
                            .to_string(),
                    );
                }
                Some(ListenTls {
                    cert_path: cert?,
                    key_path: key?,
                    ca_cert_path: ca,
                    client_auth,
                })
            }
            None => None,
        };
        let sasl = match self.opt_section(m, path, "sasl", LISTEN_SASL_KEYS) {
            Some(s) => Some(self.listen_sasl(s)?),
            None => None,
        };
        self.check_protocol(
            "listen.security.protocol",
            protocol,
            "listen.security.tls",
            tls.is_some(),
            true,
        );
        self.check_protocol_sasl(
            "listen.security.protocol",
            protocol,
            "listen.security.sasl",
            sasl.is_some(),
        );
        Some(ListenSecurity {
            protocol,
            tls,
            sasl,
        })
    }

    fn listen_sasl(&mut self, m: &Mapping) -> Option<ListenSasl> {
        let path = "listen.security.sasl";
        let mut mechanisms = Vec::new();
        if let Some(v) = self.required(m, path, "enabled_mechanisms") {
            let p = "listen.security.sasl.enabled_mechanisms";
            match v {
                Value::Sequence(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        let ip = format!("{p}[{i}]");
                        if let Some(mech) = self.choice(item, &ip, SaslMechanism::ALL) {
                            if mechanisms.contains(&mech) {
                                self.err(format!("{ip}: {mech} is listed twice"));
                            }
                            mechanisms.push(mech);
                        }
                    }
                }
                Value::Sequence(_) => self.err(format!("{p}: must name at least one mechanism")),
                other => self.err(format!(
                    "{p}: expected a list of mechanisms, got {}",
                    kind(other)
                )),
            }
        }
        let mut users = Vec::new();
        let creds = self.required(m, path, "credentials");
        let creds = creds
            .and_then(|v| self.section(v, "listen.security.sasl.credentials", CREDENTIALS_KEYS));
        if let Some(c) = creds {
            let p = "listen.security.sasl.credentials.users";
            match self.required(c, "listen.security.sasl.credentials", "users") {
                Some(Value::Mapping(u)) if !u.is_empty() => {
                    for (k, v) in u {
                        let Some(name) = key_text(k).filter(|n| !n.is_empty()) else {
                            self.err(format!("{p}: user names must be non-empty strings"));
                            continue;
                        };
                        let up = child(p, &name);
                        if let Some(pw) = self.non_empty(v, &up) {
                            users.push(SaslUser {
                                name,
                                password: Secret(pw),
                            });
                        }
                    }
                }
                Some(Value::Mapping(_)) => self.err(format!("{p}: must name at least one user")),
                Some(other) => self.err(format!(
                    "{p}: expected a mapping of user: password, got {}",
                    kind(other)
                )),
                None => {}
            }
        }
        Some(ListenSasl {
            enabled_mechanisms: mechanisms,
            users,
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

    fn kafka(&mut self, v: &Value) -> Option<KafkaConfig> {
        let path = "kafka";
        let m = self.section(v, path, KAFKA_KEYS)?;
        let servers = self
            .required(m, path, "bootstrap_servers")
            .and_then(|v| self.bootstrap_servers(v));
        let ms_max = u64::from(u32::MAX);
        let connection_timeout_ms = self.opt_uint(
            m,
            path,
            "connection_timeout_ms",
            1,
            ms_max,
            DEFAULT_CONNECTION_TIMEOUT_MS,
        );
        let request_timeout_ms = self.opt_uint(
            m,
            path,
            "request_timeout_ms",
            1,
            ms_max,
            DEFAULT_REQUEST_TIMEOUT_MS,
        );
        let metadata_refresh_interval_ms = self.opt_uint(
            m,
            path,
            "metadata_refresh_interval_ms",
            1,
            ms_max,
            DEFAULT_METADATA_REFRESH_INTERVAL_MS,
        );
        let producer_id_topic = match get(m, "producer_id_topic") {
            Some(v) => self.non_empty(v, "kafka.producer_id_topic").unwrap_or_default(),
            None => DEFAULT_PRODUCER_ID_TOPIC.to_string(),
        };
        if !producer_id_topic.is_empty() && !producer_id_topic.starts_with("__") {
            self.err(format!(
                "kafka.producer_id_topic: {producer_id_topic:?} must start with \"__\", so that no mapping rule can remap it"
            ));
        } else if !producer_id_topic.is_empty()
            && !producer_id_topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            self.err(format!(
                "kafka.producer_id_topic: {producer_id_topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-')"
            ));
        }
        let producer_id_idle_ms = self.opt_uint(m, path, "producer_id_idle_ms", 1000, ms_max * 1000, DEFAULT_PRODUCER_ID_IDLE_MS);
        let client_rack = get(m, "client_rack").and_then(|v| self.non_empty(v, "kafka.client_rack"));
        let derived_offset_refresh_interval_ms = self.opt_uint(
            m,
            path,
            "derived_offset_refresh_interval_ms",
            1,
            ms_max,
            DEFAULT_DERIVED_OFFSET_REFRESH_INTERVAL_MS,
        );
        let protocol = match get(m, "security_protocol") {
            Some(v) => self.choice(v, "kafka.security_protocol", SecurityProtocol::ALL)?,
            None => SecurityProtocol::Plaintext,
        };
        let tls = match self.opt_section(m, path, "tls", KAFKA_TLS_KEYS) {
            Some(t) => {
                let p = "kafka.tls";
                let tls = KafkaTls {
                    ca_cert_path: self.opt_path(t, p, "ca_cert_path"),
                    cert_path: self.opt_path(t, p, "cert_path"),
                    key_path: self.opt_path(t, p, "key_path"),
                    insecure_skip_verify: self.opt_bool(t, p, "insecure_skip_verify"),
                };
                match (get(t, "cert_path").is_some(), get(t, "key_path").is_some()) {
                    (true, false) => self.err(
                        "kafka.tls.key_path is required when kafka.tls.cert_path is set"
                            .to_string(),
                    ),
                    (false, true) => self.err(
                        "kafka.tls.cert_path is required when kafka.tls.key_path is set"
                            .to_string(),
                    ),
                    _ => {}
                }
                if tls.insecure_skip_verify {
                    self.warnings.push(
                        "kafka.tls.insecure_skip_verify is true: broker certificates will not be verified".to_string(),
                    );
                }
                Some(tls)
            }
            None => None,
        };
        let sasl = match self.opt_section(m, path, "sasl", KAFKA_SASL_KEYS) {
            Some(s) => {
                let p = "kafka.sasl";
                let mechanism = self
                    .required(s, p, "mechanism")
                    .and_then(|v| self.choice(v, "kafka.sasl.mechanism", SaslMechanism::ALL));
                let username = self
                    .required(s, p, "username")
                    .and_then(|v| self.non_empty(v, "kafka.sasl.username"));
                let password = self
                    .required(s, p, "password")
                    .and_then(|v| self.string(v, "kafka.sasl.password"));
                Some(KafkaSasl {
                    mechanism: mechanism?,
                    username: username?,
                    password: Secret(password?),
                })
            }
            None => None,
        };
        // A client can verify brokers with the system trust store: kafka.tls is optional with SSL.
        self.check_protocol(
            "kafka.security_protocol",
            protocol,
            "kafka.tls",
            tls.is_some(),
            false,
        );
        self.check_protocol_sasl(
            "kafka.security_protocol",
            protocol,
            "kafka.sasl",
            sasl.is_some(),
        );
        Some(KafkaConfig {
            bootstrap_servers: servers?,
            connection_timeout_ms,
            request_timeout_ms,
            metadata_refresh_interval_ms,
            producer_id_topic,
            producer_id_idle_ms,
            client_rack,
            derived_offset_refresh_interval_ms,
            security_protocol: protocol,
            tls,
            sasl,
        })
    }

    /// A list of `host:port`, or one string of comma-separated `host:port`
    /// (handy with `${KAFKA_BOOTSTRAP_SERVERS}`).
    fn bootstrap_servers(&mut self, v: &Value) -> Option<Vec<String>> {
        let path = "kafka.bootstrap_servers";
        let mut out = Vec::new();
        let mut ok = true;
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    match self.host_port(item, &format!("{path}[{i}]")) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
            }
            Value::String(s) => {
                if self.failed.contains(path) {
                    return None;
                }
                for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match self.host_port(&Value::String(part.to_string()), path) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
            }
            other => {
                self.err(format!(
                    "{path}: expected a list of host:port, got {}",
                    kind(other)
                ));
                return None;
            }
        }
        if ok && out.is_empty() {
            self.err(format!("{path}: must list at least one broker (host:port)"));
            return None;
        }
        ok.then_some(out)
    }

    fn mapping(&mut self, v: &Value) -> Option<MappingRules> {
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
    use super::*;

    const MINIMAL: &str = "
listen:
  address: \"127.0.0.1:9092\"
kafka:
  bootstrap_servers: [\"localhost:19092\"]
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(yaml: &str) -> Result<LoadedConfig, ConfigError> {
        parse_str(yaml, &no_env)
    }

    fn ok(yaml: &str) -> Config {
        match parse(yaml) {
            Ok(l) => l.config,
            Err(e) => panic!("expected the config to load, got:\n{e}"),
        }
    }

    /// The config's errors, one string each.
    fn errors(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e.errors().to_vec(),
        }
    }

    /// Asserts the config fails with exactly one error equal to `expected`.
    fn assert_error(yaml: &str, expected: &str) {
        assert_eq!(errors(yaml), vec![expected.to_string()], "for:\n{yaml}");
    }

    /// MINIMAL with `extra` appended (top-level sections).
    fn with(extra: &str) -> String {
        format!("{MINIMAL}{extra}")
    }

    fn mapping(body: &str) -> String {
        with(&format!("mapping:\n{body}"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ok(MINIMAL);
        assert_eq!(c.listen.address, "127.0.0.1:9092");
        assert_eq!(c.listen.advertised_address, "127.0.0.1:9092");
        assert_eq!(c.listen.advertised_host_port(), ("127.0.0.1", 9092));
        assert_eq!(c.listen.max_connections, 10_000);
        assert_eq!(c.listen.max_frame_bytes, 104_857_600);
        assert_eq!(c.listen.security.protocol, SecurityProtocol::Plaintext);
        assert_eq!(c.kafka.bootstrap_servers, vec!["localhost:19092"]);
        assert_eq!(c.kafka.connection_timeout(), Duration::from_secs(10));
        assert_eq!(c.kafka.request_timeout(), Duration::from_secs(30));
        assert_eq!(c.kafka.metadata_refresh_interval(), Duration::from_secs(30));
        assert_eq!(c.kafka.client_rack, None);
        assert_eq!(
            c.kafka.derived_offset_refresh_interval(),
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(c.kafka.security_protocol, SecurityProtocol::Plaintext);
        assert!(c.mapping.is_empty());
        assert_eq!(c.mapping.rule_for("anything"), None);
        assert!(!c.mapping.has_virtual_partitions());
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.address, "0.0.0.0:9090");
        assert_eq!(c.logging.level, LevelFilter::Info);
        assert_eq!(c.logging.format, LogFormat::Text);
        assert!(c.unsupported_features().is_empty());
        assert_eq!(
            c.describe_mapping(),
            vec!["Mapping: none configured, every topic passes through 1:1"]
        );
    }

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
             max_connections, max_frame_bytes, security)",
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

    // --- environment ------------------------------------------------------

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_vars_expand_in_string_values() {
        let yaml = "
listen:
  address: \"${HOST}:${PORT}\"
kafka:
  bootstrap_servers: [\"${BROKER}\"]
  connection_timeout_ms: ${TIMEOUT}
metrics:
  enabled: ${METRICS}
";
        let env = env_of(&[
            ("HOST", "127.0.0.1"),
            ("PORT", "9094"),
            ("BROKER", "b1:9092"),
            ("TIMEOUT", "1234"),
            ("METRICS", "true"),
        ]);
        let c = parse_str(yaml, &env).unwrap().config;
        assert_eq!(c.listen.address, "127.0.0.1:9094");
        assert_eq!(c.kafka.bootstrap_servers, vec!["b1:9092"]);
        assert_eq!(c.kafka.connection_timeout_ms, 1234);
        assert!(c.metrics.enabled);
    }

    #[test]
    fn env_values_are_not_yaml() {
        // Expansion happens after parsing: quotes, colons, "${" in the value stay literal.
        let yaml = "
listen:
  address: 127.0.0.1:9092
  security:
    protocol: SASL_PLAINTEXT
    sasl:
      enabled_mechanisms: [PLAIN]
      credentials:
        users:
          alice: \"${PW}\"
kafka:
  bootstrap_servers: [\"k:1\"]
";
        let env = env_of(&[("PW", "p\"w: ${NOT_EXPANDED} \\n'")]);
        let c = parse_str(yaml, &env).unwrap().config;
        let sasl = c.listen.security.sasl.unwrap();
        assert_eq!(
            sasl.users,
            vec![SaslUser {
                name: "alice".into(),
                password: Secret::new("p\"w: ${NOT_EXPANDED} \\n'")
            }]
        );
        assert_eq!(sasl.enabled_mechanisms, vec![SaslMechanism::Plain]);
    }

    #[test]
    fn double_dollar_escapes_expansion() {
        let yaml = "
listen:
  address: 127.0.0.1:9092
kafka:
  bootstrap_servers: [\"k:1\"]
  sasl: { mechanism: PLAIN, username: \"u$${HOME}$$x$\", password: \"$${A}${A}\" }
  security_protocol: SASL_PLAINTEXT
";
        let c = parse_str(yaml, &env_of(&[("A", "1")])).unwrap().config;
        let sasl = c.kafka.sasl.unwrap();
        assert_eq!(sasl.username, "u${HOME}$$x$");
        assert_eq!(sasl.password.expose(), "${A}1");
    }

    #[test]
    fn unset_env_var_names_variable_and_path() {
        let yaml = "
listen:
  address: 127.0.0.1:9092
kafka:
  bootstrap_servers: [\"k:1\", \"${BROKER2}\"]
  connection_timeout_ms: ${TIMEOUT}
";
        let e = parse_str(yaml, &no_env).unwrap_err();
        assert_eq!(
            e.errors(),
            [
                "kafka.bootstrap_servers[1]: environment variable BROKER2 is not set",
                "kafka.connection_timeout_ms: environment variable TIMEOUT is not set",
            ]
        );
    }

    #[test]
    fn malformed_env_references() {
        let e = errors(&with("logging: { level: \"${LEVEL\" }\n"));
        assert_eq!(
            e,
            vec!["logging.level: unterminated \"${\" (write \"$${\" for a literal \"${\")"]
        );
        let e = errors(&with("logging: { level: \"${1X}\" }\n"));
        assert!(
            e.len() == 1
                && e[0].starts_with(
                    "logging.level: \"${1X}\" is not a valid environment variable reference"
                ),
            "{e:?}"
        );
    }

    #[test]
    fn env_number_must_be_a_number() {
        let yaml = with("metrics: { enabled: false }\nlogging: { level: info }\n")
            .replace("kafka:\n", "kafka:\n  request_timeout_ms: ${T}\n");
        let e = parse_str(&yaml, &env_of(&[("T", "soon")])).unwrap_err();
        assert_eq!(e.errors(), ["kafka.request_timeout_ms: expected a whole number, got \"soon\" from the environment"]);
    }

    #[test]
    fn quoted_number_without_env_is_a_type_error() {
        assert_error(
            &with("").replace("kafka:\n", "kafka:\n  request_timeout_ms: \"100\"\n"),
            "kafka.request_timeout_ms: expected a whole number, got a string",
        );
    }

    // --- listen -------------------------------------------------------------

    fn listen(body: &str) -> String {
        format!("listen:\n{body}kafka:\n  bootstrap_servers: [\"k:1\"]\n")
    }

    #[test]
    fn wildcard_listen_requires_advertised_address() {
        for addr in ["0.0.0.0:9092", "[::]:9092"] {
            assert_error(
                &listen(&format!("  address: \"{addr}\"\n")),
                &format!(
                    "listen.advertised_address is required when listen.address binds all interfaces \
                     ({addr}): clients must be told an address they can reach"
                ),
            );
        }
        let c = ok(&listen(
            "  address: \"0.0.0.0:9092\"\n  advertised_address: \"proxy:9092\"\n",
        ));
        assert_eq!(c.listen.advertised_address, "proxy:9092");
        let c = ok(&listen("  address: \"localhost:9092\"\n"));
        assert_eq!(c.listen.advertised_address, "localhost:9092");
    }

    #[test]
    fn advertised_address_cannot_be_wildcard() {
        assert_error(
            &listen("  address: \"0.0.0.0:9092\"\n  advertised_address: \"0.0.0.0:9092\"\n"),
            "listen.advertised_address: 0.0.0.0:9092 is a wildcard address: give an address clients can reach",
        );
    }

    #[test]
    fn address_syntax_errors() {
        let cases = [
            ("localhost", "\"localhost\" is not host:port: missing \":port\""),
            (":9092", "\":9092\" is not host:port: the host is empty"),
            ("h:0", "\"h:0\" is not host:port: port \"0\" is not a number from 1 to 65535"),
            ("h:65536", "\"h:65536\" is not host:port: port \"65536\" is not a number from 1 to 65535"),
            ("h:http", "\"h:http\" is not host:port: port \"http\" is not a number from 1 to 65535"),
            ("h:+1", "\"h:+1\" is not host:port: port \"+1\" is not a number from 1 to 65535"),
            ("::1:9092", "\"::1:9092\" is not host:port: an IPv6 address must be in brackets, e.g. [::1]:9092"),
            ("[::1:9092", "\"[::1:9092\" is not host:port: missing \"]\" after the IPv6 address"),
            ("[::1]", "\"[::1]\" is not host:port: missing \":port\" after the address"),
            ("a b:1", "\"a b:1\" is not host:port: \"a b\" is not a host name or IP address"),
        ];
        for (addr, msg) in cases {
            assert_error(
                &listen(&format!("  address: \"{addr}\"\n")),
                &format!("listen.address: {msg}"),
            );
        }
        assert_eq!(split_host_port("[fe80::1]:65535"), Ok(("fe80::1", 65535)));
    }

    #[test]
    fn listen_limits() {
        assert_error(
            &listen("  address: \"h:1\"\n  max_connections: 0\n"),
            "listen.max_connections: must be at least 1 (got 0)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  max_connections: -3\n"),
            "listen.max_connections: must be at least 1 (got -3)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  max_frame_bytes: 1023\n"),
            "listen.max_frame_bytes: must be at least 1024 (got 1023)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  max_frame_bytes: 2147483648\n"),
            "listen.max_frame_bytes: must be at most 2147483647 (got 2147483648)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  max_frame_bytes: 1.5\n"),
            "listen.max_frame_bytes: expected a whole number, got 1.5",
        );
        assert_eq!(
            ok(&listen("  address: \"h:1\"\n  max_frame_bytes: 1024\n"))
                .listen
                .max_frame_bytes,
            1024
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
            "listen: expected a mapping of keys (address, advertised_address, max_connections, max_frame_bytes, security), got a number");
    }

    #[test]
    fn invalid_yaml_is_reported() {
        let e = errors("listen: [\n");
        assert!(e.len() == 1 && e[0].starts_with("invalid YAML: "), "{e:?}");
        let e = errors(
            "listen:\n  address: a:1\n  address: b:2\nkafka:\n  bootstrap_servers: [\"k:1\"]\n",
        );
        assert!(e.len() == 1 && e[0].contains("duplicate"), "{e:?}");
    }

    #[test]
    fn several_problems_are_all_reported() {
        let e = parse(
            "listen:\n  address: nope\n  max_connections: 0\nkafka:\n  bootstrap_servers: []\nlogging: { level: loud }\n",
        )
        .unwrap_err();
        assert_eq!(
            e.errors(),
            [
                "listen.address: \"nope\" is not host:port: missing \":port\"",
                "listen.max_connections: must be at least 1 (got 0)",
                "kafka.bootstrap_servers: must list at least one broker (host:port)",
                "logging.level: unknown log level \"loud\" (expected one of: error, warn, info, debug, trace)",
            ]
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with("4 problems in the configuration:\n  listen.address: "),
            "{shown}"
        );
    }

    // --- kafka ----------------------------------------------------------------

    #[test]
    fn bootstrap_servers_forms() {
        let y = |servers: &str| {
            format!("listen:\n  address: h:1\nkafka:\n  bootstrap_servers: {servers}\n")
        };
        assert_eq!(
            ok(&y("\"a:1, b:2\"")).kafka.bootstrap_servers,
            vec!["a:1", "b:2"]
        );
        assert_error(
            &y("[\"a:1\", \"b\"]"),
            "kafka.bootstrap_servers[1]: \"b\" is not host:port: missing \":port\"",
        );
        assert_error(
            &y("[]"),
            "kafka.bootstrap_servers: must list at least one broker (host:port)",
        );
        assert_error(
            &y("5"),
            "kafka.bootstrap_servers: expected a list of host:port, got a number",
        );
        assert_error(
            &y("[5]"),
            "kafka.bootstrap_servers[0]: expected a string, got a number (quote it)",
        );
        assert_error(
            &y("[\"a:1\"]\n  connection_timeout_ms: 0"),
            "kafka.connection_timeout_ms: must be at least 1 (got 0)",
        );
    }

    fn kafka(body: &str) -> String {
        format!("listen:\n  address: h:1\nkafka:\n  bootstrap_servers: [\"k:1\"]\n{body}")
    }

    #[test]
    fn kafka_security_consistency() {
        assert_error(
            &kafka("  security_protocol: SASL_SSL\n"),
            "kafka.sasl is required when kafka.security_protocol is SASL_SSL",
        );
        assert_error(
            &kafka("  sasl: { mechanism: PLAIN, username: u, password: p }\n"),
            "kafka.sasl is set but kafka.security_protocol is PLAINTEXT: use SASL_PLAINTEXT or SASL_SSL or remove kafka.sasl",
        );
        assert_error(
            &kafka("  security_protocol: SSL\n  sasl: { mechanism: PLAIN, username: u, password: p }\n"),
            "kafka.sasl is set but kafka.security_protocol is SSL: use SASL_SSL or remove kafka.sasl",
        );
        assert_error(
            &kafka("  tls: { ca_cert_path: /ca }\n"),
            "kafka.tls is set but kafka.security_protocol is PLAINTEXT: use SSL or SASL_SSL or remove kafka.tls",
        );
        assert_error(
            &kafka("  security_protocol: SASL_PLAINTEXT\n  tls: { ca_cert_path: /ca }\n  sasl: { mechanism: PLAIN, username: u, password: p }\n"),
            "kafka.tls is set but kafka.security_protocol is SASL_PLAINTEXT: use SASL_SSL or remove kafka.tls",
        );
        // SSL without a tls section: the system trust store.
        let c = ok(&kafka("  security_protocol: SSL\n"));
        assert!(c.kafka.tls.is_none());
        assert_eq!(
            c.unsupported_features(),
            vec!["kafka.security_protocol SSL is not supported yet by this version of kpr-proxy: refusing to start rather than ignoring it"]
        );
    }

    #[test]
    fn kafka_client_rack_is_a_non_empty_string() {
        assert_error(&kafka("  client_rack: \"\"\n"), "kafka.client_rack: must not be empty");
        assert_error(&kafka("  client_rack: [a]\n"), "kafka.client_rack: expected a string, got a list (quote it)");
    }

    #[test]
    fn kafka_tls_and_sasl_fields() {
        let loaded = parse(&kafka(
            "  security_protocol: SASL_SSL\n  tls: { cert_path: /c, key_path: /k, insecure_skip_verify: true }\n  sasl: { mechanism: SCRAM-SHA-512, username: svc, password: pw }\n",
        ))
        .unwrap();
        let k = &loaded.config.kafka;
        let tls = k.tls.as_ref().unwrap();
        assert_eq!(
            (tls.cert_path.as_deref(), tls.key_path.as_deref()),
            (Some(Path::new("/c")), Some(Path::new("/k")))
        );
        assert!(tls.insecure_skip_verify && tls.ca_cert_path.is_none());
        let sasl = k.sasl.as_ref().unwrap();
        assert_eq!(
            (
                sasl.mechanism,
                sasl.username.as_str(),
                sasl.password.expose()
            ),
            (SaslMechanism::ScramSha512, "svc", "pw")
        );
        assert_eq!(
            loaded.warnings,
            vec![
                "kafka.tls.insecure_skip_verify is true: broker certificates will not be verified"
            ]
        );
        assert!(
            !format!("{:?}", loaded.config).contains("pw\""),
            "password must not appear in Debug"
        );

        assert_error(
            &kafka("  security_protocol: SSL\n  tls: { cert_path: /c }\n"),
            "kafka.tls.key_path is required when kafka.tls.cert_path is set",
        );
        assert_error(
            &kafka("  security_protocol: SSL\n  tls: { ca_cert_path: \"\" }\n"),
            "kafka.tls.ca_cert_path: must not be empty",
        );
        assert_error(
            &kafka("  security_protocol: SASL_PLAINTEXT\n  sasl: { mechanism: GSSAPI, username: u, password: p }\n"),
            "kafka.sasl.mechanism: unknown value \"GSSAPI\" (expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
        );
        assert_error(
            &kafka("  security_protocol: SASL_PLAINTEXT\n  sasl: { mechanism: PLAIN, username: \"\", password: p }\n"),
            "kafka.sasl.username: must not be empty",
        );
        assert_error(
            &kafka(
                "  security_protocol: SASL_PLAINTEXT\n  sasl: { mechanism: PLAIN, username: u }\n",
            ),
            "missing required key \"password\" at kafka.sasl",
        );
        assert_error(
            &kafka("  security_protocol: TLS\n"),
            "kafka.security_protocol: unknown value \"TLS\" (expected one of: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
        );
    }

    // --- listen security ----------------------------------------------------------

    fn security(body: &str) -> String {
        listen(&format!("  address: h:1\n  security:\n{body}"))
    }

    #[test]
    fn listen_security_consistency() {
        assert_error(
            &security("    protocol: SSL\n"),
            "listen.security.tls is required when listen.security.protocol is SSL",
        );
        assert_eq!(
            errors(&security("    protocol: SASL_SSL\n")),
            vec![
                "listen.security.tls is required when listen.security.protocol is SASL_SSL",
                "listen.security.sasl is required when listen.security.protocol is SASL_SSL",
            ]
        );
        assert_error(
            &security("    sasl: { enabled_mechanisms: [PLAIN], credentials: { users: { a: b } } }\n"),
            "listen.security.sasl is set but listen.security.protocol is PLAINTEXT: use SASL_PLAINTEXT or SASL_SSL or remove listen.security.sasl",
        );
        assert_error(
            &security("    tls: { cert_path: /c, key_path: /k }\n"),
            "listen.security.tls is set but listen.security.protocol is PLAINTEXT: use SSL or SASL_SSL or remove listen.security.tls",
        );
        assert_error(
            &security("    protocol: SSL\n    tls: { cert_path: \"\", key_path: /k }\n"),
            "listen.security.tls.cert_path: must not be empty",
        );
        assert_error(
            &security("    protocol: SSL\n    tls: { cert_path: /c }\n"),
            "missing required key \"key_path\" at listen.security.tls",
        );
        assert_error(
            &security("    protocol: SSL\n    tls: { cert_path: /c, key_path: /k, client_auth: true }\n"),
            "listen.security.tls.client_auth: requires ca_cert_path, the CA that signs client certificates",
        );
        let c = ok(&security("    protocol: SSL\n    tls: { cert_path: /c, key_path: /k, ca_cert_path: /ca, client_auth: true }\n"));
        let tls = c.listen.security.tls.as_ref().unwrap();
        assert!(tls.client_auth);
        assert_eq!(tls.ca_cert_path.as_deref(), Some(Path::new("/ca")));
        assert_eq!(
            c.unsupported_features(),
            vec!["listen.security.protocol SSL is not supported yet by this version of kpr-proxy: refusing to start rather than ignoring it"]
        );
    }

    #[test]
    fn listen_sasl_fields() {
        let sasl =
            |body: &str| security(&format!("    protocol: SASL_PLAINTEXT\n    sasl:\n{body}"));
        assert_error(
            &sasl("      enabled_mechanisms: [PLAIN, OAUTHBEARER]\n      credentials: { users: { a: b } }\n"),
            "listen.security.sasl.enabled_mechanisms[1]: unknown value \"OAUTHBEARER\" (expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
        );
        assert_error(
            &sasl("      enabled_mechanisms: []\n      credentials: { users: { a: b } }\n"),
            "listen.security.sasl.enabled_mechanisms: must name at least one mechanism",
        );
        assert_error(
            &sasl("      enabled_mechanisms: [PLAIN, PLAIN]\n      credentials: { users: { a: b } }\n"),
            "listen.security.sasl.enabled_mechanisms[1]: PLAIN is listed twice",
        );
        assert_error(
            &sasl("      enabled_mechanisms: [PLAIN]\n      credentials: { users: {} }\n"),
            "listen.security.sasl.credentials.users: must name at least one user",
        );
        assert_error(
            &sasl(
                "      enabled_mechanisms: [PLAIN]\n      credentials: { users: { bob: \"\" } }\n",
            ),
            "listen.security.sasl.credentials.users.bob: must not be empty",
        );
        assert_error(
            &sasl("      enabled_mechanisms: [PLAIN]\n"),
            "missing required key \"credentials\" at listen.security.sasl",
        );
        let c = ok(&sasl("      enabled_mechanisms: [SCRAM-SHA-256, PLAIN]\n      credentials: { users: { zed: z, amy: a } }\n"));
        let s = c.listen.security.sasl.unwrap();
        assert_eq!(
            s.enabled_mechanisms,
            vec![SaslMechanism::ScramSha256, SaslMechanism::Plain]
        );
        let names: Vec<&str> = s.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["zed", "amy"], "file order kept");
    }

    // --- mapping ----------------------------------------------------------------

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

    // --- other sections ------------------------------------------------------------

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

    #[test]
    fn yaml_merge_keys_work() {
        let c = ok(&mapping(
            "  topics:\n    a: &r { virtual_partitions: 20, physical_partitions: 2 }\n    b: { <<: *r }\n",
        ));
        assert_eq!(c.mapping.rule_for("b").unwrap().virtual_partitions, 20);
    }

    // --- files --------------------------------------------------------------------------

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = std::env::temp_dir().join(format!("kpr-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.yaml");
        std::fs::write(&file, "listen:\n  adress: x\n").unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(e.file(), Some(file.as_path()));
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!(
                "{}: 3 problems in the configuration:\n  unknown key \"adress\" at listen",
                file.display()
            )),
            "{shown}"
        );
        let missing = dir.join("missing.yaml");
        let shown = load(&missing).unwrap_err().to_string();
        assert!(
            shown.starts_with(&format!(
                "{}: cannot read the configuration file: ",
                missing.display()
            )),
            "{shown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_example_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let env = env_of(&[
            ("APP_USER_PASSWORD", "a"),
            ("ADMIN_USER_PASSWORD", "b"),
            ("KAFKA_PASSWORD", "c"),
        ]);
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = parse_str(&text, &env) {
                    panic!("{}: {e}", path.display());
                }
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "dev.yaml",
                "kpr-proxy.yaml",
                "per-topic.yaml",
                "production-sasl-tls.yaml"
            ]
        );
    }

    #[test]
    fn examples_mean_what_their_comments_say() {
        let read = |name: &str| {
            let env = env_of(&[
                ("APP_USER_PASSWORD", "a"),
                ("ADMIN_USER_PASSWORD", "b"),
                ("KAFKA_PASSWORD", "c"),
            ]);
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("config")
                    .join(name),
            )
            .unwrap();
            parse_str(&text, &env).unwrap().config
        };
        let per_topic = read("per-topic.yaml");
        assert_eq!(per_topic.mapping.rule_for("events").unwrap().ratio(), 50);
        assert!(per_topic
            .mapping
            .rule_for("config")
            .unwrap()
            .is_passthrough());
        assert_eq!(
            per_topic
                .mapping
                .rule_for("audit.login")
                .unwrap()
                .virtual_partitions,
            50
        );
        assert_eq!(
            per_topic
                .mapping
                .rule_for("orders")
                .unwrap()
                .virtual_partitions,
            100
        );

        let prod = read("production-sasl-tls.yaml");
        assert_eq!(prod.unsupported_features().len(), 2);
        let users = &prod.listen.security.sasl.as_ref().unwrap().users;
        assert_eq!(users[0].password.expose(), "a");
        assert_eq!(prod.kafka.sasl.as_ref().unwrap().password.expose(), "c");

        for name in ["kpr-proxy.yaml", "dev.yaml", "per-topic.yaml"] {
            assert!(
                read(name).unsupported_features().is_empty(),
                "{name} must start"
            );
        }
        assert_eq!(read("dev.yaml").logging.level, LevelFilter::Debug);
    }
}
