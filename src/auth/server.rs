//! The proxy as SASL server toward clients: the users of
//! `listen.security.sasl`, the mechanisms they may log in with, one
//! exchange per login, and how long a refusal waits.
//!
//! SCRAM credentials are made once at start (a random salt per user and
//! hash, `scram_server::ITERATIONS`), so a login never runs PBKDF2 on a
//! worker. OAUTHBEARER tokens are checked by the `JwtValidator` made at
//! start from `listen.security.sasl.oauthbearer`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use log::warn;
use parking_lot::Mutex;

use super::jwt::JwtValidator;
use super::oauthbearer::{self, ClientInitialResponse};
use super::plain;
use super::scram::{self, ScramHash};
use super::scram_server::{ScramCredential, ScramError, ScramServer, ITERATIONS};
use crate::config::{ListenSasl, SaslMechanism, Secret};

/// Kafka's `connection.failed.authentication.delay.ms` default: the
/// first refusal from an address is answered this much later.
pub const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);
/// The longest a refusal waits, however often an address failed.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_millis(3200);
/// Failures older than this no longer count toward the delay.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest are forgotten first).
const FAILURE_ADDRESSES: usize = 10_000;

pub struct SaslServer {
    pub mechanisms: Vec<SaslMechanism>,
    passwords: HashMap<String, Secret>,
    scram: HashMap<(ScramHash, String), ScramCredential>,
    /// Makes the stand-in credentials of unknown users.
    stand_in_secret: [u8; 32],
    /// `session_lifetime_ms`; `None`: sessions do not expire.
    pub session_lifetime: Option<Duration>,
    /// Checks OAUTHBEARER tokens; `Some` exactly when it is enabled.
    jwt: Option<JwtValidator>,
    /// `kafka.sasl.mode: passthrough`: PLAIN credentials are not checked
    /// here but handed on (`Step::Relay`) for the brokers to check.
    relays: bool,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl std::fmt::Debug for SaslServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslServer").field("mechanisms", &self.mechanisms).field("users", &self.passwords.len()).finish_non_exhaustive()
    }
}

