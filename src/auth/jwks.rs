//! A JWKS file (RFC 7517): the public keys client tokens are signed with,
//! by `kid`. Only what RS256 and ES256 verify with is kept: RSA keys of at
//! least 2048 bits (`n`, `e`) and EC P-256 keys (`x`, `y`). Keys of other
//! types, curves or uses (`"use": "enc"`) are skipped, as identity
//! providers publish them side by side; a key of a kept type that does not
//! parse refuses the whole file, so a typo never silently drops a key.
//!
//! The file is re-read when it changes ([`JwksFile::reload_if_changed`]),
//! so keys rotated by the identity provider are picked up without a
//! restart; a file that fails to load leaves the previous keys in place.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use parking_lot::{Mutex, RwLock};
use serde_yaml::{Mapping, Value};

use super::json;
use super::jwt::{base64url_decode, Algorithm};
use super::watched_file::WatchedFile;

/// RSA keys shorter than this are refused (RFC 7518 §3.3 requires 2048).
const MIN_RSA_BITS: u32 = 2048;

/// One verification key.
pub struct Jwk {
    /// `kid`; `None` when the JWKS entry has none.
    pub kid: Option<String>,
    /// The algorithm this key verifies (from its type).
    pub algorithm: Algorithm,
    pub key: PKey<Public>,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jwk({:?}, {})", self.kid, self.algorithm.as_str())
    }
}

/// The usable keys of one version of a JWKS file.
#[derive(Debug, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Why a JWKS file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwksError {}

impl Jwks {
    /// The keys of a JWKS document; `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Jwks, JwksError> {
        let fail = |what: String| JwksError(format!("JWKS {source}: {what}"));
        let doc = json::object(bytes).map_err(fail)?;
        let Some(Value::Sequence(entries)) = json::member(&doc, "keys") else {
            return Err(fail("no \"keys\" list".to_string()));
        };
        let mut keys: Vec<Jwk> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let Value::Mapping(entry) = entry else {
                return Err(fail(format!("keys[{i}] is not an object")));
            };
            let Some(jwk) = jwk(entry).map_err(|e| fail(format!("keys[{i}]: {e}")))? else {
                continue;
            };
            if jwk.kid.is_some() && keys.iter().any(|k| k.kid == jwk.kid) {
                return Err(fail(format!(
                    "kid {:?} appears twice",
                    jwk.kid.unwrap_or_default()
                )));
            }
            keys.push(jwk);
        }
        if keys.is_empty() {
            return Err(fail("no RS256 or ES256 signing key".to_string()));
        }
        Ok(Jwks { keys })
    }

    /// The key that verifies `algorithm` for a token whose header names
    /// `kid`; without a `kid`, the one key for `algorithm` if there is
    /// exactly one. `source` names the file in errors.
    pub fn select(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
        source: &str,
    ) -> Result<&Jwk, String> {
        let Some(kid) = kid else {
            let mut usable = self.keys.iter().filter(|k| k.algorithm == algorithm);
            return match (usable.next(), usable.next()) {
                (Some(only), None) => Ok(only),
                (None, _) => Err(format!("no {} key in JWKS {source}", algorithm.as_str())),
                (Some(_), Some(_)) => Err(format!(
                    "token has no kid and JWKS {source} has several {} keys",
                    algorithm.as_str()
                )),
            };
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or_else(|| format!("no key with kid {kid:?} in JWKS {source}"))?;
        if key.algorithm != algorithm {
            return Err(format!(
                "key {kid:?} in JWKS {source} is a {} key, the token says {}",
                key.algorithm.as_str(),
                algorithm.as_str()
            ));
        }
        Ok(key)
    }
}

/// One JWKS entry: `Ok(None)` for a key kept for other purposes.
fn jwk(entry: &Mapping) -> Result<Option<Jwk>, String> {
    let kty = json::string_member(entry, "kty")?.ok_or("no \"kty\"")?;
    if json::string_member(entry, "use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let algorithm = match (kty, json::string_member(entry, "crv")?) {
        ("RSA", _) => Algorithm::Rs256,
        ("EC", Some("P-256")) => Algorithm::Es256,
        _ => return Ok(None),
    };
    if let Some(alg) = json::string_member(entry, "alg")? {
        if alg != algorithm.as_str() {
            return Ok(None);
        }
    }
    let number = |name: &str| -> Result<Vec<u8>, String> {
        let text = json::string_member(entry, name)?.ok_or_else(|| format!("no \"{name}\""))?;
        base64url_decode(text).map_err(|e| format!("\"{name}\": {e}"))
    };
    let bignum = |name: &str| -> Result<BigNum, String> {
        BigNum::from_slice(&number(name)?).map_err(|e| format!("\"{name}\": {e}"))
    };
    let key = match algorithm {
        Algorithm::Rs256 => {
            let rsa = Rsa::from_public_components(bignum("n")?, bignum("e")?)
                .map_err(|e| format!("not an RSA key: {e}"))?;
            if rsa.n().num_bits() < MIN_RSA_BITS as i32 {
                return Err(format!(
                    "RSA key of {} bits: at least {MIN_RSA_BITS} are required",
                    rsa.n().num_bits()
                ));
            }
            PKey::from_rsa(rsa)
        }
        Algorithm::Es256 => {
            let (x, y) = (number("x")?, number("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".to_string());
            }
            let group =
                EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
            let (x, y) = (
                BigNum::from_slice(&x).map_err(|e| e.to_string())?,
                BigNum::from_slice(&y).map_err(|e| e.to_string())?,
            );
            let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .map_err(|_| "not a point on P-256".to_string())?;
            PKey::from_ec_key(ec)
        }
    }
    .map_err(|e| e.to_string())?;
    let kid = json::string_member(entry, "kid")?.map(str::to_string);
    Ok(Some(Jwk {
        kid,
        algorithm,
        key,
    }))
}

/// A JWKS file and the keys of its last good version, shared by the
/// threads that check tokens.
#[derive(Debug)]
pub struct JwksFile {
    /// The path as errors show it.
    source: String,
    watched: Mutex<WatchedFile>,
    current: RwLock<Arc<Jwks>>,
}

impl JwksFile {
    /// Loads the file; an error here stops the proxy from starting.
    pub fn load(path: &Path) -> Result<JwksFile, JwksError> {
        let file = JwksFile {
            source: path.display().to_string(),
            watched: Mutex::new(WatchedFile::new(path)),
            current: RwLock::new(Arc::new(Jwks::default())),
        };
        file.reload_if_changed()?;
        Ok(file)
    }

    /// The file's path, as errors show it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Re-reads the file if it changed; `Ok(true)` when new keys are in
    /// use. On an error the previous keys stay in use: the caller logs it.
    /// Costs one `stat` when nothing changed, so callers may check before
    /// every token.
    pub fn reload_if_changed(&self) -> Result<bool, JwksError> {
        let mut watched = self.watched.lock();
        let bytes = match watched.read_if_changed() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(false),
            Err(e) => return Err(JwksError(format!("JWKS {}: {e}", self.source))),
        };
        let jwks = Jwks::parse(&bytes, &self.source)?;
        *self.current.write() = Arc::new(jwks);
        Ok(true)
    }

    /// The keys in use.
    pub fn keys(&self) -> Arc<Jwks> {
        self.current.read().clone()
    }
}
