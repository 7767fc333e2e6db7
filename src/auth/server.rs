//! The proxy as SASL server toward clients: the users of
//! `listen.security.sasl`, the mechanisms they may log in with, one
//! exchange per login, and how long a refusal waits.
//!
//! SCRAM credentials are made once at start (a random salt per user and
//! hash, `scram_server::ITERATIONS`), so a login never runs PBKDF2 on a
//! worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

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
    pub fn new(config: &ListenSasl) -> SaslServer {
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
        SaslServer {
            mechanisms: config.enabled_mechanisms.clone(),
            passwords: config.users.iter().map(|u| (u.name.clone(), u.password.clone())).collect(),
            scram,
            stand_in_secret,
            session_lifetime: (config.session_lifetime_ms > 0).then(|| Duration::from_millis(config.session_lifetime_ms)),
            relays: false,
            failures: Mutex::new(HashMap::new()),
        }
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
            // Refused at start until its exchange is wired
            // (`Config::unsupported_features`): never logs anyone in.
            SaslMechanism::OAuthBearer => Exchange::Finished,
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
                    Err(detail) => Step::Failed { username: None, detail, answer: Vec::new() },
                    Ok(t) if self.relays => Step::Relay { username: t.username, password: t.password },
                    Ok(t) => {
                        let known = self.passwords.get(&t.username);
                        // An unknown user costs the same compare as a known one.
                        let expected = known.cloned().unwrap_or_else(|| Secret::new(String::new()));
                        if plain::password_matches(&expected, &t.password) && known.is_some() {
                            Step::Done { username: t.username, answer: Vec::new() }
                        } else {
                            let detail = if known.is_some() { "invalid password" } else { "unknown user" };
                            Step::Failed { username: Some(t.username), detail: detail.to_string(), answer: Vec::new() }
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
                    Ok((answer, username)) if self.passwords.contains_key(&username) => Step::Done { username, answer },
                    Ok(_) => scram_failure(username, ScramError::InvalidProof),
                    Err(e) => scram_failure(username, e),
                }
            }
            Exchange::Finished => Step::Failed { username: None, detail: "the exchange is over".into(), answer: Vec::new() },
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
    Step::Failed { username, detail: format!("SCRAM error {}", e.as_str()), answer: e.message() }
}

/// One client's login in progress.
#[derive(Debug)]
pub enum Exchange {
    Plain,
    Scram(ScramServer),
    Finished,
}

/// What one token of an exchange gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this to the client and wait for its next token.
    Challenge(Vec<u8>),
    /// Logged in; `answer` is the last server message (may be empty).
    Done { username: String, answer: Vec<u8> },
    /// Refused. `detail` is for the log (never a password), `answer` the
    /// server's last message if the mechanism has one (SCRAM `e=`).
    Failed { username: Option<String>, detail: String, answer: Vec<u8> },
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
    }

    #[test]
    fn plain_logs_in_the_right_password_only() {
        let s = server();
        let login = |token: &[u8]| s.step(&mut s.start(SaslMechanism::Plain), token);
        assert_eq!(login(b"\0alice\0pw-a"), Step::Done { username: "alice".into(), answer: vec![] });
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
