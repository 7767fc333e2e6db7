//! Keys, JWKS documents and signed tokens made by the tests themselves,
//! with the openssl crate, so the JWT checks are tested against what an
//! identity provider would produce rather than against fixed strings.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;

use super::jwt::base64url_encode;
use crate::config::{ListenSasl, OAuthBearerValidation, SaslMechanism};

/// RSA keys take a while to generate: each test process makes two.
pub(crate) fn rsa_key() -> &'static PKey<Private> {
    static KEY: OnceLock<PKey<Private>> = OnceLock::new();
    KEY.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

pub(crate) fn other_rsa_key() -> &'static PKey<Private> {
    static KEY: OnceLock<PKey<Private>> = OnceLock::new();
    KEY.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

pub(crate) fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// The JWKS entry of an RSA key.
pub(crate) fn rsa_jwk(key: &PKey<Private>, kid: &str) -> String {
    let rsa = key.rsa().unwrap();
    format!(
        r#"{{"kty":"RSA","use":"sig","alg":"RS256","kid":"{kid}","n":"{}","e":"{}"}}"#,
        base64url_encode(&rsa.n().to_vec()),
        base64url_encode(&rsa.e().to_vec())
    )
}

/// The JWKS entry of a P-256 key.
pub(crate) fn ec_jwk(key: &PKey<Private>, kid: &str) -> String {
    let ec = key.ec_key().unwrap();
    let mut ctx = openssl::bn::BigNumContext::new().unwrap();
    let (mut x, mut y) = (
        openssl::bn::BigNum::new().unwrap(),
        openssl::bn::BigNum::new().unwrap(),
    );
    ec.public_key()
        .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
        .unwrap();
    format!(
        r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"{}","y":"{}"}}"#,
        base64url_encode(&x.to_vec_padded(32).unwrap()),
        base64url_encode(&y.to_vec_padded(32).unwrap())
    )
}

pub(crate) fn jwks(entries: &[String]) -> String {
    format!(r#"{{"keys":[{}]}}"#, entries.join(","))
}

/// A compact JWS of `header` and `claims` (JSON texts) signed with `key`
/// as `alg` says (RS256 or ES256).
pub(crate) fn sign(header: &str, claims: &str, key: &PKey<Private>) -> String {
    let signed = format!(
        "{}.{}",
        base64url_encode(header.as_bytes()),
        base64url_encode(claims.as_bytes())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
    signer.update(signed.as_bytes()).unwrap();
    let mut signature = signer.sign_to_vec().unwrap();
    if key.ec_key().is_ok() {
        let der = EcdsaSig::from_der(&signature).unwrap();
        signature = der.r().to_vec_padded(32).unwrap();
        signature.extend(der.s().to_vec_padded(32).unwrap());
    }
    format!("{signed}.{}", base64url_encode(&signature))
}

/// A fixed "now" for the tests: 2023-11-14T22:13:20Z.
pub(crate) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Seconds since the epoch of [`now`] moved by `offset` seconds.
pub(crate) fn at(offset: i64) -> i64 {
    1_700_000_000 + offset
}

/// Claims of subject alice, issued a minute before [`now`], with the
/// given issuer, audience (a JSON value) and expiry `exp_offset` seconds
/// from now.
pub(crate) fn claims(iss: &str, aud: &str, exp_offset: i64) -> String {
    format!(
        r#"{{"sub":"alice","iss":"{iss}","aud":{aud},"exp":{},"iat":{}}}"#,
        at(exp_offset),
        at(-60)
    )
}

pub(crate) const TEST_ISSUER: &str = "https://idp.test";
pub(crate) const TEST_AUDIENCE: &str = "kafka";

/// `listen.security.sasl` with only OAUTHBEARER, its JWKS (`rsa_key()` as
/// rsa-1) written in `dir`.
pub(crate) fn oauthbearer_sasl(dir: &Path, session_lifetime_ms: u64) -> ListenSasl {
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[rsa_jwk(rsa_key(), "rsa-1")])).unwrap();
    ListenSasl {
        enabled_mechanisms: vec![SaslMechanism::OAuthBearer],
        users: Vec::new(),
        oauthbearer: Some(OAuthBearerValidation {
            jwks_path,
            issuer: TEST_ISSUER.to_string(),
            audience: TEST_AUDIENCE.to_string(),
            clock_skew_ms: 0,
        }),
        session_lifetime_ms,
    }
}

/// A token of `sub` for [`oauthbearer_sasl`], signed by `key` as rsa-1,
/// expiring `exp_offset` seconds after `now` (the real clock, for tests
/// that go through code reading it).
pub(crate) fn rsa_token_at(key: &PKey<Private>, sub: &str, now: SystemTime, exp_offset: i64) -> String {
    let now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = format!(
        r#"{{"sub":"{sub}","iss":"{TEST_ISSUER}","aud":"{TEST_AUDIENCE}","exp":{},"iat":{}}}"#,
        now + exp_offset,
        now - 60
    );
    sign(r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#, &claims, key)
}
