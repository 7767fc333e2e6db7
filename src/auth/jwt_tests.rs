//! Tests of `auth::jwt` and `auth::jwks` with keys and tokens made here.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::auth::jwks::Jwks;
use crate::auth::test_tokens::{
    at, claims, ec_jwk, ec_key, jwks, now, other_rsa_key, rsa_jwk, rsa_key, sign,
};
use crate::auth::watched_file::tests::{write_at, TempDir};

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "kafka";
const RS_HEADER: &str = r#"{"alg":"RS256","typ":"JWT","kid":"rsa-1"}"#;
const ES_HEADER: &str = r#"{"alg":"ES256","kid":"ec-1"}"#;

struct Fixture {
    _dir: TempDir,
    jwks_path: std::path::PathBuf,
    ec: openssl::pkey::PKey<openssl::pkey::Private>,
    validator: JwtValidator,
}

/// A JWKS file with `rsa_key()` as rsa-1 and a fresh P-256 key as ec-1.
fn fixture() -> Fixture {
    let dir = TempDir::new("jwks");
    let ec = ec_key();
    let jwks_path = dir.0.join("jwks.json");
    write_at(
        &jwks_path,
        jwks(&[rsa_jwk(rsa_key(), "rsa-1"), ec_jwk(&ec, "ec-1")]).as_bytes(),
        0,
    );
    let validator = JwtValidator::new(&OAuthBearerValidation {
        jwks_path: jwks_path.clone(),
        issuer: ISSUER.to_string(),
        audience: AUDIENCE.to_string(),
        clock_skew_ms: 30_000,
    })
    .unwrap();
    Fixture {
        _dir: dir,
        jwks_path,
        ec,
        validator,
    }
}

fn good_claims() -> String {
    claims(ISSUER, "\"kafka\"", 3600)
}

fn rejected(f: &Fixture, token: &str) -> String {
    match f.validator.validate(token, now()) {
        Ok(valid) => panic!("accepted: {valid:?}"),
        Err(TokenRejected(why)) => {
            assert!(
                token.is_empty() || !why.contains(token),
                "the message must not carry the token"
            );
            why
        }
    }
}

#[test]
fn valid_rs256_and_es256_tokens_give_the_principal_and_expiry() {
    let f = fixture();
    for token in [
        sign(RS_HEADER, &good_claims(), rsa_key()),
        sign(ES_HEADER, &good_claims(), &f.ec),
    ] {
        let valid = f.validator.validate(&token, now()).unwrap();
        assert_eq!(valid.principal, "alice");
        assert_eq!(valid.expires_at, now() + Duration::from_secs(3600));
        assert_eq!(valid.lifetime(now()), Duration::from_secs(3600));
    }
}

#[test]
fn wrong_signatures_are_refused() {
    let f = fixture();
    let signed_by_another = sign(RS_HEADER, &good_claims(), other_rsa_key());
    assert_eq!(
        rejected(&f, &signed_by_another),
        format!(
            "signature does not verify with key \"rsa-1\" of JWKS {}",
            f.jwks_path.display()
        )
    );
    let good = sign(ES_HEADER, &good_claims(), &f.ec);
    let (signed, _) = good.rsplit_once('.').unwrap();
    let other_claims = sign(ES_HEADER, &claims(ISSUER, "\"kafka\"", 7200), &f.ec);
    let (_, other_signature) = other_claims.rsplit_once('.').unwrap();
    assert!(rejected(&f, &format!("{signed}.{other_signature}"))
        .starts_with("signature does not verify"));
    assert_eq!(
        rejected(&f, &format!("{signed}.{}", base64url_encode(&[1; 63]))),
        "ES256 signature of 63 bytes: 64 expected"
    );
    assert!(rejected(&f, &format!("{signed}.")).contains("64 expected"));
}

