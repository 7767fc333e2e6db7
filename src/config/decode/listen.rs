//! The `listen` section: where clients connect, and how they are secured.

use serde_yaml::{Mapping, Value};

use super::{get, kind, Decoder};
use crate::config::addresses::{is_wildcard_host, split_host_port};
use crate::config::errors::{child, key_text};
use crate::config::host_name;
use crate::config::model::{
    AdvertisedSource, ListenConfig, ListenSasl, ListenSecurity, ListenTls, OAuthBearerValidation, SaslMechanism,
    SaslUser, Secret, SecurityProtocol, DEFAULT_CLOCK_SKEW_MS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_CONNECTIONS_MAX_IDLE_MS, DEFAULT_FRAME_TIMEOUT_MS, DEFAULT_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_MAX_BUFFERED_RESPONSE_BYTES, DEFAULT_MAX_FRAME_BYTES, DEFAULT_QUEUED_MAX_REQUEST_BYTES,
    MAX_CLOCK_SKEW_MS, MIN_MAX_FRAME_BYTES,
};

const LISTEN_KEYS: &[&str] = &[
    "address",
    "advertised_address",
    "max_connections",
    "max_frame_bytes",
    "queued_max_request_bytes",
    "max_buffered_response_bytes",
    "connections_max_idle_ms",
    "frame_timeout_ms",
    "handshake_timeout_ms",
    "security",
];
/// The largest accepted timeout: a day (beyond that, no limit in practice).
const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
const LISTEN_SECURITY_KEYS: &[&str] = &["protocol", "tls", "sasl"];
const LISTEN_TLS_KEYS: &[&str] = &["cert_path", "key_path", "ca_cert_path", "client_auth"];
const LISTEN_SASL_KEYS: &[&str] = &["enabled_mechanisms", "credentials", "oauthbearer", "session_lifetime_ms"];
const OAUTHBEARER_KEYS: &[&str] = &["jwks_path", "issuer", "audience", "clock_skew_ms"];
const CREDENTIALS_KEYS: &[&str] = &["users"];

impl Decoder {
    /// `listen.security.tls.client_auth`: Kafka's `ssl.client.auth` words
    /// (`required`, `none`) or a boolean. `requested` (a certificate checked
    /// only when offered) is refused rather than taken as either.
    fn client_auth(&mut self, t: &Mapping, p: &str) -> bool {
        match get(t, "client_auth") {
            Some(Value::String(s)) if s.trim() == "required" => true,
            Some(Value::String(s)) if s.trim() == "none" => false,
            Some(Value::String(s)) if s.trim() == "requested" => {
                self.err(format!("{p}.client_auth: requested is not supported (use required or none)"));
                false
            }
            _ => self.opt_bool(t, p, "client_auth"),
        }
    }

    /// The advertised address when `listen.advertised_address` is not set:
    /// `listen.address` itself, or, when that binds all interfaces, this
    /// machine's canonical host name with its port, as Kafka advertises a
    /// listener without a host (see `host_name`).
    fn default_advertised(&mut self, addr: &str) -> Option<(String, AdvertisedSource)> {
        let (host, port) = split_host_port(addr).ok()?;
        if !is_wildcard_host(host) {
            return Some((addr.to_string(), AdvertisedSource::ListenAddress));
        }
        let named = host_name::canonical_host_name().and_then(|name| {
            let advertised = if name.contains(':') { format!("[{name}]:{port}") } else { format!("{name}:{port}") };
            match split_host_port(&advertised) {
                Ok(_) => Ok(advertised),
                Err(e) => Err(format!("the machine's host name {name:?} cannot be advertised: {e}")),
            }
        });
        match named {
            Ok(advertised) => Some((advertised, AdvertisedSource::CanonicalHostName)),
            Err(e) => {
                self.err(format!(
                    "listen.advertised_address is required: listen.address binds all interfaces ({addr}) \
                     and {e}"
                ));
                None
            }
        }
    }

