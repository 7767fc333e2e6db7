//! The server side of a SCRAM exchange (RFC 5802 §3, §5, §7): the client's
//! first message, the server's challenge, the client's proof, the
//! server's signature. The arithmetic is `scram`'s.
//!
//! A user the server does not know goes through the same exchange with a
//! credential made up from its name (`ScramCredential::stand_in`), so the
//! answers cannot tell a wrong name from a wrong password (RFC 5802 §9 lets
//! a server hide that).

use super::scram::{self, ScramHash};

/// Iterations of a salted password the proxy makes (Kafka's minimum and
/// RFC 7677's recommendation).
pub const ITERATIONS: u32 = 4096;

/// What the server keeps of one user's password for one hash: computed
/// once at start, so a login costs HMACs, not PBKDF2.
#[derive(Clone)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramCredential(***)")
    }
}

impl ScramCredential {
    pub fn from_password(hash: ScramHash, password: &[u8], salt: Vec<u8>, iterations: u32) -> ScramCredential {
        let keys = hash.keys(&hash.salted_password(password, &salt, iterations));
        ScramCredential { salt, iterations, stored_key: keys.stored_key, server_key: keys.server_key }
    }

    /// A credential for a user who does not exist: the same for the same
    /// name (a client asking twice sees the same salt), derived from a
    /// secret made at start, and matching no proof anyone can compute.
    pub fn stand_in(hash: ScramHash, secret: &[u8], username: &str) -> ScramCredential {
        let derive = |what: &str| hash.hmac(secret, format!("{what}\0{username}").as_bytes());
        let mut salt = derive("salt");
        salt.truncate(16);
        ScramCredential { salt, iterations: ITERATIONS, stored_key: derive("stored"), server_key: derive("server") }
    }
}

/// Why an exchange failed, as the `e=` value of RFC 5802 §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramError {
    InvalidEncoding,
    ExtensionsNotSupported,
    InvalidProof,
    ChannelBindingsDontMatch,
    ServerDoesSupportChannelBinding,
    InvalidUsernameEncoding,
    OtherError,
}

impl ScramError {
    pub fn as_str(self) -> &'static str {
        match self {
            ScramError::InvalidEncoding => "invalid-encoding",
            ScramError::ExtensionsNotSupported => "extensions-not-supported",
            ScramError::InvalidProof => "invalid-proof",
            ScramError::ChannelBindingsDontMatch => "channel-bindings-dont-match",
            ScramError::ServerDoesSupportChannelBinding => "server-does-support-channel-binding",
            ScramError::InvalidUsernameEncoding => "invalid-username-encoding",
            ScramError::OtherError => "other-error",
        }
    }

    /// The server-error message (`e=...`) a client may be sent.
    pub fn message(self) -> Vec<u8> {
        format!("e={}", self.as_str()).into_bytes()
    }
}

/// One exchange, from the client's first message to the server's final one.
#[derive(Debug)]
pub enum ScramServer {
    ExpectFirst { hash: ScramHash },
    ExpectFinal(Box<Challenged>),
    Finished,
}

/// What the server remembers between its challenge and the client's proof.
#[derive(Debug)]
pub struct Challenged {
    hash: ScramHash,
    username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
}

impl ScramServer {
    pub fn new(hash: ScramHash) -> ScramServer {
        ScramServer::ExpectFirst { hash }
    }

    /// The user named in the client's first message, once it was read.
    pub fn username(&self) -> Option<&str> {
        match self {
            ScramServer::ExpectFinal(c) => Some(&c.username),
            _ => None,
        }
    }

