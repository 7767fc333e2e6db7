//! Checking a client's OAUTHBEARER token: a compact JWS (RFC 7515) whose
//! claims (RFC 7519) say who the client is and until when. As Kafka's
//! `OAuthBearerValidatorCallbackHandler` (KIP-768) does with a JWKS file:
//! the signature must verify with a key of the JWKS (RS256 or ES256 only;
//! `none`, HMAC and the rest are refused, so a token cannot pick a weaker
//! check), `exp` is required and `nbf` honoured with a clock skew, `iss`
//! must be the configured issuer, `aud` must contain the configured
//! audience, and `sub` is the principal. Keys come from the JWKS file
//! only: header members that carry or point at keys (`jwk`, `jku`, `x5u`,
//! `x5c`) are ignored, so a token cannot bring its own key.
//!
//! Errors name what was wrong and never contain the token, which is a
//! credential: they may be logged.

use std::fmt;
use std::time::{Duration, SystemTime};

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use serde_yaml::{Mapping, Value};

use super::json;
use super::jwks::{JwksError, JwksFile};
use crate::config::OAuthBearerValidation;
use crate::logging::rfc3339_utc;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The JWS algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    fn named(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }
}

/// Base64url without padding (RFC 7515 §2), strictly: any other
/// character, a length no encoding produces or stray low bits are errors.
pub fn base64url_decode(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 4 == 1 {
        return Err("not base64url (impossible length)".to_string());
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let (mut pending, mut pending_bits) = (0u32, 0u32);
    for c in text.bytes() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err("not base64url (unexpected character)".to_string()),
        };
        pending = (pending << 6) | u32::from(sextet);
        pending_bits += 6;
        if pending_bits >= 8 {
            pending_bits -= 8;
            out.push((pending >> pending_bits) as u8);
            pending &= (1 << pending_bits) - 1;
        }
    }
    if pending != 0 {
        return Err("not base64url (stray bits at the end)".to_string());
    }
    Ok(out)
}

pub fn base64url_encode(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// `sub`.
    pub principal: String,
    /// `exp`: when the session the token opened must end (KIP-368).
    pub expires_at: SystemTime,
}

impl ValidToken {
    /// How long the token has left at `now`; zero once expired (possible
    /// within the clock skew).
    pub fn lifetime(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// Why a token was refused; the message names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRejected(pub String);

impl fmt::Display for TokenRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenRejected {}

/// The checks of `listen.security.sasl.oauthbearer`, with its JWKS.
#[derive(Debug)]
pub struct JwtValidator {
    jwks: JwksFile,
    issuer: String,
    audience: String,
    clock_skew: Duration,
}

impl JwtValidator {
    /// Loads the JWKS; an error stops the proxy from starting.
    pub fn new(settings: &OAuthBearerValidation) -> Result<JwtValidator, JwksError> {
        Ok(JwtValidator {
            jwks: JwksFile::load(&settings.jwks_path)?,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            clock_skew: Duration::from_millis(settings.clock_skew_ms),
        })
    }

    /// The JWKS, for [`JwksFile::reload_if_changed`]: `validate` itself
    /// never touches the file system.
    pub fn jwks(&self) -> &JwksFile {
        &self.jwks
    }

    /// Checks `token` at time `now`.
    pub fn validate(&self, token: &str, now: SystemTime) -> Result<ValidToken, TokenRejected> {
        self.check(token, now).map_err(TokenRejected)
    }

    fn check(&self, token: &str, now: SystemTime) -> Result<ValidToken, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "token of {} bytes is longer than the {MAX_TOKEN_BYTES} accepted",
                token.len()
            ));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return Err(match parts.len() {
                5 => "token is encrypted (JWE): only signed tokens (JWS) are accepted".to_string(),
                n => format!("token has {n} parts: a JWS has three (header.payload.signature)"),
            });
        };
        let header = decoded_object(header_b64, "header")?;
        let algorithm = algorithm(&header)?;
        let kid = json::string_member(&header, "kid").map_err(|e| format!("token header: {e}"))?;
        let source = self.jwks.source();
        let keys = self.jwks.keys();
        let key = keys.select(kid, algorithm, source)?;
        let signature =
            base64url_decode(signature_b64).map_err(|e| format!("token signature: {e}"))?;
        let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
        if !signature_verifies(algorithm, &key.key, signed.as_bytes(), &signature)? {
            return Err(match kid {
                Some(kid) => format!("signature does not verify with key {kid:?} of JWKS {source}"),
                None => format!(
                    "signature does not verify with the {} key of JWKS {source}",
                    algorithm.as_str()
                ),
            });
        }
        let claims = decoded_object(claims_b64, "claims")?;
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, claims: &Mapping, now: SystemTime) -> Result<ValidToken, String> {
        let expires_at = numeric_date(claims, "exp")?.ok_or("token has no exp claim")?;
        if expires_at
            .checked_add(self.clock_skew)
            .is_some_and(|deadline| now >= deadline)
        {
            return Err(format!("token expired at {}", rfc3339_utc(expires_at)));
        }
        if let Some(not_before) = numeric_date(claims, "nbf")? {
            if now.checked_add(self.clock_skew).unwrap_or(now) < not_before {
                return Err(format!(
                    "token is not valid before {}",
                    rfc3339_utc(not_before)
                ));
            }
        }
        match json::string_member(claims, "iss")? {
            Some(issuer) if issuer == self.issuer => {}
            Some(issuer) => {
                return Err(format!(
                    "issuer {issuer:?} is not the configured {:?}",
                    self.issuer
                ))
            }
            None => return Err("token has no iss claim".to_string()),
        }
        let audiences = audiences(claims)?;
        if !audiences.contains(&self.audience.as_str()) {
            return Err(format!(
                "audience {audiences:?} does not include the configured {:?}",
                self.audience
            ));
        }
        let principal = match json::string_member(claims, "sub")? {
            Some(sub) if !sub.is_empty() => sub.to_string(),
            _ => return Err("token has no sub claim (the principal)".to_string()),
        };
        Ok(ValidToken {
            principal,
            expires_at,
        })
    }
}

