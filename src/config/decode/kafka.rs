//! The `kafka` section: the upstream cluster, its timeouts, the proxy's own
//! topics and how the proxy authenticates to the brokers.

use serde_yaml::{Mapping, Value};

use super::{get, kind, Decoder};
use crate::config::model::{
    KafkaConfig, KafkaSasl, KafkaTls, SaslMechanism, SaslMode, Secret, SecurityProtocol,
    DEFAULT_CONNECTION_TIMEOUT_MS, DEFAULT_DERIVED_OFFSET_REFRESH_INTERVAL_MS,
    DEFAULT_METADATA_REFRESH_INTERVAL_MS, DEFAULT_PRODUCER_ID_IDLE_MS, DEFAULT_PRODUCER_ID_TOPIC,
    DEFAULT_REQUEST_TIMEOUT_MS,
};

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
const KAFKA_SASL_KEYS: &[&str] = &["mode", "mechanism", "username", "password", "token_path"];

impl Decoder {
    pub(super) fn kafka(&mut self, v: &Value) -> Option<KafkaConfig> {
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
                        "INSECURE: kafka.tls.insecure_skip_verify is true: broker certificates and host names will not be verified, so anyone on the path can read and change the traffic".to_string(),
                    );
                }
                Some(tls)
            }
            None => None,
        };
        let sasl = match self.opt_section(m, path, "sasl", KAFKA_SASL_KEYS) {
            Some(s) => Some(self.kafka_sasl(s)?),
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

    /// `kafka.sasl`: a user name and password, or with OAUTHBEARER a
    /// token file; the fields of the other kind are refused.
    fn kafka_sasl(&mut self, s: &Mapping) -> Option<KafkaSasl> {
        let p = "kafka.sasl";
        let mechanism = self
            .required(s, p, "mechanism")
            .and_then(|v| self.choice(v, "kafka.sasl.mechanism", SaslMechanism::ALL));
        let mode = match get(s, "mode") {
            Some(v) => self.choice(v, "kafka.sasl.mode", SaslMode::ALL)?,
            None => SaslMode::Service,
        };
        if mechanism == Some(SaslMechanism::OAuthBearer) {
            for field in ["username", "password"] {
                if get(s, field).is_some() {
                    self.err(format!(
                        "kafka.sasl.{field}: not used with mechanism OAUTHBEARER (the token comes from kafka.sasl.token_path): remove it"
                    ));
                }
            }
            let token_path = match get(s, "token_path") {
                Some(v) => self.path_buf(v, "kafka.sasl.token_path"),
                None => {
                    self.err(
                        "missing required key \"token_path\" at kafka.sasl (OAUTHBEARER reads its token from a file)"
                            .to_string(),
                    );
                    None
                }
            };
            return Some(KafkaSasl {
                mechanism: SaslMechanism::OAuthBearer,
                username: String::new(),
                password: Secret::new(""),
                token_path: Some(token_path?),
                mode,
            });
        }
        if mechanism.is_some() && get(s, "token_path").is_some() {
            self.err("kafka.sasl.token_path: only used with mechanism OAUTHBEARER: remove it".to_string());
        }
        let username = self
            .required(s, p, "username")
            .and_then(|v| self.non_empty(v, "kafka.sasl.username"));
        let password = self
            .required(s, p, "password")
            .and_then(|v| self.string(v, "kafka.sasl.password"));
        Some(KafkaSasl {
            mechanism: mechanism?,
            username: username?,
            password: Secret::new(password?),
            token_path: None,
            mode,
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::test_support::{assert_error, errors, ok, parse};
    use crate::config::SaslMechanism;

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
        // TLS toward the cluster is carried out.
        assert!(c.unsupported_features().is_empty());
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
                "INSECURE: kafka.tls.insecure_skip_verify is true: broker certificates and host names will not be verified, so anyone on the path can read and change the traffic"
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
            "kafka.sasl.mechanism: unknown value \"GSSAPI\" (expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)",
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

    fn upstream_sasl(fields: &str) -> String {
        kafka(&format!("  security_protocol: SASL_PLAINTEXT\n  sasl: {{ {fields} }}\n"))
    }

    #[test]
    fn kafka_oauthbearer_takes_a_token_file() {
        let c = ok(&upstream_sasl("mechanism: OAUTHBEARER, token_path: /run/token"));
        let sasl = c.kafka.sasl.unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::OAuthBearer);
        assert_eq!(sasl.token_path.as_deref(), Some(Path::new("/run/token")));
        assert_eq!((sasl.username.as_str(), sasl.password.expose()), ("", ""));
        let c = ok(&upstream_sasl("mechanism: PLAIN, username: u, password: p"));
        assert_eq!(c.kafka.sasl.unwrap().token_path, None);

        assert_error(
            &upstream_sasl("mechanism: OAUTHBEARER"),
            "missing required key \"token_path\" at kafka.sasl (OAUTHBEARER reads its token from a file)",
        );
        assert_error(
            &upstream_sasl("mechanism: OAUTHBEARER, token_path: \"\""),
            "kafka.sasl.token_path: must not be empty",
        );
        assert_eq!(
            errors(&upstream_sasl("mechanism: OAUTHBEARER, token_path: /t, username: u, password: p")),
            vec![
                "kafka.sasl.username: not used with mechanism OAUTHBEARER (the token comes from kafka.sasl.token_path): remove it",
                "kafka.sasl.password: not used with mechanism OAUTHBEARER (the token comes from kafka.sasl.token_path): remove it",
            ]
        );
        assert_error(
            &upstream_sasl("mechanism: SCRAM-SHA-256, username: u, password: p, token_path: /t"),
            "kafka.sasl.token_path: only used with mechanism OAUTHBEARER: remove it",
        );
    }
}