impl SaslServer {
    /// The server of `config`; an error (naming the field) when the JWKS
    /// file of OAUTHBEARER cannot be used, which stops the start.
    pub fn new(config: &ListenSasl) -> Result<SaslServer, String> {
        let jwt = match &config.oauthbearer {
            Some(settings) if config.enabled_mechanisms.contains(&SaslMechanism::OAuthBearer) => Some(
                JwtValidator::new(settings).map_err(|e| format!("listen.security.sasl.oauthbearer.jwks_path: {e}"))?,
            ),
            _ => None,
        };
        let mut scram = HashMap::new();
        for mechanism in &config.enabled_mechanisms {
            let Some(hash) = ScramHash::of(*mechanism) else { continue };
            for user in &config.users {
                let mut salt = vec![0u8; 16];
                openssl::rand::rand_bytes(&mut salt).expect("the system's random source");
                let credential = ScramCredential::from_password(hash, user.password.expose().as_bytes(), salt, ITERATIONS);
                scram.insert((hash, user.name.clone()), credential);
            }
        }
        let mut stand_in_secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut stand_in_secret).expect("the system's random source");
        Ok(SaslServer {
            mechanisms: config.enabled_mechanisms.clone(),
            passwords: config.users.iter().map(|u| (u.name.clone(), u.password.clone())).collect(),
            scram,
            stand_in_secret,
            session_lifetime: (config.session_lifetime_ms > 0).then(|| Duration::from_millis(config.session_lifetime_ms)),
            jwt,
            relays: false,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// The server for `kafka.sasl.mode: passthrough`: PLAIN logins are
    /// relayed to the brokers (`Step::Relay`), never checked here.
    pub fn relaying(mut self) -> SaslServer {
        self.relays = true;
        self
    }

    /// Whether logins are relayed to the brokers (passthrough).
    pub fn relays(&self) -> bool {
        self.relays
    }

    /// The enabled mechanism a client names (as Kafka, by exact name).
    pub fn mechanism(&self, name: &str) -> Option<SaslMechanism> {
        self.mechanisms.iter().copied().find(|m| m.as_str() == name)
    }

    /// The names of the enabled mechanisms, as SaslHandshake lists them.
    pub fn mechanism_names(&self) -> Vec<&'static str> {
        self.mechanisms.iter().map(|m| m.as_str()).collect()
    }

    /// A new exchange with `mechanism`. Every mechanism is named: one
    /// added later must say how it logs in, never fall back to another's.
    pub fn start(&self, mechanism: SaslMechanism) -> Exchange {
        match mechanism {
            SaslMechanism::Plain => Exchange::Plain,
            SaslMechanism::ScramSha256 => Exchange::Scram(ScramServer::new(ScramHash::Sha256)),
            SaslMechanism::ScramSha512 => Exchange::Scram(ScramServer::new(ScramHash::Sha512)),
            SaslMechanism::OAuthBearer => Exchange::OAuthBearer,
        }
    }

    fn scram_credential(&self, hash: ScramHash, username: &str) -> ScramCredential {
        match self.scram.get(&(hash, username.to_string())) {
            Some(c) => c.clone(),
            None => ScramCredential::stand_in(hash, &self.stand_in_secret, username),
        }
    }

    /// One token of a client's exchange.
    pub fn step(&self, exchange: &mut Exchange, token: &[u8]) -> Step {
        match exchange {
            Exchange::Plain => {
                *exchange = Exchange::Finished;
                match plain::parse(token) {
                    Err(detail) => Step::Failed { username: None, message: None, detail, answer: Vec::new() },
                    Ok(t) if self.relays => Step::Relay { username: t.username, password: t.password },
                    Ok(t) => {
                        let known = self.passwords.get(&t.username);
                        // An unknown user costs the same compare as a known one.
                        let expected = known.cloned().unwrap_or_else(|| Secret::new(String::new()));
                        if plain::password_matches(&expected, &t.password) && known.is_some() {
                            Step::Done { username: t.username, answer: Vec::new(), lifetime: self.session_lifetime }
                        } else {
                            let detail = if known.is_some() { "invalid password" } else { "unknown user" };
                            let username = Some(t.username);
                            Step::Failed { username, message: None, detail: detail.to_string(), answer: Vec::new() }
                        }
                    }
                }
            }
            Exchange::Scram(server @ ScramServer::ExpectFirst { .. }) => {
                let ScramServer::ExpectFirst { hash } = *server else { unreachable!("matched") };
                match server.client_first(token, |name| self.scram_credential(hash, name), &scram::nonce()) {
                    Ok(challenge) => Step::Challenge(challenge),
                    Err(e) => scram_failure(None, e),
                }
            }
            Exchange::Scram(server) => {
                let username = server.username().map(str::to_string);
                let result = server.client_final(token);
                *exchange = Exchange::Finished;
                match result {
                    Ok((answer, username)) if self.passwords.contains_key(&username) => {
                        Step::Done { username, answer, lifetime: self.session_lifetime }
                    }
                    Ok(_) => scram_failure(username, ScramError::InvalidProof),
                    Err(e) => scram_failure(username, e),
                }
            }
            Exchange::OAuthBearer => self.bearer_login(exchange, token, SystemTime::now()),
            Exchange::OAuthBearerRefused { detail } => {
                let detail = std::mem::take(detail);
                *exchange = Exchange::Finished;
                if oauthbearer::is_error_acknowledgement(token) {
                    Step::Failed { username: None, message: Some(format!("OAUTHBEARER token refused: {detail}")), detail, answer: Vec::new() }
                } else {
                    let detail = format!("{detail}; then the client did not acknowledge the error status with \\x01");
                    Step::Failed { username: None, message: None, detail, answer: Vec::new() }
                }
            }
            Exchange::Finished => {
                Step::Failed { username: None, message: None, detail: "the exchange is over".into(), answer: Vec::new() }
            }
        }
    }

    /// A client's OAUTHBEARER initial response. A token that fails a check
    /// is answered as Kafka's `OAuthBearerSaslServer` does: the JSON error
    /// status as a challenge, the refusal after the client's `\x01`
    /// (`Exchange::OAuthBearerRefused`). A malformed message or an authzid
    /// other than the token's subject is refused at once, as there.
    fn bearer_login(&self, exchange: &mut Exchange, message: &[u8], now: SystemTime) -> Step {
        *exchange = Exchange::Finished;
        let failed = |detail: String| Step::Failed { username: None, message: None, detail, answer: Vec::new() };
        let Some(jwt) = &self.jwt else { return failed("OAUTHBEARER has no validator".into()) };
        let response = match ClientInitialResponse::parse(message) {
            Ok(r) => r,
            Err(detail) => return failed(detail),
        };
        // A JWKS that turned bad keeps the keys it had: logins go on.
        if let Err(e) = jwt.jwks().reload_if_changed() {
            warn!("{e}; the previous keys stay in use");
        }
        match jwt.validate(response.token.expose(), now) {
            Err(rejected) => {
                // The client is told which check failed, not where the
                // proxy keeps its keys.
                let source = format!(" of JWKS {}", jwt.jwks().source());
                *exchange = Exchange::OAuthBearerRefused { detail: rejected.0.replace(&source, "") };
                Step::Challenge(oauthbearer::error_response(oauthbearer::INVALID_TOKEN, None, None))
            }
            Ok(valid) => match response.authzid {
                Some(authzid) if authzid != valid.principal => Step::Failed {
                    username: Some(valid.principal.clone()),
                    message: None,
                    detail: format!(
                        "the authorization id ({authzid}) is not the token's principal ({})",
                        valid.principal
                    ),
                    answer: Vec::new(),
                },
                _ => {
                    // Never 0, which would mean "no limit" to the client.
                    let token_life = valid.lifetime(now).max(Duration::from_millis(1));
                    let lifetime = Some(self.session_lifetime.map_or(token_life, |l| l.min(token_life)));
                    Step::Done { username: valid.principal, answer: Vec::new(), lifetime }
                }
            },
        }
    }

    /// A refusal for `addr`: how long to wait before answering it. Each
    /// recent failure from the address doubles the wait, up to
    /// `MAX_FAILURE_DELAY`.
    pub fn failure_delay(&self, addr: IpAddr, now: Instant) -> Duration {
        let mut failures = self.failures.lock();
        if failures.len() >= FAILURE_ADDRESSES {
            failures.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
            if failures.len() >= FAILURE_ADDRESSES {
                // Bounded memory over perfect memory: start counting afresh.
                failures.clear();
            }
        }
        let entry = failures.entry(addr).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = (entry.0 - 1).min(16);
        (FIRST_FAILURE_DELAY * 2u32.pow(doublings)).min(MAX_FAILURE_DELAY)
    }
}

fn scram_failure(username: Option<String>, e: ScramError) -> Step {
    Step::Failed { username, message: None, detail: format!("SCRAM error {}", e.as_str()), answer: e.message() }
}

/// One client's login in progress.
#[derive(Debug)]
pub enum Exchange {
    Plain,
    Scram(ScramServer),
    /// Waiting for the client's OAUTHBEARER initial response.
    OAuthBearer,
    /// The token was refused (`detail` says why); waiting for the
    /// client's `\x01` to say so.
    OAuthBearerRefused { detail: String },
    Finished,
}

/// What one token of an exchange gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this to the client and wait for its next token.
    Challenge(Vec<u8>),
    /// Logged in; `answer` is the last server message (may be empty),
    /// `lifetime` how long the session lasts (KIP-368; `None`: no limit).
    Done { username: String, answer: Vec<u8>, lifetime: Option<Duration> },
    /// Refused. `detail` is for the log (never a password or token),
    /// `message` for the client when the mechanism tells it more than
    /// Kafka's usual words, `answer` the server's last message if the
    /// mechanism has one (SCRAM `e=`).
    Failed { username: Option<String>, message: Option<String>, detail: String, answer: Vec<u8> },
    /// Passthrough: these credentials are for the brokers to check.
    Relay { username: String, password: Secret },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SaslUser;