/// A base64url JSON object of the token; `part` names it in errors.
fn decoded_object(b64: &str, part: &str) -> Result<Mapping, String> {
    let bytes = base64url_decode(b64).map_err(|e| format!("token {part}: {e}"))?;
    json::object(&bytes).map_err(|e| format!("token {part}: {e}"))
}

/// The header's `alg`, when accepted; `crit` is refused as no critical
/// extension is understood (RFC 7515 §4.1.11).
fn algorithm(header: &Mapping) -> Result<Algorithm, String> {
    let alg = json::string_member(header, "alg")
        .map_err(|e| format!("token header: {e}"))?
        .ok_or("token header has no alg")?;
    let algorithm = Algorithm::named(alg)
        .ok_or_else(|| format!("alg {alg:?} not accepted (RS256 and ES256 are)"))?;
    if json::member(header, "crit").is_some() {
        return Err("token header has crit: no critical extension is supported".to_string());
    }
    Ok(algorithm)
}

fn signature_verifies(
    algorithm: Algorithm,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Public>,
    signed: &[u8],
    signature: &[u8],
) -> Result<bool, String> {
    // JWS writes an ES256 signature as r || s, 32 bytes each (RFC 7518
    // §3.4); OpenSSL verifies the DER form.
    let der;
    let signature = match algorithm {
        Algorithm::Rs256 => signature,
        Algorithm::Es256 => {
            if signature.len() != 64 {
                return Err(format!(
                    "ES256 signature of {} bytes: 64 expected",
                    signature.len()
                ));
            }
            let (r, s) = signature.split_at(32);
            let bignum = |b: &[u8]| BigNum::from_slice(b).map_err(|e| e.to_string());
            der = EcdsaSig::from_private_components(bignum(r)?, bignum(s)?)
                .and_then(|sig| sig.to_der())
                .map_err(|e| e.to_string())?;
            &der[..]
        }
    };
    let mut verifier = Verifier::new(MessageDigest::sha256(), key).map_err(|e| e.to_string())?;
    verifier.update(signed).map_err(|e| e.to_string())?;
    // OpenSSL reports a malformed signature as an error, a wrong one as
    // false: both mean the token is not signed by this key.
    Ok(verifier.verify(signature).unwrap_or(false))
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, fractions
/// allowed); `None` when absent.
fn numeric_date(claims: &Mapping, name: &str) -> Result<Option<SystemTime>, String> {
    let Some(value) = json::member(claims, name) else {
        return Ok(None);
    };
    let bad = || format!("{name} claim is not a date in seconds since 1970");
    let since_epoch = match value {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(secs)) if secs >= 0.0 => {
                Duration::try_from_secs_f64(secs).map_err(|_| bad())?
            }
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    SystemTime::UNIX_EPOCH
        .checked_add(since_epoch)
        .map(Some)
        .ok_or_else(bad)
}

/// `aud`: one string or a list of strings (RFC 7519 §4.1.3).
fn audiences(claims: &Mapping) -> Result<Vec<&str>, String> {
    let not_strings = || "aud claim is not a string or a list of strings".to_string();
    match json::member(claims, "aud") {
        None => Err("token has no aud claim".to_string()),
        Some(Value::String(one)) => Ok(vec![one.as_str()]),
        Some(Value::Sequence(many)) => many
            .iter()
            .map(|v| v.as_str().ok_or_else(not_strings))
            .collect(),
        Some(_) => Err(not_strings()),
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