    pub(super) fn listen(&mut self, v: &Value) -> Option<ListenConfig> {
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
                    Some((adv, AdvertisedSource::Configured))
                }),
            None => address.as_ref().and_then(|addr| self.default_advertised(addr)),
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
        let budget = |d: &mut Self, key, default: usize| d.opt_uint(m, path, key, MIN_MAX_FRAME_BYTES as u64, u64::from(u32::MAX) * 16, default as u64) as usize;
        let queued_max_request_bytes = budget(self, "queued_max_request_bytes", DEFAULT_QUEUED_MAX_REQUEST_BYTES);
        let max_buffered_response_bytes = budget(self, "max_buffered_response_bytes", DEFAULT_MAX_BUFFERED_RESPONSE_BYTES);
        if max_frame_bytes as usize > queued_max_request_bytes {
            self.err(format!(
                "listen.max_frame_bytes ({max_frame_bytes}) exceeds listen.queued_max_request_bytes ({queued_max_request_bytes}): \
                 a frame that large could never be buffered; raise the budget or lower max_frame_bytes"
            ));
        }
        let timeout = |d: &mut Self, key, default| d.opt_uint(m, path, key, 1, MAX_TIMEOUT_MS, default);
        let connections_max_idle_ms = timeout(self, "connections_max_idle_ms", DEFAULT_CONNECTIONS_MAX_IDLE_MS);
        let frame_timeout_ms = timeout(self, "frame_timeout_ms", DEFAULT_FRAME_TIMEOUT_MS);
        let handshake_timeout_ms = timeout(self, "handshake_timeout_ms", DEFAULT_HANDSHAKE_TIMEOUT_MS);
        let security = match get(m, "security") {
            Some(v) => self.listen_security(v)?,
            None => ListenSecurity::default(),
        };
        let advertised = advertised?;
        Some(ListenConfig {
            address: address?,
            advertised_address: advertised.0,
            advertised_source: advertised.1,
            max_connections: max_connections as usize,
            max_frame_bytes: max_frame_bytes as usize,
            queued_max_request_bytes,
            max_buffered_response_bytes,
            connections_max_idle_ms,
            frame_timeout_ms,
            handshake_timeout_ms,
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
                let client_auth = self.client_auth(t, p);
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
        let users = self.sasl_credentials(m, &mechanisms);
        let oauthbearer = self.oauthbearer_validation(m, &mechanisms);
        let session_lifetime_ms = self.opt_uint(m, "listen.security.sasl", "session_lifetime_ms", 0, i64::MAX as u64, 0);
        Some(ListenSasl {
            enabled_mechanisms: mechanisms,
            users,
            oauthbearer,
            session_lifetime_ms,
        })
    }

    /// `credentials.users`: required when a mechanism checks passwords,
    /// refused when none does (it would be silently ignored).
    fn sasl_credentials(&mut self, m: &Mapping, mechanisms: &[SaslMechanism]) -> Vec<SaslUser> {
        let path = "listen.security.sasl";
        let mut users = Vec::new();
        if self.passthrough {
            // The brokers check the passwords; a list here would be ignored.
            if get(m, "credentials").is_some() {
                self.err(
                    "listen.security.sasl.credentials is set but kafka.sasl.mode is passthrough: the brokers check the clients' passwords; remove it"
                        .to_string(),
                );
            }
            return users;
        }
        let checks_passwords = mechanisms.iter().any(|mech| mech.uses_password());
        if !checks_passwords && !mechanisms.is_empty() && get(m, "credentials").is_some() {
            self.err(
                "listen.security.sasl.credentials is set but no mechanism that checks passwords (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) is enabled"
                    .to_string(),
            );
            return users;
        }
        let creds = if checks_passwords || mechanisms.is_empty() {
            self.required(m, path, "credentials")
        } else {
            None
        };
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
                                password: Secret::new(pw),
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
        users
    }

    /// `oauthbearer`: required exactly when OAUTHBEARER is enabled.
    fn oauthbearer_validation(
        &mut self,
        m: &Mapping,
        mechanisms: &[SaslMechanism],
    ) -> Option<OAuthBearerValidation> {
        let path = "listen.security.sasl.oauthbearer";
        let enabled = mechanisms.contains(&SaslMechanism::OAuthBearer);
        match (enabled, get(m, "oauthbearer").is_some()) {
            (true, false) => self.err(format!(
                "{path} is required when OAUTHBEARER is in listen.security.sasl.enabled_mechanisms"
            )),
            (false, true) => self.err(format!(
                "{path} is set but OAUTHBEARER is not in listen.security.sasl.enabled_mechanisms"
            )),
            _ => {}
        }
        if !enabled {
            return None;
        }
        let o = self.opt_section(m, "listen.security.sasl", "oauthbearer", OAUTHBEARER_KEYS)?;
        let jwks_path = self
            .required(o, path, "jwks_path")
            .and_then(|v| self.path_buf(v, &format!("{path}.jwks_path")));
        let issuer = self
            .required(o, path, "issuer")
            .and_then(|v| self.non_empty(v, &format!("{path}.issuer")));
        let audience = self
            .required(o, path, "audience")
            .and_then(|v| self.non_empty(v, &format!("{path}.audience")));
        let clock_skew_ms =
            self.opt_uint(o, path, "clock_skew_ms", 0, MAX_CLOCK_SKEW_MS, DEFAULT_CLOCK_SKEW_MS);
        Some(OAuthBearerValidation {
            jwks_path: jwks_path?,
            issuer: issuer?,
            audience: audience?,
            clock_skew_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::config::test_support::{assert_error, errors, listen, ok};
    use crate::config::{OAuthBearerValidation, SaslMechanism};

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
    fn listen_budgets_and_deadlines() {
        let c = ok(&listen("  address: \"h:1\"\n"));
        let l = &c.listen;
        assert_eq!((l.queued_max_request_bytes, l.max_buffered_response_bytes), (256 << 20, 256 << 20));
        assert_eq!((l.connections_max_idle_ms, l.frame_timeout_ms, l.handshake_timeout_ms), (600_000, 30_000, 10_000));
        let c = ok(&listen(
            "  address: \"h:1\"\n  max_frame_bytes: 1048576\n  queued_max_request_bytes: 1048576\n  \
             max_buffered_response_bytes: 2048\n  connections_max_idle_ms: 2000\n  frame_timeout_ms: 1\n  \
             handshake_timeout_ms: 86400000\n",
        ));
        let l = &c.listen;
        assert_eq!((l.max_frame_bytes, l.queued_max_request_bytes, l.max_buffered_response_bytes), (1 << 20, 1 << 20, 2048));
        assert_eq!((l.connections_max_idle_ms, l.frame_timeout_ms, l.handshake_timeout_ms), (2000, 1, 86_400_000));
        assert_error(
            &listen("  address: \"h:1\"\n  queued_max_request_bytes: 67108864\n"),
            "listen.max_frame_bytes (104857600) exceeds listen.queued_max_request_bytes (67108864): \
             a frame that large could never be buffered; raise the budget or lower max_frame_bytes",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  max_buffered_response_bytes: 1000\n"),
            "listen.max_buffered_response_bytes: must be at least 1024 (got 1000)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  connections_max_idle_ms: 0\n"),
            "listen.connections_max_idle_ms: must be at least 1 (got 0)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  frame_timeout_ms: 86400001\n"),
            "listen.frame_timeout_ms: must be at most 86400000 (got 86400001)",
        );
        assert_error(
            &listen("  address: \"h:1\"\n  handshake_timeout_ms: soon\n"),
            "listen.handshake_timeout_ms: expected a whole number, got a string",
        );
    }

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
        for (written, required) in [("required", true), ("none", false)] {
            let c = ok(&security(&format!(
                "    protocol: SSL\n    tls: {{ cert_path: /c, key_path: /k, ca_cert_path: /ca, client_auth: {written} }}\n"
            )));
            assert_eq!(c.listen.security.tls.unwrap().client_auth, required, "{written}");
        }
        assert_error(
            &security("    protocol: SSL\n    tls: { cert_path: /c, key_path: /k, ca_cert_path: /ca, client_auth: requested }\n"),
            "listen.security.tls.client_auth: requested is not supported (use required or none)",
        );
        let c = ok(&security("    protocol: SSL\n    tls: { cert_path: /c, key_path: /k, ca_cert_path: /ca, client_auth: true }\n"));
        let tls = c.listen.security.tls.as_ref().unwrap();
        assert!(tls.client_auth);
        assert_eq!(tls.ca_cert_path.as_deref(), Some(Path::new("/ca")));
        // TLS toward clients is carried out.
        assert!(c.unsupported_features().is_empty());
    }

    #[test]
    fn listen_sasl_fields() {
        let sasl =
            |body: &str| security(&format!("    protocol: SASL_PLAINTEXT\n    sasl:\n{body}"));
        assert_error(
            &sasl("      enabled_mechanisms: [PLAIN, GSSAPI]\n      credentials: { users: { a: b } }\n"),
            "listen.security.sasl.enabled_mechanisms[1]: unknown value \"GSSAPI\" (expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)",
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
        assert_eq!(s.session_lifetime_ms, 0, "no limit unless set");
        let users = "      enabled_mechanisms: [PLAIN]\n      credentials: { users: { a: b } }\n";
        let c = ok(&sasl(&format!("{users}      session_lifetime_ms: 3600000\n")));
        assert!(c.unsupported_features().is_empty(), "SASL_PLAINTEXT toward clients is built");
        assert_eq!(c.listen.security.sasl.unwrap().session_lifetime_ms, 3_600_000);
        assert_error(
            &sasl(&format!("{users}      session_lifetime_ms: -1\n")),
            "listen.security.sasl.session_lifetime_ms: must be at least 0 (got -1)",
        );
    }

    fn oauth(body: &str) -> String {
        security(&format!("    protocol: SASL_SSL\n    tls: {{ cert_path: /c, key_path: /k }}\n    sasl:\n{body}"))
    }

    const OAUTH_ONLY: &str = "      enabled_mechanisms: [OAUTHBEARER]\n";

    #[test]
    fn oauthbearer_needs_its_section_and_fields() {
        assert_error(
            &oauth(OAUTH_ONLY),
            "listen.security.sasl.oauthbearer is required when OAUTHBEARER is in listen.security.sasl.enabled_mechanisms",
        );
        assert_error(
            &oauth(&format!("{OAUTH_ONLY}      oauthbearer: {{ jwks_path: /j, audience: kafka }}\n")),
            "missing required key \"issuer\" at listen.security.sasl.oauthbearer",
        );
        assert_eq!(
            errors(&oauth(&format!("{OAUTH_ONLY}      oauthbearer: {{ issuer: \"\" }}\n"))),
            vec![
                "missing required key \"jwks_path\" at listen.security.sasl.oauthbearer",
                "listen.security.sasl.oauthbearer.issuer: must not be empty",
                "missing required key \"audience\" at listen.security.sasl.oauthbearer",
            ]
        );
        assert_error(
            &oauth(&format!("{OAUTH_ONLY}      oauthbearer: {{ jwks_path: /j, issuer: i, audience: a, clock_skew_ms: 3600001 }}\n")),
            "listen.security.sasl.oauthbearer.clock_skew_ms: must be at most 3600000 (got 3600001)",
        );
        assert_error(
            &oauth(&format!("{OAUTH_ONLY}      oauthbearer: {{ jwks_path: /j, issuer: i, audience: a, leeway: 5 }}\n")),
            "unknown key \"leeway\" at listen.security.sasl.oauthbearer (expected one of: jwks_path, issuer, audience, clock_skew_ms)",
        );
    }

    #[test]
    fn oauthbearer_section_and_credentials_only_where_used() {
        assert_error(
            &oauth("      enabled_mechanisms: [PLAIN]\n      credentials: { users: { a: b } }\n      oauthbearer: { jwks_path: /j, issuer: i, audience: a }\n"),
            "listen.security.sasl.oauthbearer is set but OAUTHBEARER is not in listen.security.sasl.enabled_mechanisms",
        );
        assert_error(
            &oauth(&format!("{OAUTH_ONLY}      credentials: {{ users: {{ a: b }} }}\n      oauthbearer: {{ jwks_path: /j, issuer: i, audience: a }}\n")),
            "listen.security.sasl.credentials is set but no mechanism that checks passwords (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) is enabled",
        );
        assert_error(
            &oauth("      enabled_mechanisms: [OAUTHBEARER, SCRAM-SHA-512]\n      oauthbearer: { jwks_path: /j, issuer: i, audience: a }\n"),
            "missing required key \"credentials\" at listen.security.sasl",
        );
    }

    #[test]
    fn oauthbearer_settings_are_kept() {
        let only = ok(&oauth(&format!("{OAUTH_ONLY}      oauthbearer: {{ jwks_path: /etc/jwks.json, issuer: \"https://idp\", audience: kafka }}\n")));
        let s = only.listen.security.sasl.unwrap();
        assert_eq!(s.enabled_mechanisms, vec![SaslMechanism::OAuthBearer]);
        assert!(s.users.is_empty());
        assert_eq!(
            s.oauthbearer,
            Some(OAuthBearerValidation {
                jwks_path: PathBuf::from("/etc/jwks.json"),
                issuer: "https://idp".to_string(),
                audience: "kafka".to_string(),
                clock_skew_ms: 30_000,
            })
        );
        let both = ok(&oauth("      enabled_mechanisms: [PLAIN, OAUTHBEARER]\n      credentials: { users: { a: b } }\n      oauthbearer: { jwks_path: /j, issuer: i, audience: a, clock_skew_ms: 0 }\n"));
        let s = both.listen.security.sasl.unwrap();
        assert_eq!(s.users.len(), 1);
        assert_eq!(s.oauthbearer.unwrap().clock_skew_ms, 0);
    }
}