    fn server() -> SaslServer {
        SaslServer::new(&ListenSasl {
            enabled_mechanisms: vec![SaslMechanism::Plain, SaslMechanism::ScramSha512],
            users: vec![SaslUser { name: "alice".into(), password: Secret::new("pw-a") }],
            oauthbearer: None,
            session_lifetime_ms: 0,
        })
        .unwrap()
    }

    #[test]
    fn plain_logs_in_the_right_password_only() {
        let s = server();
        let login = |token: &[u8]| s.step(&mut s.start(SaslMechanism::Plain), token);
        assert_eq!(login(b"\0alice\0pw-a"), Step::Done { username: "alice".into(), answer: vec![], lifetime: None });
        assert!(matches!(login(b"\0alice\0pw-b"), Step::Failed { username: Some(u), detail, .. } if u == "alice" && detail == "invalid password"));
        assert!(matches!(login(b"\0bob\0pw-a"), Step::Failed { detail, .. } if detail == "unknown user"));
    }

    /// A whole SCRAM-SHA-512 login, the client side computed with `scram`.
    fn scram_login(s: &SaslServer, user: &str, password: &str) -> Step {
        let h = ScramHash::Sha512;
        let mut exchange = s.start(SaslMechanism::ScramSha512);
        let bare = format!("n={user},r=clientnonce");
        let Step::Challenge(first) = s.step(&mut exchange, format!("n,,{bare}").as_bytes()) else { panic!("no challenge") };
        let first = String::from_utf8(first).unwrap();
        let salt = scram::unbase64(scram::attribute(&first, 's').unwrap()).unwrap();
        let nonce = scram::attribute(&first, 'r').unwrap();
        assert!(nonce.starts_with("clientnonce") && nonce.len() > "clientnonce".len());
        let keys = h.keys(&h.salted_password(password.as_bytes(), &salt, 4096));
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{bare},{first},{without_proof}");
        let proof = scram::base64(&h.client_proof(&keys, auth.as_bytes()));
        let step = s.step(&mut exchange, format!("{without_proof},p={proof}").as_bytes());
        if let Step::Done { answer, .. } = &step {
            let signature = h.server_signature(&keys.server_key, auth.as_bytes());
            assert_eq!(answer, format!("v={}", scram::base64(&signature)).as_bytes());
        }
        step
    }

