//! `kafka.sasl.mode: passthrough` across sections: a client's upstream
//! connections log in as that client, so the proxy must learn each
//! client's password (only PLAIN toward the proxy gives it; SCRAM proves a
//! password without revealing it), clients must log in at all (`listen` is
//! SASL), and the proxy must log in upstream (`kafka` is SASL, which
//! `kafka.sasl` being set already requires). Each refusal names why.

use serde_yaml::{Mapping, Value};

use super::{get, Decoder};
use crate::config::model::{KafkaConfig, ListenConfig, SaslMechanism, SaslMode};

/// Whether the (expanded) tree asks for passthrough, read before the
/// sections are decoded; a bad value is reported by `kafka`'s decode.
pub(super) fn asked(root: &Mapping) -> bool {
    let mode = get(root, "kafka")
        .and_then(Value::as_mapping)
        .and_then(|k| get(k, "sasl"))
        .and_then(Value::as_mapping)
        .and_then(|s| get(s, "mode"));
    mode.and_then(Value::as_str) == Some("passthrough")
}

impl Decoder {
    pub(super) fn check_passthrough(&mut self, listen: &ListenConfig, kafka: &KafkaConfig) {
        let Some(sasl) = kafka.sasl.as_ref().filter(|s| s.mode == SaslMode::Passthrough) else { return };
        let why = "kafka.sasl.mode passthrough logs each client in to the brokers with the password it gave the proxy";
        let protocol = listen.security.protocol;
        if !protocol.uses_sasl() {
            self.err(format!(
                "{why}, but listen.security.protocol is {protocol}: clients give none; use SASL_SSL (or SASL_PLAINTEXT) with PLAIN"
            ));
        }
        if sasl.mechanism == SaslMechanism::OAuthBearer {
            // TODO(issue 10, OAUTHBEARER relay): relay a client's token
            // upstream when both sides speak OAUTHBEARER.
            self.err(format!(
                "{why}; kafka.sasl.mechanism OAUTHBEARER takes a token, not a password, and relaying clients' tokens is not supported yet: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ));
        }
        let Some(client) = &listen.security.sasl else { return };
        for mechanism in &client.enabled_mechanisms {
            let problem = match mechanism {
                SaslMechanism::Plain => continue,
                SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                    "with SCRAM the client proves its password without sending it, so the proxy never learns it"
                }
                // TODO(issue 10, OAUTHBEARER relay): allow it once tokens
                // are relayed (`Session::upstream_identity`).
                SaslMechanism::OAuthBearer => "relaying clients' tokens is not supported yet",
            };
            self.err(format!(
                "listen.security.sasl.enabled_mechanisms {mechanism} cannot be used with kafka.sasl.mode passthrough: {problem}; enable only PLAIN (over SASL_SSL)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{assert_error, errors, ok};
    use crate::config::{SaslMechanism, SaslMode};

    fn config(listen_security: &str, kafka_sasl: &str) -> String {
        format!(
            "listen:\n  address: h:1\n  security:\n{listen_security}kafka:\n  bootstrap_servers: [\"k:1\"]\n  security_protocol: SASL_SSL\n  sasl: {{ {kafka_sasl} }}\n"
        )
    }

    const PLAIN_CLIENTS: &str = "    protocol: SASL_SSL\n    tls: { cert_path: c, key_path: k }\n    sasl: { enabled_mechanisms: [PLAIN] }\n";
    const SERVICE: &str = "mode: passthrough, mechanism: SCRAM-SHA-512, username: svc, password: pw";

    #[test]
    fn passthrough_with_plain_clients_needs_no_user_list() {
        let c = ok(&config(PLAIN_CLIENTS, SERVICE));
        assert!(c.unsupported_features().is_empty());
        let sasl = c.kafka.sasl.unwrap();
        assert_eq!((sasl.mode, sasl.mechanism, sasl.username.as_str()), (SaslMode::Passthrough, SaslMechanism::ScramSha512, "svc"));
        assert!(c.listen.security.sasl.unwrap().users.is_empty());
        // The default is the service identity, and a user list is required then.
        let service = config(
            "    protocol: SASL_SSL\n    tls: { cert_path: c, key_path: k }\n    sasl: { enabled_mechanisms: [PLAIN], credentials: { users: { a: b } } }\n",
            "mechanism: PLAIN, username: svc, password: pw",
        );
        assert_eq!(ok(&service).kafka.sasl.unwrap().mode, SaslMode::Service);
        assert_error(&config(PLAIN_CLIENTS, "mode: service, mechanism: PLAIN, username: svc, password: pw"), "missing required key \"credentials\" at listen.security.sasl");
        let unknown = errors(&config(PLAIN_CLIENTS, "mode: relay, mechanism: PLAIN, username: svc, password: pw"));
        assert_eq!(unknown.last().unwrap(), "kafka.sasl.mode: unknown value \"relay\" (expected one of: service, passthrough)");
    }

    #[test]
    fn passthrough_refuses_what_cannot_be_relayed() {
        let scram_clients = PLAIN_CLIENTS.replace("[PLAIN]", "[PLAIN, SCRAM-SHA-256]");
        assert_error(
            &config(&scram_clients, SERVICE),
            "listen.security.sasl.enabled_mechanisms SCRAM-SHA-256 cannot be used with kafka.sasl.mode passthrough: with SCRAM the client proves its password without sending it, so the proxy never learns it; enable only PLAIN (over SASL_SSL)",
        );
        assert_error(
            &config("    protocol: SSL\n    tls: { cert_path: c, key_path: k }\n", SERVICE),
            "kafka.sasl.mode passthrough logs each client in to the brokers with the password it gave the proxy, but listen.security.protocol is SSL: clients give none; use SASL_SSL (or SASL_PLAINTEXT) with PLAIN",
        );
        assert_error(
            &config(&PLAIN_CLIENTS.replace("[PLAIN] }", "[PLAIN], credentials: { users: { a: b } } }"), SERVICE),
            "listen.security.sasl.credentials is set but kafka.sasl.mode is passthrough: the brokers check the clients' passwords; remove it",
        );
        let oauth = errors(&config(PLAIN_CLIENTS, "mode: passthrough, mechanism: OAUTHBEARER, token_path: /t"));
        assert!(oauth.iter().any(|e| e.contains("relaying clients' tokens is not supported yet")), "{oauth:?}");
        // Not SASL toward the cluster: kafka.sasl itself is refused.
        let plaintext = config(PLAIN_CLIENTS, SERVICE).replace("security_protocol: SASL_SSL", "security_protocol: SSL");
        assert_error(&plaintext, "kafka.sasl is set but kafka.security_protocol is SSL: use SASL_SSL or remove kafka.sasl");
    }
}
