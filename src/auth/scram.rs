//! SCRAM arithmetic (RFC 5802; SHA-256 per RFC 7677, SHA-512 as Kafka adds
//! it in KIP-84), shared by the proxy's SASL server (clients) and SASL
//! client (brokers). The primitives come from OpenSSL, already linked for
//! TLS through native-tls, so the proxy carries one crypto library.

use openssl::hash::MessageDigest;
use openssl::memcmp;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::config::SaslMechanism;

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    /// The hash of a SCRAM mechanism; `None` for mechanisms that are not
    /// SCRAM.
    pub fn of(mechanism: SaslMechanism) -> Option<ScramHash> {
        match mechanism {
            SaslMechanism::ScramSha256 => Some(ScramHash::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramHash::Sha512),
            SaslMechanism::Plain | SaslMechanism::OAuthBearer => None,
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            ScramHash::Sha256 => MessageDigest::sha256(),
            ScramHash::Sha512 => MessageDigest::sha512(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this hash's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.digest().size()];
        openssl::pkcs5::pbkdf2_hmac(password, salt, iterations as usize, self.digest(), &mut out)
            .expect("PBKDF2 with a supported hash");
        out
    }

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let key = PKey::hmac(key).expect("any key length is a valid HMAC key");
        let mut signer = Signer::new(self.digest(), &key).expect("HMAC with a supported hash");
        signer.update(data).expect("HMAC update");
        signer.sign_to_vec().expect("HMAC final")
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        openssl::hash::hash(self.digest(), data).expect("supported hash").to_vec()
    }

    /// What a server keeps of a password (RFC 5802 §3): enough to check a
    /// proof and to prove itself, not enough to log in as the user.
    pub fn keys(self, salted_password: &[u8]) -> ScramKeys {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramKeys {
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
            client_key,
        }
    }

    /// The client's proof for `auth_message`:
    /// `ClientKey XOR HMAC(StoredKey, AuthMessage)`.
    pub fn client_proof(self, keys: &ScramKeys, auth_message: &[u8]) -> Vec<u8> {
        xor(&keys.client_key, &self.hmac(&keys.stored_key, auth_message))
    }

    /// Whether `proof` shows knowledge of the password behind
    /// `stored_key`: `H(proof XOR HMAC(StoredKey, AuthMessage)) == StoredKey`,
    /// compared in constant time.
    pub fn proof_matches(self, stored_key: &[u8], auth_message: &[u8], proof: &[u8]) -> bool {
        if proof.len() != stored_key.len() {
            return false;
        }
        let client_key = xor(proof, &self.hmac(stored_key, auth_message));
        memcmp::eq(&self.hash(&client_key), stored_key)
    }

    /// The server's signature, `HMAC(ServerKey, AuthMessage)`.
    pub fn server_signature(self, server_key: &[u8], auth_message: &[u8]) -> Vec<u8> {
        self.hmac(server_key, auth_message)
    }
}

/// The keys derived from a salted password. A server needs only
/// `stored_key` and `server_key`; a client uses `client_key` too.
#[derive(Clone)]
pub struct ScramKeys {
    pub client_key: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(***)")
    }
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// A fresh nonce: 24 random bytes, base64 (printable, no comma).
pub fn nonce() -> String {
    let mut bytes = [0u8; 24];
    openssl::rand::rand_bytes(&mut bytes).expect("the system's random source");
    base64(&bytes)
}

pub fn base64(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
}

pub fn unbase64(text: &str) -> Result<Vec<u8>, String> {
    openssl::base64::decode_block(text).map_err(|_| "not valid base64".to_string())
}

/// The value of attribute `name` in a SCRAM message (`n=user,r=nonce`).
pub fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|field| {
        let mut chars = field.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &field[name.len_utf8() + 1..])
    })
}

/// A user name as SCRAM writes it: `,` and `=` escaped (RFC 5802 §5.1).
pub fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A user name as the client meant it; `None` for an escape SCRAM does
/// not define.
pub fn unescape_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 3) {
            Some("3D") => out.push('='),
            Some("2C") => out.push(','),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchange of RFC 7677 §3 (user "user", password "pencil").
    #[test]
    fn rfc7677_example_proof_and_signature() {
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let h = ScramHash::Sha256;
        let salt = unbase64(attribute(server_first, 's').unwrap()).unwrap();
        let iterations = attribute(server_first, 'i').unwrap().parse().unwrap();
        let keys = h.keys(&h.salted_password(b"pencil", &salt, iterations));
        let proof = h.client_proof(&keys, auth_message.as_bytes());
        assert_eq!(base64(&proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert!(h.proof_matches(&keys.stored_key, auth_message.as_bytes(), &proof));
        let mut wrong = proof.clone();
        wrong[0] ^= 1;
        assert!(!h.proof_matches(&keys.stored_key, auth_message.as_bytes(), &wrong));
        assert_eq!(
            base64(&h.server_signature(&keys.server_key, auth_message.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn names_escape_and_unescape() {
        assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
        assert_eq!(unescape_name("a=3Db=2Cc").as_deref(), Some("a=b,c"));
        assert_eq!(unescape_name("a=4Fb"), None);
        assert_eq!(unescape_name("a="), None);
    }

    #[test]
    fn attributes_are_found_by_name() {
        assert_eq!(attribute("n=user,r=abc", 'r'), Some("abc"));
        assert_eq!(attribute("n=user,r=abc", 's'), None);
        assert_eq!(attribute("n=user,rr=abc", 'r'), None);
        // A name of more than one byte is skipped whole, not cut inside.
        assert_eq!(attribute("é=x,r=abc", 'é'), Some("x"));
    }

    #[test]
    fn nonces_differ_and_have_no_comma() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert!(!a.contains(','));
    }
}
