//! The client half of a SCRAM exchange (RFC 5802 §3), as the proxy runs it
//! toward brokers: client-first with a fresh nonce, client-final with the
//! proof once the server's nonce is shown to extend ours, and the server's
//! signature checked, so a broker that cannot prove it knows the password
//! is refused. The arithmetic is `scram`'s.
//!
//! PBKDF2 with 4096+ iterations is the expensive step, and the proxy opens
//! many connections with one identity: salted passwords are cached per
//! (hash, salt, iterations, password), so it runs once per identity, not
//! once per connection.

use std::collections::HashMap;
use std::sync::LazyLock;

use parking_lot::Mutex;

use super::scram::{self, ScramHash, ScramKeys};
use crate::config::Secret;

/// Kafka's clients refuse fewer iterations than this (`ScramMechanism
/// .minIterations`, 4096 for both hashes): fewer make a stolen salted
/// password cheap to attack.
pub const MIN_ITERATIONS: u32 = 4096;

/// Salted passwords already computed. The key carries a digest of the
/// password, never the password; the few identities a proxy uses keep it
/// small, and it is cleared if it ever grows past `CACHE_LIMIT`.
static SALTED: LazyLock<Mutex<HashMap<CacheKey, Vec<u8>>>> = LazyLock::new(Default::default);
const CACHE_LIMIT: usize = 64;

#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    hash: u8,
    salt: Vec<u8>,
    iterations: u32,
    password_digest: Vec<u8>,
}

fn salted_password(hash: ScramHash, password: &Secret, salt: &[u8], iterations: u32) -> Vec<u8> {
    let key = CacheKey {
        hash: hash as u8,
        salt: salt.to_vec(),
        iterations,
        password_digest: ScramHash::Sha256.hash(password.expose().as_bytes()),
    };
    if let Some(salted) = SALTED.lock().get(&key) {
        return salted.clone();
    }
    // Computed outside the lock: other connections need not wait for it.
    let salted = hash.salted_password(password.expose().as_bytes(), salt, iterations);
    let mut cache = SALTED.lock();
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, salted.clone());
    salted
}

/// Why a SCRAM exchange was given up on the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramClientError {
    /// The server's message does not follow RFC 5802.
    Malformed(String),
    /// The server's nonce does not start with ours (or adds nothing): a
    /// replayed or confused answer.
    NonceNotExtended,
    /// Fewer iterations than `MIN_ITERATIONS`.
    TooFewIterations(u32),
    /// The server's `e=` attribute.
    ServerError(String),
    /// The server's signature is not the one the password gives: it does
    /// not know the password.
    ServerSignatureMismatch,
}

impl std::fmt::Display for ScramClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramClientError::Malformed(why) => write!(f, "malformed SCRAM message from the broker: {why}"),
            ScramClientError::NonceNotExtended => f.write_str("the broker's SCRAM nonce does not extend the proxy's"),
            ScramClientError::TooFewIterations(n) => {
                write!(f, "the broker asks for {n} SCRAM iterations, fewer than the {MIN_ITERATIONS} Kafka requires")
            }
            ScramClientError::ServerError(e) => write!(f, "the broker ended the SCRAM exchange: {e}"),
            ScramClientError::ServerSignatureMismatch => {
                f.write_str("the broker's SCRAM server signature is wrong: it could not prove it knows the password")
            }
        }
    }
}

/// One SCRAM exchange, client side. `client_first`, then `client_final`
/// with the server's first message, then `verify_server_final` with its
/// last.
pub struct ScramClient {
    hash: ScramHash,
    password: Secret,
    nonce: String,
    client_first_bare: String,
    /// Set by `client_final`: the signature the server must send.
    expected_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient").field("hash", &self.hash).finish_non_exhaustive()
    }
}

impl ScramClient {
    /// An exchange for `username` with a fresh nonce.
    pub fn new(hash: ScramHash, username: &str, password: &Secret) -> ScramClient {
        ScramClient::with_nonce(hash, username, password, scram::nonce())
    }

    /// An exchange with a given nonce (tests replay published exchanges).
    pub fn with_nonce(hash: ScramHash, username: &str, password: &Secret, nonce: String) -> ScramClient {
        let client_first_bare = format!("n={},r={nonce}", scram::escape_name(username));
        ScramClient { hash, password: password.clone(), nonce, client_first_bare, expected_signature: None }
    }

