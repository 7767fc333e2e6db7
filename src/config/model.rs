//! The configuration's sections as the rest of the proxy reads them, with
//! their defaults. Every value here has been validated by `decode`, so
//! readers need not check again (addresses parse, rules are consistent).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use super::addresses::split_host_port;
use crate::remap::rules::MappingRules;

pub use crate::logging::LogFormat;

/// `listen.max_connections` when not set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `listen.max_frame_bytes` when not set: 100 MiB, as Kafka's `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;
/// `listen.queued_max_request_bytes` when not set: 256 MiB. Kafka's
/// `queued.max.request.bytes` is unbounded by default; a proxy holds every
/// client's partial frames in one process, so it needs a bound. 256 MiB
/// holds two frames of the default `max_frame_bytes` (100 MiB) at once and
/// many ordinary ones, and fits a small container.
pub const DEFAULT_QUEUED_MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;
/// `listen.max_buffered_response_bytes` when not set: 256 MiB, five
/// fetches at Kafka's default `fetch.max.bytes` (50 MiB) waiting for slow
/// clients.
pub const DEFAULT_MAX_BUFFERED_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// `listen.connections_max_idle_ms` when not set: 10 minutes, as Kafka's
/// `connections.max.idle.ms`.
pub const DEFAULT_CONNECTIONS_MAX_IDLE_MS: u64 = 600_000;
/// `listen.frame_timeout_ms` when not set: a started request must be
/// complete within 30 s (Kafka's `request.timeout.ms` default for clients).
pub const DEFAULT_FRAME_TIMEOUT_MS: u64 = 30_000;
/// `listen.handshake_timeout_ms` when not set: TLS handshake and SASL login
/// within 10 s of connecting.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
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
    /// Defaults to `address`, or to this machine's canonical host name and
    /// `address`'s port when `address` binds all interfaces (as Kafka does).
    pub advertised_address: String,
    /// Where `advertised_address` comes from, for the start-up log line.
    pub advertised_source: AdvertisedSource,
    pub max_connections: usize,
    /// The largest request frame accepted from a client (size prefix excluded).
    pub max_frame_bytes: usize,
    /// Budget for request bytes buffered over all client connections (Kafka's `queued.max.request.bytes`).
    pub queued_max_request_bytes: usize,
    /// Budget for response bytes queued toward slow clients, over all connections.
    pub max_buffered_response_bytes: usize,
    /// A client connection without requests this long is closed (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// A started request frame must be complete within this.
    pub frame_timeout_ms: u64,
    /// TLS handshake and SASL authentication must be done within this of connecting.
    pub handshake_timeout_ms: u64,
    pub security: ListenSecurity,
}

impl ListenConfig {
    /// The advertised address split into host (without IPv6 brackets) and port.
    pub fn advertised_host_port(&self) -> (&str, u16) {
        split_host_port(&self.advertised_address).expect("validated when loaded")
    }

    /// What is advertised and why, for the start-up log.
    pub fn describe_advertised(&self) -> String {
        let why = match self.advertised_source {
            AdvertisedSource::Configured => "listen.advertised_address",
            AdvertisedSource::ListenAddress => "listen.address; set listen.advertised_address to override",
            AdvertisedSource::CanonicalHostName => {
                "listen.address binds all interfaces; set listen.advertised_address to override"
            }
        };
        format!("Advertising {} ({why})", self.advertised_address)
    }
}

/// Where the advertised address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvertisedSource {
    /// `listen.advertised_address`.
    Configured,
    /// `listen.address`, which names one interface.
    ListenAddress,
    /// `listen.address` binds all interfaces: this machine's canonical host
    /// name with its port (Kafka's default for a listener without a host).
    CanonicalHostName,
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
    /// `credentials.users`, in file order (empty when only OAUTHBEARER is
    /// enabled).
    pub users: Vec<SaslUser>,
    /// `oauthbearer`: set exactly when OAUTHBEARER is enabled.
    pub oauthbearer: Option<OAuthBearerValidation>,
    /// How long an authenticated session lasts before the client must
    /// re-authenticate (KIP-368); 0: no limit.
    pub session_lifetime_ms: u64,
}

/// `listen.security.sasl.oauthbearer.clock_skew_ms` when not set: 30 s, as Kafka's
/// `sasl.oauthbearer.clock.skew.seconds`.
pub const DEFAULT_CLOCK_SKEW_MS: u64 = 30_000;
/// The largest accepted `clock_skew_ms`: beyond an hour, expiry would
/// mean little.
pub const MAX_CLOCK_SKEW_MS: u64 = 3_600_000;