#[test]
fn the_kid_must_name_a_key_of_the_right_type() {
    let f = fixture();
    let es_with_rsa_kid = sign(r#"{"alg":"ES256","kid":"rsa-1"}"#, &good_claims(), &f.ec);
    assert_eq!(
        rejected(&f, &es_with_rsa_kid),
        format!(
            "key \"rsa-1\" in JWKS {} is a RS256 key, the token says ES256",
            f.jwks_path.display()
        )
    );
    let unknown = sign(r#"{"alg":"RS256","kid":"gone"}"#, &good_claims(), rsa_key());
    assert_eq!(
        rejected(&f, &unknown),
        format!("no key with kid \"gone\" in JWKS {}", f.jwks_path.display())
    );
    // Without a kid, the one key of the token's type is used.
    let no_kid = sign(r#"{"alg":"ES256"}"#, &good_claims(), &f.ec);
    assert_eq!(
        f.validator.validate(&no_kid, now()).unwrap().principal,
        "alice"
    );
}

#[test]
fn only_rs256_and_es256_are_accepted() {
    let f = fixture();
    let body = base64url_encode(good_claims().as_bytes());
    let none = format!("{}.{body}.", base64url_encode(br#"{"alg":"none"}"#));
    assert_eq!(
        rejected(&f, &none),
        "alg \"none\" not accepted (RS256 and ES256 are)"
    );
    // An HS256 token "signed" with the RSA public key as HMAC secret: the
    // classic algorithm confusion attack.
    let header = base64url_encode(br#"{"alg":"HS256","kid":"rsa-1"}"#);
    let secret = rsa_key().public_key_to_pem().unwrap();
    let mac =
        crate::auth::scram::ScramHash::Sha256.hmac(&secret, format!("{header}.{body}").as_bytes());
    let hs256 = format!("{header}.{body}.{}", base64url_encode(&mac));
    assert_eq!(
        rejected(&f, &hs256),
        "alg \"HS256\" not accepted (RS256 and ES256 are)"
    );
    let no_alg = sign(r#"{"kid":"rsa-1"}"#, &good_claims(), rsa_key());
    assert_eq!(rejected(&f, &no_alg), "token header has no alg");
    let crit = sign(
        r#"{"alg":"RS256","kid":"rsa-1","crit":["exp"]}"#,
        &good_claims(),
        rsa_key(),
    );
    assert_eq!(
        rejected(&f, &crit),
        "token header has crit: no critical extension is supported"
    );
}

#[test]
fn expiry_and_not_before_allow_the_clock_skew() {
    let f = fixture();
    let token = |claims: String| sign(RS_HEADER, &claims, rsa_key());
    let expired = token(claims(ISSUER, "\"kafka\"", -31));
    assert_eq!(
        rejected(&f, &expired),
        "token expired at 2023-11-14T22:12:49.000Z"
    );
    let within_skew = token(claims(ISSUER, "\"kafka\"", -29));
    let valid = f.validator.validate(&within_skew, now()).unwrap();
    assert_eq!(valid.lifetime(now()), Duration::ZERO);

    let nbf = |offset: i64| {
        token(format!(
            r#"{{"sub":"a","iss":"{ISSUER}","aud":"kafka","exp":{},"nbf":{}}}"#,
            at(3600),
            at(offset)
        ))
    };
    assert_eq!(
        rejected(&f, &nbf(31)),
        "token is not valid before 2023-11-14T22:13:51.000Z"
    );
    assert!(f.validator.validate(&nbf(29), now()).is_ok());

    let no_exp = token(format!(r#"{{"sub":"a","iss":"{ISSUER}","aud":"kafka"}}"#));
    assert_eq!(rejected(&f, &no_exp), "token has no exp claim");
    for bad in ["\"soon\"", "-5", "1e400", "18446744073709551615"] {
        let odd_exp = token(format!(
            r#"{{"sub":"a","iss":"{ISSUER}","aud":"kafka","exp":{bad}}}"#
        ));
        assert_eq!(
            rejected(&f, &odd_exp),
            "exp claim is not a date in seconds since 1970",
            "exp {bad}"
        );
    }
    let fractional = token(format!(
        r#"{{"sub":"a","iss":"{ISSUER}","aud":"kafka","exp":{}.5}}"#,
        at(10)
    ));
    let valid = f.validator.validate(&fractional, now()).unwrap();
    assert_eq!(valid.lifetime(now()), Duration::from_millis(10_500));
}

#[test]
fn issuer_audience_and_subject_are_checked() {
    let f = fixture();
    let token = |claims: String| sign(RS_HEADER, &claims, rsa_key());
    assert_eq!(
        rejected(&f, &token(claims("https://evil", "\"kafka\"", 60))),
        "issuer \"https://evil\" is not the configured \"https://idp.example\""
    );
    assert_eq!(
        rejected(&f, &token(claims(ISSUER, "\"other\"", 60))),
        "audience [\"other\"] does not include the configured \"kafka\""
    );
    assert_eq!(
        rejected(&f, &token(claims(ISSUER, "[\"a\",\"b\"]", 60))),
        "audience [\"a\", \"b\"] does not include the configured \"kafka\""
    );
    let listed = token(claims(ISSUER, "[\"web\",\"kafka\"]", 60));
    assert_eq!(
        f.validator.validate(&listed, now()).unwrap().principal,
        "alice"
    );
    assert_eq!(
        rejected(&f, &token(claims(ISSUER, "[\"kafka\",7]", 60))),
        "aud claim is not a string or a list of strings"
    );
    let no_sub = token(format!(
        r#"{{"iss":"{ISSUER}","aud":"kafka","exp":{}}}"#,
        at(60)
    ));
    assert_eq!(
        rejected(&f, &no_sub),
        "token has no sub claim (the principal)"
    );
    let no_iss = token(format!(r#"{{"sub":"a","aud":"kafka","exp":{}}}"#, at(60)));
    assert_eq!(rejected(&f, &no_iss), "token has no iss claim");
    let no_aud = token(format!(
        r#"{{"sub":"a","iss":"{ISSUER}","exp":{}}}"#,
        at(60)
    ));
    assert_eq!(rejected(&f, &no_aud), "token has no aud claim");
}

#[test]
fn malformed_tokens_name_the_part_that_is_wrong() {
    let f = fixture();
    assert_eq!(
        rejected(&f, ""),
        "token has 1 parts: a JWS has three (header.payload.signature)"
    );
    assert_eq!(
        rejected(&f, "a.b.c.d.e"),
        "token is encrypted (JWE): only signed tokens (JWS) are accepted"
    );
    assert_eq!(
        rejected(&f, "!!.e30.AA"),
        "token header: not base64url (unexpected character)"
    );
    assert_eq!(
        rejected(&f, &format!("{}.e30.AA", base64url_encode(b"[1]"))),
        "token header: not a JSON object"
    );
    let big = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(
        rejected(&f, &big),
        format!(
            "token of {} bytes is longer than the 65536 accepted",
            big.len()
        )
    );
    // A well-signed token whose claims are not JSON.
    let header = base64url_encode(RS_HEADER.as_bytes());
    let body = base64url_encode(b"not json");
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), rsa_key()).unwrap();
    signer
        .update(format!("{header}.{body}").as_bytes())
        .unwrap();
    let signature = base64url_encode(&signer.sign_to_vec().unwrap());
    assert_eq!(
        rejected(&f, &format!("{header}.{body}.{signature}")),
        "token claims: not a JSON object"
    );
}

#[test]
fn rotated_keys_are_picked_up_when_the_file_changes() {
    let f = fixture();
    let new_key = ec_key();
    let token = sign(r#"{"alg":"ES256","kid":"ec-2"}"#, &good_claims(), &new_key);
    assert!(rejected(&f, &token).starts_with("no key with kid \"ec-2\""));
    assert_eq!(f.validator.jwks().reload_if_changed(), Ok(false));

    write_at(
        &f.jwks_path,
        jwks(&[ec_jwk(&new_key, "ec-2")]).as_bytes(),
        1,
    );
    assert_eq!(f.validator.jwks().reload_if_changed(), Ok(true));
    assert_eq!(
        f.validator.validate(&token, now()).unwrap().principal,
        "alice"
    );
    let old = sign(ES_HEADER, &good_claims(), &f.ec);
    assert!(rejected(&f, &old).starts_with("no key with kid \"ec-1\""));

    // A broken rewrite is reported once and the keys in use stay.
    write_at(&f.jwks_path, b"{\"keys\": [", 2);
    let err = f.validator.jwks().reload_if_changed().unwrap_err();
    assert_eq!(
        err.0,
        format!("JWKS {}: not a JSON object", f.jwks_path.display())
    );
    assert_eq!(f.validator.jwks().reload_if_changed(), Ok(false));
    assert!(f.validator.validate(&token, now()).is_ok());
}

#[test]
fn jwks_documents_keep_only_usable_signing_keys() {
    let rsa = rsa_jwk(rsa_key(), "r");
    let skipped = [
        r#"{"kty":"oct","k":"c2VjcmV0"}"#.to_string(),
        r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#.to_string(),
        rsa_jwk(other_rsa_key(), "enc").replace("\"use\":\"sig\"", "\"use\":\"enc\""),
    ];
    let keys = Jwks::parse(jwks(&[skipped.join(","), rsa.clone()]).as_bytes(), "F").unwrap();
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].kid.as_deref(), Some("r"));

    let err = |doc: &str| Jwks::parse(doc.as_bytes(), "F").unwrap_err().0;
    assert_eq!(
        err(r#"{"keys":[]}"#),
        "JWKS F: no RS256 or ES256 signing key"
    );
    assert_eq!(err(r#"{"kid":"x"}"#), "JWKS F: no \"keys\" list");
    assert_eq!(
        err(&jwks(&[rsa.clone(), rsa.clone()])),
        "JWKS F: kid \"r\" appears twice"
    );
    assert_eq!(
        err(r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#),
        "JWKS F: keys[0]: no \"n\""
    );
    assert_eq!(
        err(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#),
        "JWKS F: keys[0]: P-256 coordinates must be 32 bytes each"
    );
    let off_curve = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","x":"{0}","y":"{0}"}}]}}"#,
        base64url_encode(&[7; 32])
    );
    assert_eq!(err(&off_curve), "JWKS F: keys[0]: not a point on P-256");
    let small = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
    assert_eq!(
        err(&jwks(&[rsa_jwk(&small, "s")])),
        "JWKS F: keys[0]: RSA key of 1024 bits: at least 2048 are required"
    );
}

#[test]
fn base64url_round_trips_and_is_strict() {
    for len in 0..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let text = base64url_encode(&bytes);
        assert!(!text.contains(['=', '+', '/']));
        assert_eq!(base64url_decode(&text).unwrap(), bytes);
    }
    assert_eq!(base64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
    assert!(
        base64url_decode("A").is_err(),
        "no encoding is one character long"
    );
    assert!(base64url_decode("AB").is_err(), "stray bits");
    assert!(base64url_decode("AA==").is_err(), "no padding in JWS");
    assert!(base64url_decode("A+/A").is_err(), "plain base64 alphabet");
}

proptest! {
    #[test]
    fn random_tokens_never_panic(token in "[A-Za-z0-9_.=-]{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let f = fixture();
        let _ = f.validator.validate(&token, now());
        let _ = f.validator.validate(&String::from_utf8_lossy(&bytes), now());
        let _ = base64url_decode(&String::from_utf8_lossy(&bytes));
        let _ = Jwks::parse(&bytes, "F");
    }

    #[test]
    fn random_json_in_a_signed_token_never_panics(header in "\\{[ -~]{0,60}\\}", claims in "\\{[ -~]{0,60}\\}") {
        let f = fixture();
        let _ = f.validator.validate(&sign(&header, &claims, rsa_key()), now());
        let _ = f.validator.validate(&sign(RS_HEADER, &claims, rsa_key()), now());
    }
}

/// Tokens made by tests/e2e/jwt_tokens.py with the `openssl` command line
/// (`python3 tests/e2e/jwt_tokens.py tests/golden/oauthbearer`): what the
/// end-to-end tests send is what this validator accepts.
#[test]
fn tokens_of_the_end_to_end_helper_are_accepted() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/oauthbearer");
    let validator = JwtValidator::new(&OAuthBearerValidation {
        jwks_path: golden.join("jwks.json"),
        issuer: "https://idp.golden".to_string(),
        audience: "kafka".to_string(),
        clock_skew_ms: 0,
    })
    .unwrap();
    let in_2030 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    let in_2100 = SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    for (file, principal) in [("rs256.jwt", "rs256-user"), ("es256.jwt", "es256-user")] {
        let token = std::fs::read_to_string(golden.join(file)).unwrap();
        let valid = validator.validate(token.trim(), in_2030).unwrap();
        assert_eq!(
            (valid.principal.as_str(), valid.expires_at),
            (principal, in_2100)
        );
        assert!(
            validator.validate(token.trim(), in_2100).is_err(),
            "expired at exp"
        );
        let (signed, signature) = token.trim().rsplit_once('.').unwrap();
        let tampered = format!("{}.{signature}", signed.replacen("eyJ", "eyK", 1));
        assert!(validator.validate(&tampered, in_2030).is_err());
    }
}

#[test]
fn validators_and_token_files_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<JwtValidator>();
    shareable::<crate::auth::token_file::TokenFile>();
}

#[test]
fn a_key_carried_in_the_header_is_not_trusted() {
    let f = fixture();
    let attacker = other_rsa_key();
    let carried = rsa_jwk(attacker, "rsa-1");
    let header = format!(r#"{{"alg":"RS256","kid":"rsa-1","jwk":{carried}}}"#);
    let token = sign(&header, &good_claims(), attacker);
    assert!(rejected(&f, &token).starts_with("signature does not verify with key \"rsa-1\""));
}