    /// Read the client's first message and answer the challenge (the
    /// server's first message). `credential` finds the user's credential
    /// (a stand-in for an unknown user); `server_nonce` is fresh per
    /// exchange (`scram::nonce`).
    pub fn client_first(
        &mut self,
        message: &[u8],
        credential: impl FnOnce(&str) -> ScramCredential,
        server_nonce: &str,
    ) -> Result<Vec<u8>, ScramError> {
        let ScramServer::ExpectFirst { hash } = *self else { return Err(ScramError::OtherError) };
        *self = ScramServer::Finished;
        let text = std::str::from_utf8(message).map_err(|_| ScramError::InvalidEncoding)?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Err(ScramError::InvalidEncoding),
        };
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ServerDoesSupportChannelBinding),
            _ => return Err(ScramError::InvalidEncoding),
        }
        let fields: Vec<&str> = bare.split(',').collect();
        let (Some(name), Some(client_nonce)) = (fields.first().and_then(|f| f.strip_prefix("n=")), fields.get(1).and_then(|f| f.strip_prefix("r=")))
        else {
            // A leading "m=" is a mandatory extension (RFC 5802 §5.1).
            return Err(if bare.starts_with("m=") { ScramError::ExtensionsNotSupported } else { ScramError::InvalidEncoding });
        };
        let username = scram::unescape_name(name).filter(|n| !n.is_empty()).ok_or(ScramError::InvalidUsernameEncoding)?;
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return Err(ScramError::InvalidEncoding);
        }
        if let Some(authzid) = authzid.strip_prefix("a=") {
            // As Kafka: a client acts as itself only.
            if scram::unescape_name(authzid).as_deref() != Some(username.as_str()) {
                return Err(ScramError::OtherError);
            }
        } else if !authzid.is_empty() {
            return Err(ScramError::InvalidEncoding);
        }
        let credential = credential(&username);
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={}", scram::base64(&credential.salt), credential.iterations);
        let answer = server_first.clone().into_bytes();
        *self = ScramServer::ExpectFinal(Box::new(Challenged {
            hash,
            username,
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            credential,
        }));
        Ok(answer)
    }

    /// Check the client's proof; on success, the server's final message
    /// (`v=` signature) and the authenticated user.
    pub fn client_final(&mut self, message: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let ScramServer::ExpectFinal(challenged) = std::mem::replace(self, ScramServer::Finished) else {
            return Err(ScramError::OtherError);
        };
        let c = *challenged;
        let text = std::str::from_utf8(message).map_err(|_| ScramError::InvalidEncoding)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::InvalidEncoding)?;
        let binding = scram::attribute(without_proof, 'c').ok_or(ScramError::InvalidEncoding)?;
        if scram::unbase64(binding).map_err(|_| ScramError::InvalidEncoding)? != c.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingsDontMatch);
        }
        // Kafka's ScramSaslServer checks that the nonce ends with the
        // server's (not that it equals it), and librdkafka before 2.2
        // sends its own nonce in front of the server's whole one: the
        // proof still covers what was sent.
        if !scram::attribute(without_proof, 'r').is_some_and(|r| r.ends_with(c.nonce.as_str())) {
            return Err(ScramError::InvalidProof);
        }
        let proof = scram::unbase64(proof).map_err(|_| ScramError::InvalidEncoding)?;
        let auth_message = format!("{},{},{without_proof}", c.client_first_bare, c.server_first);
        if !c.hash.proof_matches(&c.credential.stored_key, auth_message.as_bytes(), &proof) {
            return Err(ScramError::InvalidProof);
        }
        let signature = c.hash.server_signature(&c.credential.server_key, auth_message.as_bytes());
        Ok((format!("v={}", scram::base64(&signature)).into_bytes(), c.username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_FIRST: &[u8] = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_FINAL: &[u8] =
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

    fn rfc7677_credential() -> ScramCredential {
        let salt = scram::unbase64("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredential::from_password(ScramHash::Sha256, b"pencil", salt, 4096)
    }

    /// RFC 7677 §3, given its nonces and salt, from the server's side.
    #[test]
    fn rfc7677_exchange() {
        let mut server = ScramServer::new(ScramHash::Sha256);
        let first = server
            .client_first(CLIENT_FIRST, |name| {
                assert_eq!(name, "user");
                rfc7677_credential()
            }, SERVER_NONCE)
            .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        assert_eq!(server.username(), Some("user"));
        let (last, user) = server.client_final(CLIENT_FINAL).unwrap();
        assert_eq!(String::from_utf8(last).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert_eq!(user, "user");
        assert!(matches!(server, ScramServer::Finished));
    }

    fn challenged() -> ScramServer {
        let mut server = ScramServer::new(ScramHash::Sha256);
        server.client_first(CLIENT_FIRST, |_| rfc7677_credential(), SERVER_NONCE).unwrap();
        server
    }

    #[test]
    fn a_wrong_proof_nonce_or_binding_fails() {
        let replace = |from: &str, to: &str| String::from_utf8_lossy(CLIENT_FINAL).replace(from, to).into_bytes();
        let wrong_proof = replace("p=dHz", "p=eHz");
        assert_eq!(challenged().client_final(&wrong_proof).unwrap_err(), ScramError::InvalidProof);
        let wrong_nonce = replace("$k0,", "$k1,");
        assert_eq!(challenged().client_final(&wrong_nonce).unwrap_err(), ScramError::InvalidProof);
        let cut_nonce = replace("r=rOprNGfwEbeRWgbNEkqO%", "r=%");
        assert_eq!(challenged().client_final(&cut_nonce).unwrap_err(), ScramError::InvalidProof);
        let wrong_binding = replace("c=biws", "c=eSws");
        assert_eq!(challenged().client_final(&wrong_binding).unwrap_err(), ScramError::ChannelBindingsDontMatch);
        assert_eq!(challenged().client_final(b"c=biws,r=x").unwrap_err(), ScramError::InvalidEncoding);
        // One proof per exchange.
        let mut server = challenged();
        server.client_final(&wrong_proof).unwrap_err();
        assert_eq!(server.client_final(CLIENT_FINAL).unwrap_err(), ScramError::OtherError);
    }

    #[test]
    fn malformed_first_messages_fail_with_their_rfc_error() {
        let first = |m: &[u8]| ScramServer::new(ScramHash::Sha256).client_first(m, |_| rfc7677_credential(), "x").unwrap_err();
        assert_eq!(first(b"p=tls-unique,,n=user,r=abc"), ScramError::ServerDoesSupportChannelBinding);
        assert_eq!(first(b"n,,m=ext,n=user,r=abc"), ScramError::ExtensionsNotSupported);
        assert_eq!(first(b"n,,n=us=ZZer,r=abc"), ScramError::InvalidUsernameEncoding);
        assert_eq!(first(b"n,,n=user"), ScramError::InvalidEncoding);
        assert_eq!(first(b"n,a=other,n=user,r=abc"), ScramError::OtherError);
        assert_eq!(first(b"x,,n=user,r=abc"), ScramError::InvalidEncoding);
        assert_eq!(first(b"\xff"), ScramError::InvalidEncoding);
        assert_eq!(ScramError::InvalidProof.message(), b"e=invalid-proof");
    }

    #[test]
    fn stand_ins_are_stable_per_name_and_never_match() {
        let secret = [9u8; 32];
        let a = ScramCredential::stand_in(ScramHash::Sha512, &secret, "mallory");
        let b = ScramCredential::stand_in(ScramHash::Sha512, &secret, "mallory");
        let c = ScramCredential::stand_in(ScramHash::Sha512, &secret, "trudy");
        assert_eq!((a.salt.clone(), a.stored_key.clone()), (b.salt, b.stored_key));
        assert_ne!(a.salt, c.salt);
        assert_eq!(a.iterations, ITERATIONS);
        assert_eq!(format!("{a:?}"), "ScramCredential(***)");
    }
}
