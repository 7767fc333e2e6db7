//! The proxy's SASL login to a broker (`kafka.sasl`), as a sequence of
//! request frames and the answers they get: SaslHandshake v1 naming the
//! mechanism, then SaslAuthenticate rounds (one for PLAIN; two for SCRAM,
//! whose last answer carries the broker's signature, checked by
//! `auth::scram_client`; one for OAUTHBEARER with the token of
//! `kafka.sasl.token_path`, read at each login, or two when the broker
//! refuses the token: its JSON error status, acknowledged with `\x01`, then
//! the refusal, as Kafka's `OAuthBearerSaslClient` does). KIP-152 framing: the SASL tokens travel inside
//! Kafka requests, so the exchange needs only "send this frame, here is its
//! answer", whatever carries the frames (a blocking stream for the
//! `ControlClient`, a worker's non-blocking upstream connection, TLS or
//! not). It does no I/O itself.
//!
//! Versions are the highest both sides speak, from the broker's
//! ApiVersions: SaslHandshake v1 (v0 means the unframed tokens of Kafka
//! 0.10, which the proxy does not speak) and SaslAuthenticate v0-v2.
//!
//! The broker's answer may carry `session_lifetime_ms` (KIP-368): the
//! credentials' session ends then, and the broker closes a connection that
//! sends anything but a new SaslHandshake after it. `reauthenticate_after`
//! says when the proxy starts a new login on a connection (the session's
//! upstream connections) or opens a fresh one (the `ControlClient`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::oauthbearer::{self, ClientInitialResponse};
use crate::auth::scram::ScramHash;
use crate::auth::scram_client::{ScramClient, ScramClientError};
use crate::auth::token_file::TokenFile;
use crate::config::{KafkaSasl, SaslMechanism};
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Struct, Value};
use crate::kafka::fields::{sasl_authenticate_request, sasl_authenticate_response, sasl_handshake_request, sasl_handshake_response};
use crate::kafka::message::{decode_response, encode_request, request_schema};

use super::control::CLIENT_ID;

/// Why a login to a broker failed. Every message starts with `SASL
/// authentication failed:` (the guide's troubleshooting entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The broker does not enable the configured mechanism; `offered` is
    /// what its SaslHandshake answer lists (Kafka lists its enabled ones).
    MechanismNotOffered { mechanism: SaslMechanism, offered: Vec<String> },
    /// The broker closed the connection on the SaslHandshake naming the
    /// mechanism instead of answering (Tansu does for a mechanism it does
    /// not offer; Kafka answers UNSUPPORTED_SASL_MECHANISM).
    HandshakeClosed { mechanism: SaslMechanism },
    /// The broker refused the credentials; `message` is its own words.
    Refused { code: i16, message: String },
    /// The SCRAM exchange failed on the proxy's side (the broker could not
    /// prove it knows the password, a malformed message, ...).
    Scram(ScramClientError),
    /// The OAUTHBEARER token file cannot be used (unreadable, empty, not
    /// a token): the login is not tried.
    TokenFile(String),
    /// The broker speaks no SaslHandshake v1 or SaslAuthenticate version
    /// the proxy speaks, or answered something that does not decode.
    Protocol(String),
}

impl SaslError {
    /// The step of `--check-config` that failed.
    pub fn step(&self) -> &'static str {
        match self {
            SaslError::MechanismNotOffered { .. } | SaslError::HandshakeClosed { .. } => "SASL mechanism",
            SaslError::Refused { .. }
            | SaslError::TokenFile(_)
            | SaslError::Scram(ScramClientError::ServerError(_) | ScramClientError::ServerSignatureMismatch) => {
                "SASL credentials"
            }
            SaslError::Scram(_) | SaslError::Protocol(_) => "SASL exchange",
        }
    }
}