/// `listen.security.sasl.oauthbearer`: what a client's JWT must satisfy
/// (see `auth::jwt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthBearerValidation {
    /// The JWKS file holding the keys tokens are signed with; re-read when
    /// it changes.
    pub jwks_path: PathBuf,
    /// The `iss` claim a token must carry.
    pub issuer: String,
    /// A value the token's `aud` claim must contain.
    pub audience: String,
    /// How far `exp` and `nbf` may be off the proxy's clock.
    pub clock_skew_ms: u64,
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

/// `kafka.sasl`: how the proxy authenticates to the brokers. With
/// OAUTHBEARER, `token_path` is set and `username` and `password` are
/// empty; with the other mechanisms, `token_path` is `None`.
#[derive(Debug, Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
    /// The file holding the bearer token (see `auth::token_file`).
    pub token_path: Option<PathBuf>,
    /// `kafka.sasl.mode`: whose identity clients' upstream connections
    /// log in with. The proxy's own connections always use this one.
    pub mode: SaslMode,
}

/// `kafka.sasl.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaslMode {
    /// Every upstream connection logs in as the proxy's service identity.
    #[default]
    Service,
    /// A client's upstream connections log in as that client, with the
    /// PLAIN credentials it gave the proxy; the brokers decide.
    Passthrough,
}

impl SaslMode {
    pub(super) const ALL: &'static [(&'static str, SaslMode)] =
        &[("service", SaslMode::Service), ("passthrough", SaslMode::Passthrough)];
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
    pub(super) const ALL: &'static [(&'static str, SecurityProtocol)] = &[
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
    OAuthBearer,
}

impl SaslMechanism {
    pub(super) const ALL: &'static [(&'static str, SaslMechanism)] = &[
        ("PLAIN", SaslMechanism::Plain),
        ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
        ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
        ("OAUTHBEARER", SaslMechanism::OAuthBearer),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Whether the mechanism checks a user name and password (from
    /// `credentials.users` toward clients, `username`/`password` upstream).
    pub fn uses_password(self) -> bool {
        !matches!(self, SaslMechanism::OAuthBearer)
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

// Which halves of `security` this build carries out (issue 10 lands them
// one by one; a half that is not ready is refused, never ignored).
const LISTEN_TLS_READY: bool = true;
const LISTEN_SASL_READY: bool = true;
const KAFKA_TLS_READY: bool = true;
const KAFKA_SASL_READY: bool = true;
const OAUTHBEARER_READY: bool = true;

impl Config {
    /// Features the configuration asks for that this version does not
    /// implement. `main` refuses to start when this is not empty: silently
    /// running without TLS or SASL that was asked for would be worse.
    pub fn unsupported_features(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut refuse = |asked: bool, what: &str| {
            if asked {
                out.push(format!(
                    "{what} is not supported yet by this version of kpr-proxy: refusing to start rather than ignoring it"
                ));
            }
        };
        let (listen, kafka) = (self.listen.security.protocol, self.kafka.security_protocol);
        refuse(!LISTEN_TLS_READY && listen.uses_tls(), &format!("listen.security.protocol {listen} (TLS toward clients)"));
        refuse(!LISTEN_SASL_READY && listen.uses_sasl(), &format!("listen.security.protocol {listen} (SASL toward clients)"));
        refuse(!KAFKA_TLS_READY && kafka.uses_tls(), &format!("kafka.security_protocol {kafka} (TLS toward the cluster)"));
        refuse(!KAFKA_SASL_READY && kafka.uses_sasl(), &format!("kafka.security_protocol {kafka} (SASL toward the cluster)"));
        let listen_oauth = self.listen.security.sasl.as_ref().is_some_and(|s| s.enabled_mechanisms.contains(&SaslMechanism::OAuthBearer));
        refuse(!OAUTHBEARER_READY && listen_oauth, "listen.security.sasl.enabled_mechanisms OAUTHBEARER");
        let kafka_oauth = self.kafka.sasl.as_ref().is_some_and(|s| s.mechanism == SaslMechanism::OAuthBearer);
        refuse(!OAUTHBEARER_READY && kafka_oauth, "kafka.sasl.mechanism OAUTHBEARER");
        out
    }

    /// One line per mapping rule; see [`MappingRules::describe_mapping`].
    pub fn describe_mapping(&self) -> Vec<String> {
        self.mapping.describe_mapping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{ok, MINIMAL};

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
}