    /// `n,,n=user,r=nonce`: no channel binding, no authorization identity.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client-final message (`c=biws,r=...,p=proof`) answering the
    /// server's first message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramClientError> {
        if let Some(e) = scram::attribute(server_first, 'e') {
            return Err(ScramClientError::ServerError(e.to_string()));
        }
        if server_first.starts_with("m=") {
            return Err(ScramClientError::Malformed("mandatory extension the proxy does not know".into()));
        }
        let missing = |what: &str| ScramClientError::Malformed(format!("no {what} in the server-first message"));
        let server_nonce = scram::attribute(server_first, 'r').ok_or_else(|| missing("nonce"))?;
        if !server_nonce.starts_with(&self.nonce) || server_nonce.len() == self.nonce.len() {
            return Err(ScramClientError::NonceNotExtended);
        }
        let salt = scram::attribute(server_first, 's').ok_or_else(|| missing("salt"))?;
        let salt = scram::unbase64(salt).map_err(|e| ScramClientError::Malformed(format!("salt: {e}")))?;
        let iterations: u32 = scram::attribute(server_first, 'i')
            .ok_or_else(|| missing("iteration count"))?
            .parse()
            .map_err(|_| ScramClientError::Malformed("iteration count is not a number".into()))?;
        if iterations < MIN_ITERATIONS {
            return Err(ScramClientError::TooFewIterations(iterations));
        }
        let keys: ScramKeys = self.hash.keys(&salted_password(self.hash, &self.password, &salt, iterations));
        // c=biws: base64 of "n,,", the GS2 header of client_first.
        let without_proof = format!("c=biws,r={server_nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let proof = self.hash.client_proof(&keys, auth_message.as_bytes());
        self.expected_signature = Some(self.hash.server_signature(&keys.server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", scram::base64(&proof)))
    }

    /// Check the server-final message (`v=signature`, or `e=error`).
    pub fn verify_server_final(&self, server_final: &str) -> Result<(), ScramClientError> {
        if let Some(e) = scram::attribute(server_final, 'e') {
            return Err(ScramClientError::ServerError(e.to_string()));
        }
        let expected = self
            .expected_signature
            .as_deref()
            .ok_or_else(|| ScramClientError::Malformed("server-final before client-final".into()))?;
        let signature = scram::attribute(server_final, 'v')
            .ok_or_else(|| ScramClientError::Malformed("no signature in the server-final message".into()))?;
        let signature = scram::unbase64(signature).map_err(|_| ScramClientError::ServerSignatureMismatch)?;
        if signature.len() != expected.len() || !openssl::memcmp::eq(&signature, expected) {
            return Err(ScramClientError::ServerSignatureMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn rfc_client() -> ScramClient {
        ScramClient::with_nonce(ScramHash::Sha256, "user", &Secret::new("pencil"), RFC_NONCE.into())
    }

    /// RFC 7677 §3, the client's side with its fixed nonce.
    #[test]
    fn rfc7677_exchange_from_the_client_side() {
        let mut client = rfc_client();
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            client.client_final(RFC_SERVER_FIRST).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(client.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), Ok(()));
    }

    #[test]
    fn a_server_signature_that_does_not_match_is_refused() {
        let mut client = rfc_client();
        client.client_final(RFC_SERVER_FIRST).unwrap();
        assert_eq!(
            client.verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramClientError::ServerSignatureMismatch)
        );
        assert_eq!(client.verify_server_final("v=c2hvcnQ="), Err(ScramClientError::ServerSignatureMismatch));
        assert!(matches!(client.verify_server_final("x=1"), Err(ScramClientError::Malformed(_))));
        assert_eq!(
            client.verify_server_final("e=invalid-proof"),
            Err(ScramClientError::ServerError("invalid-proof".into()))
        );
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let other = RFC_SERVER_FIRST.replacen("rOpr", "XOpr", 1);
        assert_eq!(rfc_client().client_final(&other), Err(ScramClientError::NonceNotExtended));
        let same = format!("r={RFC_NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        assert_eq!(rfc_client().client_final(&same), Err(ScramClientError::NonceNotExtended));
    }

    #[test]
    fn too_few_iterations_are_refused() {
        let weak = RFC_SERVER_FIRST.replace("i=4096", "i=1000");
        assert_eq!(rfc_client().client_final(&weak), Err(ScramClientError::TooFewIterations(1000)));
    }

    /// The client against a server built from `scram`'s server arithmetic,
    /// for both hashes: each accepts the other.
    #[test]
    fn round_trip_with_the_server_arithmetic() {
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            let salt = b"salt of the server";
            let server_keys = hash.keys(&hash.salted_password(b"s3cret", salt, 4096));
            let mut client = ScramClient::new(hash, "svc,=x", &Secret::new("s3cret"));
            let client_first = client.client_first();
            let bare = client_first.strip_prefix("n,,").unwrap();
            assert_eq!(scram::unescape_name(scram::attribute(bare, 'n').unwrap()).as_deref(), Some("svc,=x"));
            let nonce = format!("{}{}", scram::attribute(bare, 'r').unwrap(), scram::nonce());
            let server_first = format!("r={nonce},s={},i=4096", scram::base64(salt));
            let client_final = client.client_final(&server_first).unwrap();
            let without_proof = &client_final[..client_final.find(",p=").unwrap()];
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let proof = scram::unbase64(scram::attribute(&client_final, 'p').unwrap()).unwrap();
            assert!(hash.proof_matches(&server_keys.stored_key, auth_message.as_bytes(), &proof));
            let signature = hash.server_signature(&server_keys.server_key, auth_message.as_bytes());
            assert_eq!(client.verify_server_final(&format!("v={}", scram::base64(&signature))), Ok(()));
        }
    }

    #[test]
    fn debug_shows_no_password() {
        assert!(!format!("{:?}", rfc_client()).contains("pencil"));
    }
}