    #[test]
    fn scram_logs_in_and_refuses_unknown_users_alike() {
        let s = server();
        assert!(matches!(scram_login(&s, "alice", "pw-a"), Step::Done { username, .. } if username == "alice"));
        let wrong = scram_login(&s, "alice", "pw-b");
        let unknown = scram_login(&s, "bob", "pw-a");
        for refused in [wrong, unknown] {
            assert!(matches!(&refused, Step::Failed { answer, .. } if answer == b"e=invalid-proof"), "{refused:?}");
        }
    }

    #[test]
    fn repeated_failures_wait_longer_up_to_a_cap() {
        let s = server();
        let (ip, now) = ("10.0.0.1".parse().unwrap(), Instant::now());
        let delays: Vec<Duration> = (0..10).map(|_| s.failure_delay(ip, now)).collect();
        assert_eq!(delays[0], FIRST_FAILURE_DELAY);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]) && delays[4] > delays[0]);
        assert_eq!(delays[9], MAX_FAILURE_DELAY);
        assert_eq!(s.failure_delay("10.0.0.2".parse().unwrap(), now), FIRST_FAILURE_DELAY, "another address");
        assert_eq!(s.failure_delay(ip, now + FAILURE_MEMORY), FIRST_FAILURE_DELAY, "forgotten after a quiet minute");
    }

    mod oauthbearer_logins {
        use super::*;
        use crate::auth::test_tokens::{now, oauthbearer_sasl, other_rsa_key, rsa_key, rsa_token_at};
        use crate::auth::watched_file::tests::TempDir;

        fn initial(token: &str, authzid: Option<&str>) -> Vec<u8> {
            let authzid = authzid.map(str::to_string);
            ClientInitialResponse::new(Secret::new(token), authzid, vec![]).unwrap().to_bytes()
        }

        fn login(s: &SaslServer, message: &[u8]) -> (Exchange, Step) {
            let mut exchange = s.start(SaslMechanism::OAuthBearer);
            assert!(matches!(exchange, Exchange::OAuthBearer));
            let step = s.bearer_login(&mut exchange, message, now());
            (exchange, step)
        }

        #[test]
        fn a_valid_token_logs_in_its_subject_for_at_most_its_life() {
            let dir = TempDir::new("oauth-server");
            let s = SaslServer::new(&oauthbearer_sasl(&dir.0, 60_000)).unwrap();
            let (_, short) = login(&s, &initial(&rsa_token_at(rsa_key(), "alice", now(), 30), None));
            assert_eq!(short, Step::Done { username: "alice".into(), answer: vec![], lifetime: Some(Duration::from_secs(30)) });
            let (_, long) = login(&s, &initial(&rsa_token_at(rsa_key(), "bob", now(), 3600), Some("bob")));
            assert_eq!(long, Step::Done { username: "bob".into(), answer: vec![], lifetime: Some(Duration::from_secs(60)) });
            // Without session_lifetime_ms the token alone bounds the session.
            let unbounded = SaslServer::new(&oauthbearer_sasl(&dir.0, 0)).unwrap();
            let (_, step) = login(&unbounded, &initial(&rsa_token_at(rsa_key(), "bob", now(), 3600), None));
            assert!(matches!(step, Step::Done { lifetime: Some(l), .. } if l == Duration::from_secs(3600)));
        }

        #[test]
        fn a_bad_token_gets_the_error_status_then_the_refusal_naming_the_check() {
            let dir = TempDir::new("oauth-server");
            let s = SaslServer::new(&oauthbearer_sasl(&dir.0, 0)).unwrap();
            for (token, named) in [
                (rsa_token_at(rsa_key(), "alice", now(), -10), "token expired at"),
                (rsa_token_at(other_rsa_key(), "alice", now(), 300), "signature does not verify with key \"rsa-1\""),
            ] {
                let (mut exchange, step) = login(&s, &initial(&token, None));
                assert_eq!(step, Step::Challenge(br#"{"status":"invalid_token"}"#.to_vec()));
                let Step::Failed { message: Some(message), detail, username: None, .. } = s.step(&mut exchange, b"\x01") else {
                    panic!("not refused")
                };
                assert!(message.starts_with("OAUTHBEARER token refused: ") && message.contains(named), "{message}");
                assert!(!message.contains(&token) && !detail.contains(&token));
                assert!(!message.contains("jwks.json"), "the JWKS path stays on the proxy: {message}");
                assert!(matches!(exchange, Exchange::Finished));
            }
            // A client that answers the error status with anything but \x01.
            let (mut exchange, _) = login(&s, &initial(&rsa_token_at(rsa_key(), "alice", now(), -10), None));
            assert!(matches!(s.step(&mut exchange, b"n,,"), Step::Failed { message: None, .. }));
        }

        #[test]
        fn malformed_messages_and_foreign_authzids_are_refused_at_once() {
            let dir = TempDir::new("oauth-server");
            let s = SaslServer::new(&oauthbearer_sasl(&dir.0, 0)).unwrap();
            let (_, step) = login(&s, b"n,,auth=Bearer x");
            assert!(matches!(step, Step::Failed { detail, .. } if detail.starts_with("Invalid OAUTHBEARER client first message")));
            let (_, step) = login(&s, &initial(&rsa_token_at(rsa_key(), "alice", now(), 300), Some("admin")));
            assert!(
                matches!(&step, Step::Failed { detail, .. } if detail == "the authorization id (admin) is not the token's principal (alice)"),
                "{step:?}"
            );
        }

        #[test]
        fn an_unusable_jwks_stops_the_start_naming_the_field() {
            let dir = TempDir::new("oauth-server");
            let mut config = oauthbearer_sasl(&dir.0, 0);
            std::fs::write(&config.oauthbearer.as_ref().unwrap().jwks_path, "{}").unwrap();
            let e = SaslServer::new(&config).unwrap_err();
            assert!(e.starts_with("listen.security.sasl.oauthbearer.jwks_path: "), "{e}");
            config.oauthbearer.as_mut().unwrap().jwks_path = dir.0.join("missing.json");
            assert!(SaslServer::new(&config).unwrap_err().contains("missing.json"));
        }
    }

    #[test]
    fn passthrough_relays_plain_credentials_unchecked() {
        let s = server().relaying();
        let step = s.step(&mut s.start(SaslMechanism::Plain), b"\0carol\0pw-c");
        assert_eq!(step, Step::Relay { username: "carol".into(), password: Secret::new("pw-c") });
        assert!(!format!("{step:?}").contains("pw-c"));
        assert!(matches!(s.step(&mut s.start(SaslMechanism::Plain), b"carol"), Step::Failed { .. }), "malformed: refused here");
    }

    #[test]
    fn debug_shows_no_password() {
        assert!(!format!("{:?}", server()).contains("pw-a"));
    }
}
