//! The SASL parsers of `src/auth`. The first input byte picks one; the
//! rest is its input:
//!
//! 0. SCRAM: attributes, name escaping (escape then unescape is the
//!    identity), base64.
//! 1. OAUTHBEARER client first message: what parses writes back as bytes
//!    that parse the same.
//! 2. OAUTHBEARER error challenge, and the one the proxy writes from the
//!    input's fields.
//! 3. A JWKS document.
//! 4. A compact JWS checked against the golden JWKS (RS256 and ES256).
//! 5. Claims and header, signed here with an ES256 key of a JWKS made at
//!    start, so that fuzzed claims get past the signature.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use kpr_proxy::auth::jwks::Jwks;
use kpr_proxy::auth::jwt::{base64url_decode, base64url_encode, JwtValidator};
use kpr_proxy::auth::oauthbearer::{error_response, is_error_acknowledgement, parse_error_response, ClientInitialResponse};
use kpr_proxy::auth::{json, scram};
use kpr_proxy::config::OAuthBearerValidation;
use libfuzzer_sys::fuzz_target;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::Private;

const GOLDEN_JWKS: &[u8] = include_bytes!("../../tests/golden/oauthbearer/jwks.json");
/// Inside the golden tokens' validity (2024 to 2100).
const NOW_SECS: u64 = 2_000_000_000;

fn validator(name: &str, jwks: &[u8]) -> JwtValidator {
    let path = std::env::temp_dir().join(format!("kpr-fuzz-{}-{name}.json", std::process::id()));
    std::fs::write(&path, jwks).expect("writes the JWKS");
    let settings = OAuthBearerValidation {
        jwks_path: path.clone(),
        issuer: "https://idp.golden".to_string(),
        audience: "kafka".to_string(),
        clock_skew_ms: 30_000,
    };
    let validator = JwtValidator::new(&settings).expect("the JWKS loads");
    let _ = std::fs::remove_file(path);
    validator
}

static GOLDEN: LazyLock<JwtValidator> = LazyLock::new(|| validator("golden", GOLDEN_JWKS));

/// An ES256 key, and a validator whose JWKS holds its public half.
static SIGNER: LazyLock<(EcKey<Private>, JwtValidator)> = LazyLock::new(|| {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = EcKey::generate(&group).unwrap();
    let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
    let mut ctx = BigNumContext::new().unwrap();
    key.public_key().affine_coordinates(&group, &mut x, &mut y, &mut ctx).unwrap();
    let coordinate = |n: &BigNum| base64url_encode(&n.to_vec_padded(32).unwrap());
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"fuzz","alg":"ES256","use":"sig","x":"{}","y":"{}"}}]}}"#,
        coordinate(&x),
        coordinate(&y)
    );
    let validator = validator("signer", jwks.as_bytes());
    (key, validator)
});

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn scram_parts(text: &str) {
    for name in text.chars().take(4) {
        let _ = scram::attribute(text, name);
    }
    let _ = scram::attribute(text, 'r');
    let _ = scram::unescape_name(text);
    assert_eq!(scram::unescape_name(&scram::escape_name(text)).as_deref(), Some(text));
    let _ = scram::unbase64(text);
    let _ = base64url_decode(text);
}

fn client_first(message: &[u8]) {
    let Ok(parsed) = ClientInitialResponse::parse(message) else { return };
    let again = ClientInitialResponse::parse(&parsed.to_bytes()).expect("a message written back parses");
    assert_eq!(again, parsed);
}

fn error_challenge(challenge: &[u8]) {
    let _ = is_error_acknowledgement(challenge);
    let _ = parse_error_response(challenge);
    let Ok(text) = std::str::from_utf8(challenge) else { return };
    let mut fields = text.splitn(3, '\u{1}');
    let status = fields.next().unwrap_or_default();
    let (scope, openid) = (fields.next(), fields.next());
    let written = error_response(status, scope, openid);
    let read = parse_error_response(&written).expect("the proxy's challenge reads back");
    assert_eq!((read.status.as_str(), read.scope.as_deref(), read.openid_configuration.as_deref()), (status, scope, openid));
}

/// `header` and `claims` are the input split at its first NUL.
fn signed_token(input: &[u8]) {
    let (key, validator) = &*SIGNER;
    let at = input.iter().position(|&b| b == 0).unwrap_or(input.len());
    let (header, claims) = (&input[..at], input.get(at + 1..).unwrap_or_default());
    let signed = format!("{}.{}", base64url_encode(header), base64url_encode(claims));
    let digest = hash(MessageDigest::sha256(), signed.as_bytes()).unwrap();
    let signature = EcdsaSig::sign(&digest, key).unwrap();
    let mut raw = signature.r().to_vec_padded(32).unwrap();
    raw.extend(signature.s().to_vec_padded(32).unwrap());
    let _ = validator.validate(&format!("{signed}.{}", base64url_encode(&raw)), now());
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else { return };
    let text = std::str::from_utf8(input);
    match which % 6 {
        0 => {
            if let Ok(text) = text {
                scram_parts(text);
            }
        }
        1 => client_first(input),
        2 => error_challenge(input),
        3 => {
            let _ = json::object(input);
            let _ = Jwks::parse(input, "fuzz");
        }
        4 => {
            if let Ok(token) = text {
                let _ = GOLDEN.validate(token, now());
            }
        }
        _ => signed_token(input),
    }
});