impl fmt::Display for SaslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SASL authentication failed: ")?;
        match self {
            SaslError::MechanismNotOffered { mechanism, offered } if offered.is_empty() => {
                write!(f, "mechanism {mechanism} is not offered by the broker (it names none it offers)")
            }
            SaslError::MechanismNotOffered { mechanism, offered } => {
                write!(f, "mechanism {mechanism} is not offered by the broker; it offers: {}", offered.join(", "))
            }
            SaslError::HandshakeClosed { mechanism } => {
                write!(f, "the broker closed the connection when asked for mechanism {mechanism} (it may not offer it)")
            }
            SaslError::Refused { code, message } if message.is_empty() => write!(f, "the broker answered error code {code}"),
            SaslError::Refused { message, .. } => f.write_str(message),
            SaslError::Scram(e) => write!(f, "{e}"),
            SaslError::TokenFile(why) => f.write_str(why),
            SaslError::Protocol(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for SaslError {}

/// The SaslHandshake and SaslAuthenticate versions for one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslVersions {
    pub handshake: i16,
    pub authenticate: i16,
}

impl SaslVersions {
    /// The versions to use given the broker's ApiVersions ranges
    /// (`broker(api_key)`).
    pub fn choose(broker: impl Fn(i16) -> Option<(i16, i16)>) -> Result<SaslVersions, SaslError> {
        let pick = |api: ApiKey, at_least: i16| -> Result<i16, SaslError> {
            let ours = crate::kafka::schema::registry().supported_versions(api as i16).expect("SASL schemas are declared");
            let refuse = || SaslError::Protocol(format!("the broker offers no version of {} the proxy speaks", api.name()));
            let (min, max) = broker(api as i16).ok_or_else(refuse)?;
            let version = ours.max.min(max);
            if version < ours.min.max(min).max(at_least) {
                return Err(refuse());
            }
            Ok(version)
        };
        Ok(SaslVersions { handshake: pick(ApiKey::SaslHandshake, 1)?, authenticate: pick(ApiKey::SaslAuthenticate, 0)? })
    }
}

/// A request of the exchange, encoded with the carrier's correlation id.
pub struct SaslRequest {
    pub api: ApiKey,
    pub version: i16,
    body: Struct<'static>,
}

impl SaslRequest {
    fn new(api: ApiKey, version: i16, build: impl FnOnce(&mut Struct<'static>)) -> SaslRequest {
        let schema = request_schema(api as i16).expect("SASL schemas are declared");
        let mut body = codec::with_defaults(&schema.body, version);
        build(&mut body);
        SaslRequest { api, version, body }
    }

    /// The request frame (without size prefix).
    pub fn encode(&self, correlation_id: i32) -> Vec<u8> {
        encode_request(self.api as i16, self.version, correlation_id, Some(CLIENT_ID), &self.body)
            .expect("the proxy builds only encodable SASL requests")
    }
}

/// What to do after an answer.
pub enum SaslStep {
    Send(SaslRequest),
    /// Logged in; `session_lifetime` when the broker limits the session
    /// (KIP-368).
    Done { session_lifetime: Option<Duration> },
}

enum State {
    Handshake,
    Plain,
    ScramFirst(ScramClient),
    ScramFinal(ScramClient),
    /// The token was sent; an empty answer logs in.
    OAuthBearer,
    /// The broker answered the token with this error status; its refusal
    /// follows the `\x01` sent.
    OAuthBearerRefused(String),
    Done,
}

/// One login, from SaslHandshake to the last SaslAuthenticate answer.
pub struct SaslExchange {
    sasl: KafkaSasl,
    bearer_token: Option<Arc<TokenFile>>,
    versions: SaslVersions,
    state: State,
    /// The request whose answer comes next.
    awaiting: (ApiKey, i16),
}

impl SaslExchange {
    /// Begin a login: the exchange, and its first request. OAUTHBEARER
    /// takes its token from `bearer_token`.
    pub fn start(
        sasl: &KafkaSasl,
        bearer_token: Option<Arc<TokenFile>>,
        versions: SaslVersions,
    ) -> (SaslExchange, SaslRequest) {
        let mechanism = sasl.mechanism.as_str();
        let request = SaslRequest::new(ApiKey::SaslHandshake, versions.handshake, |b| {
            b.write(sasl_handshake_request::MECHANISM, mechanism);
        });
        let exchange =
            SaslExchange { sasl: sasl.clone(), bearer_token, versions, state: State::Handshake, awaiting: (request.api, request.version) };
        (exchange, request)
    }

    /// Whether the handshake has not been answered yet: a connection lost
    /// now means the broker would not take the mechanism.
    pub fn at_handshake(&self) -> bool {
        matches!(self.state, State::Handshake)
    }

    pub fn mechanism(&self) -> SaslMechanism {
        self.sasl.mechanism
    }

    /// Take the answer (a response frame: header and body) to the last
    /// request.
    pub fn on_answer(&mut self, frame: &[u8]) -> Result<SaslStep, SaslError> {
        let (api, version) = self.awaiting;
        let response = decode_response(api as i16, version, frame)
            .map_err(|e| SaslError::Protocol(format!("the broker's {} answer does not decode: {e}", api.name())))?;
        let body = response.body;
        let (token, lifetime) = match std::mem::replace(&mut self.state, State::Done) {
            State::Handshake => {
                use sasl_handshake_response::{ERROR_CODE, MECHANISMS};
                let code = body.read(ERROR_CODE).unwrap_or(0);
                if code == error::UNSUPPORTED_SASL_MECHANISM {
                    let offered = body
                        .items(MECHANISMS)
                        .iter()
                        .filter_map(|m| match m {
                            Value::String(Some(name)) => Some(name.to_string()),
                            _ => None,
                        })
                        .collect();
                    return Err(SaslError::MechanismNotOffered { mechanism: self.sasl.mechanism, offered });
                }
                if code != error::NONE {
                    return Err(SaslError::Refused { code, message: format!("SaslHandshake answered error code {code}") });
                }
                return self.first_token().map(SaslStep::Send);
            }
            other => {
                use sasl_authenticate_response::{AUTH_BYTES, ERROR_CODE, ERROR_MESSAGE, SESSION_LIFETIME_MS};
                let code = body.read(ERROR_CODE).unwrap_or(0);
                if code != error::NONE {
                    let message = body.read(ERROR_MESSAGE).unwrap_or_default().to_string();
                    return Err(SaslError::Refused { code, message });
                }
                let lifetime = body.read(SESSION_LIFETIME_MS).filter(|ms| *ms > 0).map(|ms| Duration::from_millis(ms as u64));
                let token = String::from_utf8_lossy(body.read(AUTH_BYTES).unwrap_or_default()).into_owned();
                ((other, token), lifetime)
            }
        };
        match token {
            (State::Plain, _) => Ok(SaslStep::Done { session_lifetime: lifetime }),
            (State::ScramFirst(mut client), server_first) => {
                let client_final = client.client_final(&server_first).map_err(SaslError::Scram)?;
                self.state = State::ScramFinal(client);
                Ok(SaslStep::Send(self.authenticate(client_final.into_bytes())))
            }
            (State::ScramFinal(client), server_final) => {
                client.verify_server_final(&server_final).map_err(SaslError::Scram)?;
                Ok(SaslStep::Done { session_lifetime: lifetime })
            }
            (State::OAuthBearer, status) if status.is_empty() => Ok(SaslStep::Done { session_lifetime: lifetime }),
            (State::OAuthBearer, status) => {
                // RFC 7628 §3.2.3: acknowledge; the broker then refuses.
                let status = oauthbearer::parse_error_response(status.as_bytes()).map_or(status, |e| e.status);
                self.state = State::OAuthBearerRefused(status);
                Ok(SaslStep::Send(self.authenticate(oauthbearer::ERROR_ACKNOWLEDGEMENT.to_vec())))
            }
            (State::OAuthBearerRefused(status), _) => {
                Err(SaslError::Refused { code: error::SASL_AUTHENTICATION_FAILED, message: status })
            }
            (State::Handshake | State::Done, _) => Err(SaslError::Protocol("an answer after the login ended".into())),
        }
    }

    /// The first SaslAuthenticate: PLAIN's whole token, SCRAM's
    /// client-first message or OAUTHBEARER's initial response. Each
    /// mechanism is named: one added later must say how it logs in.
    fn first_token(&mut self) -> Result<SaslRequest, SaslError> {
        let (username, password) = (&self.sasl.username, &self.sasl.password);
        let mechanism = self.sasl.mechanism;
        let token = match mechanism {
            SaslMechanism::Plain => {
                self.state = State::Plain;
                // RFC 4616: authzid NUL authcid NUL passwd; no authzid.
                format!("\0{username}\0{}", password.expose()).into_bytes()
            }
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let hash = ScramHash::of(mechanism).expect("a SCRAM mechanism");
                let client = ScramClient::new(hash, username, password);
                let first = client.client_first().into_bytes();
                self.state = State::ScramFirst(client);
                first
            }
            SaslMechanism::OAuthBearer => {
                let file = self.bearer_token.as_ref().ok_or_else(|| {
                    SaslError::TokenFile("OAUTHBEARER has no token file (kafka.sasl.token_path)".into())
                })?;
                let token = file.token().map_err(SaslError::TokenFile)?;
                let message = ClientInitialResponse::new(token, None, Vec::new()).map_err(SaslError::TokenFile)?;
                self.state = State::OAuthBearer;
                message.to_bytes()
            }
        };
        Ok(self.authenticate(token))
    }

    fn authenticate(&mut self, token: Vec<u8>) -> SaslRequest {
        let request = SaslRequest::new(ApiKey::SaslAuthenticate, self.versions.authenticate, |b| {
            b.write(sasl_authenticate_request::AUTH_BYTES, Some(Cow::Owned(token)));
        });
        self.awaiting = (request.api, request.version);
        request
    }
}

/// When to log in again on a connection whose session lasts `lifetime`
/// (KIP-368): at 85% of it, as Kafka's Java client starts between 85% and
/// 95%, leaving the rest for the exchange and requests already on the way.
pub fn reauthenticate_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.85)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram;
    use crate::config::Secret;
    use crate::kafka::message::{encode_response, response_schema};

    fn login(mechanism: SaslMechanism) -> KafkaSasl {
        KafkaSasl { mechanism, username: "svc".into(), password: Secret::new("pw-secret"), token_path: None, mode: Default::default() }
    }

    const VERSIONS: SaslVersions = SaslVersions { handshake: 1, authenticate: 2 };

    fn answer(api: ApiKey, version: i16, build: impl FnOnce(&mut Struct<'static>)) -> Vec<u8> {
        let mut body = codec::with_defaults(&response_schema(api as i16).unwrap().body, version);
        build(&mut body);
        encode_response(api as i16, version, 1, &[], &body).unwrap()
    }

    fn handshake_ok() -> Vec<u8> {
        answer(ApiKey::SaslHandshake, 1, |_| {})
    }

    fn authenticated(token: &[u8], lifetime_ms: i64) -> Vec<u8> {
        answer(ApiKey::SaslAuthenticate, 2, |b| {
            b.write(sasl_authenticate_response::AUTH_BYTES, Some(Cow::Owned(token.to_vec())));
            b.write(sasl_authenticate_response::SESSION_LIFETIME_MS, lifetime_ms);
        })
    }

    fn token_of(step: SaslStep) -> String {
        let SaslStep::Send(request) = step else { panic!("a request was expected") };
        assert_eq!((request.api, request.version), (ApiKey::SaslAuthenticate, 2));
        String::from_utf8(request.body.read(sasl_authenticate_request::AUTH_BYTES).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn versions_are_the_highest_both_speak_and_handshake_v0_is_not_enough() {
        let broker = |ranges: Vec<(i16, (i16, i16))>| move |api: i16| ranges.iter().find(|(k, _)| *k == api).map(|(_, r)| *r);
        assert_eq!(SaslVersions::choose(broker(vec![(17, (0, 1)), (36, (0, 1))])), Ok(SaslVersions { handshake: 1, authenticate: 1 }));
        assert!(matches!(SaslVersions::choose(broker(vec![(17, (0, 0)), (36, (0, 2))])), Err(SaslError::Protocol(_))));
        assert!(matches!(SaslVersions::choose(broker(vec![(17, (0, 1))])), Err(SaslError::Protocol(_))));
    }

    #[test]
    fn plain_sends_one_token_and_reads_the_session_lifetime() {
        let (mut exchange, first) = SaslExchange::start(&login(SaslMechanism::Plain), None, VERSIONS);
        assert_eq!((first.api, first.version), (ApiKey::SaslHandshake, 1));
        assert_eq!(first.body.read(sasl_handshake_request::MECHANISM), Some("PLAIN"));
        assert_eq!(token_of(exchange.on_answer(&handshake_ok()).unwrap()), "\0svc\0pw-secret");
        let Ok(SaslStep::Done { session_lifetime }) = exchange.on_answer(&authenticated(b"", 60_000)) else { panic!() };
        assert_eq!(session_lifetime, Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_mechanism_not_offered_names_those_that_are() {
        let (mut exchange, _) = SaslExchange::start(&login(SaslMechanism::ScramSha256), None, VERSIONS);
        let refusal = answer(ApiKey::SaslHandshake, 1, |b| {
            b.write(sasl_handshake_response::ERROR_CODE, error::UNSUPPORTED_SASL_MECHANISM);
            b.write(sasl_handshake_response::MECHANISMS, vec![Value::str("SCRAM-SHA-512"), Value::str("OAUTHBEARER")]);
        });
        let Err(e) = exchange.on_answer(&refusal) else { panic!() };
        assert_eq!(e.step(), "SASL mechanism");
        assert_eq!(
            e.to_string(),
            "SASL authentication failed: mechanism SCRAM-SHA-256 is not offered by the broker; it offers: SCRAM-SHA-512, OAUTHBEARER"
        );
    }

    #[test]
    fn refused_credentials_carry_the_brokers_message() {
        let (mut exchange, _) = SaslExchange::start(&login(SaslMechanism::Plain), None, VERSIONS);
        exchange.on_answer(&handshake_ok()).unwrap();
        let refusal = answer(ApiKey::SaslAuthenticate, 2, |b| {
            b.write(sasl_authenticate_response::ERROR_CODE, 58i16);
            b.write(sasl_authenticate_response::ERROR_MESSAGE, "Invalid username or password");
        });
        let Err(e) = exchange.on_answer(&refusal) else { panic!() };
        assert_eq!(e, SaslError::Refused { code: 58, message: "Invalid username or password".into() });
        assert_eq!(e.step(), "SASL credentials");
        assert_eq!(e.to_string(), "SASL authentication failed: Invalid username or password");
    }

    /// A whole SCRAM-SHA-512 login against a broker built from `scram`'s
    /// server arithmetic; then the same with a broker that does not know
    /// the password (its signature is wrong): refused.
    #[test]
    fn scram_login_checks_the_brokers_signature() {
        for knows_password in [true, false] {
            let hash = ScramHash::Sha512;
            let salt = b"broker salt";
            let stored = if knows_password { "pw-secret" } else { "another" };
            let keys = hash.keys(&hash.salted_password(stored.as_bytes(), salt, 4096));
            let (mut exchange, _) = SaslExchange::start(&login(SaslMechanism::ScramSha512), None, VERSIONS);
            let client_first = token_of(exchange.on_answer(&handshake_ok()).unwrap());
            let bare = client_first.strip_prefix("n,,").unwrap().to_string();
            let server_first = format!("r={}srv,s={},i=4096", scram::attribute(&bare, 'r').unwrap(), scram::base64(salt));
            let client_final = token_of(exchange.on_answer(&authenticated(server_first.as_bytes(), 0)).unwrap());
            let without_proof = &client_final[..client_final.find(",p=").unwrap()];
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let signature = hash.server_signature(&keys.server_key, auth_message.as_bytes());
            let server_final = format!("v={}", scram::base64(&signature));
            let result = exchange.on_answer(&authenticated(server_final.as_bytes(), 0));
            if knows_password {
                assert!(matches!(result, Ok(SaslStep::Done { session_lifetime: None })));
            } else {
                let Err(e) = result else { panic!("a broker without the password must be refused") };
                assert_eq!(e, SaslError::Scram(ScramClientError::ServerSignatureMismatch));
                assert_eq!(e.step(), "SASL credentials");
            }
        }
    }

    mod oauthbearer {
        use super::*;
        use crate::auth::watched_file::tests::{write_at, TempDir};

        fn oauth_login() -> KafkaSasl {
            KafkaSasl { mechanism: SaslMechanism::OAuthBearer, username: String::new(), password: Secret::new(""), token_path: None, mode: Default::default() }
        }

        fn start(file: &Arc<TokenFile>) -> (SaslExchange, String) {
            let (mut exchange, first) = SaslExchange::start(&oauth_login(), Some(file.clone()), VERSIONS);
            assert_eq!(first.body.read(sasl_handshake_request::MECHANISM), Some("OAUTHBEARER"));
            let token = token_of(exchange.on_answer(&handshake_ok()).unwrap());
            (exchange, token)
        }

        #[test]
        fn each_login_sends_the_token_the_file_holds_then() {
            let dir = TempDir::new("upstream-token");
            let path = dir.0.join("token");
            write_at(&path, b"h.first.s\n", 0);
            let file = Arc::new(TokenFile::load(&path).unwrap());
            let (mut exchange, token) = start(&file);
            assert_eq!(token, "n,,\x01auth=Bearer h.first.s\x01\x01");
            let Ok(SaslStep::Done { session_lifetime }) = exchange.on_answer(&authenticated(b"", 30_000)) else { panic!() };
            assert_eq!(session_lifetime, Some(Duration::from_secs(30)));
            write_at(&path, b"h.second.s", 1);
            assert_eq!(start(&file).1, "n,,\x01auth=Bearer h.second.s\x01\x01");
            // A file that no longer holds a token: no login is tried.
            write_at(&path, b"", 2);
            let (mut exchange, _) = SaslExchange::start(&oauth_login(), Some(file.clone()), VERSIONS);
            let Err(e) = exchange.on_answer(&handshake_ok()) else { panic!("logged in without a token") };
            assert_eq!(e.step(), "SASL credentials");
            assert!(e.to_string().starts_with("SASL authentication failed: token file ") && e.to_string().contains("empty"), "{e}");
        }

        /// Kafka's broker answers a bad token with its JSON status and no
        /// error; the client acknowledges with \x01 and gets the refusal.
        #[test]
        fn a_refused_token_is_acknowledged_and_the_brokers_refusal_reported() {
            let dir = TempDir::new("upstream-token");
            let path = dir.0.join("token");
            write_at(&path, b"h.p.s", 0);
            let (mut exchange, _) = start(&Arc::new(TokenFile::load(&path).unwrap()));
            let step = exchange.on_answer(&authenticated(br#"{"status":"invalid_token"}"#, 0)).unwrap();
            assert_eq!(token_of(step), "\x01");
            let refusal = answer(ApiKey::SaslAuthenticate, 2, |b| {
                b.write(sasl_authenticate_response::ERROR_CODE, error::SASL_AUTHENTICATION_FAILED);
                b.write(sasl_authenticate_response::ERROR_MESSAGE, r#"{"status":"invalid_token"}"#);
            });
            let Err(e) = exchange.on_answer(&refusal) else { panic!("not refused") };
            assert_eq!(e.to_string(), r#"SASL authentication failed: {"status":"invalid_token"}"#);
            assert_eq!(e.step(), "SASL credentials");
        }
    }
}
