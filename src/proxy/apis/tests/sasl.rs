//! SaslHandshake and SaslAuthenticate planned with canned requests: what
//! is answered, refused or closed, and the gate before login.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Harness;
use crate::auth::server::SaslServer;
use crate::config::{ListenSasl, SaslMechanism, SaslUser, Secret};
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::fields::{sasl_authenticate_request, sasl_handshake_request};
use crate::kafka::message::{decode_response, request_schema};
use crate::proxy::apis::sasl;
use crate::proxy::plan::Plan;

fn harness(lifetime_ms: u64) -> Harness {
    let h = Harness::new();
    h.ctx.shared.live.client_sasl.set(Some(Arc::new(SaslServer::new(&ListenSasl {
        enabled_mechanisms: vec![SaslMechanism::Plain, SaslMechanism::ScramSha256],
        users: vec![SaslUser { name: "alice".into(), password: Secret::new("pw-a") }],
        oauthbearer: None,
        session_lifetime_ms: lifetime_ms,
    }).unwrap())));
    h
}

fn handshake(h: &mut Harness, version: i16, mechanism: &str) -> Plan {
    let schema = request_schema(ApiKey::SaslHandshake as i16).unwrap();
    let mut body = codec::with_defaults(&schema.body, version);
    body.write(sasl_handshake_request::MECHANISM, mechanism.to_string());
    h.plan(ApiKey::SaslHandshake, version, &body).plan
}

fn authenticate(h: &mut Harness, version: i16, token: &[u8]) -> Plan {
    let schema = request_schema(ApiKey::SaslAuthenticate as i16).unwrap();
    let mut body = codec::with_defaults(&schema.body, version);
    body.write(sasl_authenticate_request::AUTH_BYTES, Some(std::borrow::Cow::Owned(token.to_vec())));
    h.plan(ApiKey::SaslAuthenticate, version, &body).plan
}

fn metadata(h: &mut Harness) -> Plan {
    let schema = request_schema(ApiKey::Metadata as i16).unwrap();
    let body = codec::with_defaults(&schema.body, 1);
    h.plan(ApiKey::Metadata, 1, &body).plan
}

/// (error code, error message, session lifetime) of a SaslAuthenticate answer.
fn auth_answer(bytes: &[u8], version: i16) -> (i16, Option<String>, i64) {
    let r = decode_response(ApiKey::SaslAuthenticate as i16, version, bytes).unwrap();
    let message = match r.body.get("error_message") {
        Value::String(s) => s.as_ref().map(|s| s.to_string()),
        _ => None,
    };
    (r.body.i16("error_code").unwrap(), message, r.body.i64("session_lifetime_ms").unwrap_or(-1))
}

#[test]
fn handshake_names_the_enabled_mechanisms() {
    let mut h = harness(0);
    let Plan::Answer(bytes) = handshake(&mut h, 1, "SCRAM-SHA-256") else { panic!("not answered") };
    let r = decode_response(ApiKey::SaslHandshake as i16, 1, &bytes).unwrap();
    assert_eq!(r.body.i16("error_code"), Some(error::NONE));
    let names: Vec<&str> = r.body.array("mechanisms").iter().filter_map(|v| match v {
        Value::String(Some(s)) => Some(s.as_ref()),
        _ => None,
    }).collect();
    assert_eq!(names, ["PLAIN", "SCRAM-SHA-256"]);
}

#[test]
fn an_unknown_mechanism_is_refused_and_closes() {
    let mut h = harness(0);
    let Plan::Refuse { response: Some(bytes), delay, reason } = handshake(&mut h, 1, "SCRAM-SHA-512") else { panic!("not refused") };
    assert_eq!(delay, Duration::ZERO);
    assert!(reason.contains("SCRAM-SHA-512"), "{reason}");
    let r = decode_response(ApiKey::SaslHandshake as i16, 1, &bytes).unwrap();
    assert_eq!(r.body.i16("error_code"), Some(error::UNSUPPORTED_SASL_MECHANISM));
}

#[test]
fn plain_login_then_requests_pass_the_gate() {
    let mut h = harness(60_000);
    let Plan::Close(why) = metadata(&mut h) else { panic!("served before login") };
    assert_eq!(why, "Unexpected Kafka request of type METADATA during SASL handshake");
    let Plan::Answer(_) = handshake(&mut h, 1, "PLAIN") else { panic!("handshake") };
    let Plan::Answer(bytes) = authenticate(&mut h, 1, b"\0alice\0pw-a") else { panic!("not logged in") };
    assert_eq!(auth_answer(&bytes, 1), (error::NONE, None, 60_000));
    assert_eq!(h.session.auth.principal.as_deref(), Some("alice"));
    assert!(sasl::gate(&h.session, ApiKey::Metadata, Instant::now()).is_none());
    // Past the lifetime only re-authentication is let through.
    let later = Instant::now() + Duration::from_secs(61);
    assert!(sasl::gate(&h.session, ApiKey::SaslHandshake, later).is_none());
    assert!(matches!(sasl::gate(&h.session, ApiKey::Produce, later), Some(Plan::Close(why)) if why.contains("expired")));
}

#[test]
fn a_wrong_password_is_refused_with_kafkas_message_and_counted() {
    let mut h = harness(0);
    handshake(&mut h, 1, "PLAIN");
    let Plan::Refuse { response: Some(bytes), delay, reason } = authenticate(&mut h, 2, b"\0alice\0nope") else { panic!("not refused") };
    let (code, message, _) = auth_answer(&bytes, 2);
    assert_eq!(code, error::SASL_AUTHENTICATION_FAILED);
    assert_eq!(
        message.as_deref(),
        Some("Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN")
    );
    assert!(delay > Duration::ZERO);
    assert!(reason.contains("alice") && !reason.contains("nope"), "{reason}");
    assert_eq!(h.ctx.shared.metrics.authentication_failures.get(SaslMechanism::Plain), 1);
    assert!(h.session.auth.principal.is_none());
}

#[test]
fn authenticate_without_handshake_closes() {
    let mut h = harness(0);
    assert!(matches!(authenticate(&mut h, 1, b"\0alice\0pw-a"), Plan::Close(_)));
}

#[test]
fn handshake_v0_takes_a_raw_token() {
    let mut h = harness(0);
    handshake(&mut h, 0, "PLAIN");
    assert!(h.session.auth.expects_raw_token());
    let Plan::Answer(bytes) = sasl::raw_token(&h.ctx, &mut h.session, b"\0alice\0pw-a") else { panic!("not logged in") };
    assert!(bytes.is_empty());
    assert!(!h.session.auth.expects_raw_token());
    handshake(&mut h, 0, "PLAIN");
    let refused = sasl::raw_token(&h.ctx, &mut h.session, b"\0alice\0nope");
    assert!(matches!(refused, Plan::Refuse { response: None, .. }));
}

#[test]
fn sasl_is_offered_only_when_clients_authenticate() {
    use crate::proxy::apis::api_versions::offered_versions;
    let h = harness(0);
    assert_eq!(offered_versions(&h.ctx, ApiKey::SaslHandshake), Some((0, 1)));
    assert_eq!(offered_versions(&h.ctx, ApiKey::SaslAuthenticate), Some((0, 2)));
    let plain = Harness::new();
    assert_eq!(offered_versions(&plain.ctx, ApiKey::SaslHandshake), None);
    assert_eq!(offered_versions(&plain.ctx, ApiKey::SaslAuthenticate), None);
}

#[test]
fn kafka_names_apis_in_upper_snake_case() {
    assert_eq!(sasl::kafka_name(ApiKey::ListOffsets), "LIST_OFFSETS");
    assert_eq!(sasl::kafka_name(ApiKey::Produce), "PRODUCE");
}

/// `kafka.sasl.mode: passthrough`: no user list; PLAIN logins are relayed.
fn passthrough_harness() -> Harness {
    let h = Harness::new();
    let server = SaslServer::new(&ListenSasl {
        enabled_mechanisms: vec![SaslMechanism::Plain],
        users: Vec::new(),
        oauthbearer: None,
        session_lifetime_ms: 60_000,
    })
    .unwrap();
    h.ctx.shared.live.client_sasl.set(Some(Arc::new(server.relaying())));
    h
}

/// A PLAIN login relayed, and the broker's verdict applied.
fn relayed_login(h: &mut Harness, password: &str, verdict: Result<(), String>) -> Plan {
    let Plan::Answer(_) = handshake(h, 1, "PLAIN") else { panic!("handshake") };
    let Plan::Relay(login) = authenticate(h, 2, format!("\0carol\0{password}").as_bytes()) else { panic!("not relayed") };
    assert_eq!(login.username, "carol");
    assert!(!format!("{login:?}").contains(password), "Debug shows the password");
    sasl::relay_finished(&h.ctx, &mut h.session, *login, verdict, Instant::now())
}

#[test]
fn passthrough_answers_with_the_brokers_verdict() {
    let mut h = passthrough_harness();
    let Plan::Answer(bytes) = relayed_login(&mut h, "pw-c", Ok(())) else { panic!("not logged in") };
    assert_eq!(auth_answer(&bytes, 2), (error::NONE, None, 60_000));
    assert_eq!(h.session.auth.relayed_credentials(), Some(("carol", &Secret::new("pw-c"))));
    assert!(!matches!(metadata(&mut h), Plan::Close(_)), "served once the broker accepted");

    let mut h = passthrough_harness();
    let refusal = "SASL authentication failed: the broker ended the SCRAM exchange: invalid-proof".to_string();
    let Plan::Refuse { response: Some(bytes), reason, .. } = relayed_login(&mut h, "pw-x", Err(refusal)) else { panic!("not refused") };
    let message = "the broker ended the SCRAM exchange: invalid-proof".to_string();
    assert_eq!(auth_answer(&bytes, 2), (error::SASL_AUTHENTICATION_FAILED, Some(message), 0));
    assert!(reason.contains("carol") && reason.contains("refused") && !reason.contains("pw-x"), "{reason}");
    assert_eq!(h.session.auth.relayed_credentials(), None);
    assert!(matches!(metadata(&mut h), Plan::Close(_)), "not logged in");
}

#[test]
fn passthrough_re_authentication_needs_the_accepted_credentials() {
    let mut h = passthrough_harness();
    let Plan::Answer(_) = relayed_login(&mut h, "pw-c", Ok(())) else { panic!("not logged in") };
    let Plan::Answer(_) = handshake(&mut h, 1, "PLAIN") else { panic!("handshake") };
    let Plan::Answer(bytes) = authenticate(&mut h, 2, b"\0carol\0pw-c") else { panic!("same credentials: not answered at once") };
    assert_eq!(auth_answer(&bytes, 2).0, error::NONE);
    let Plan::Answer(_) = handshake(&mut h, 1, "PLAIN") else { panic!("handshake") };
    let Plan::Refuse { response: Some(bytes), .. } = authenticate(&mut h, 2, b"\0carol\0pw-new") else { panic!("not refused") };
    assert_eq!(auth_answer(&bytes, 2).0, error::SASL_AUTHENTICATION_FAILED);
}

#[test]
fn passthrough_looks_the_broker_address_up_before_relaying() {
    let mut h = passthrough_harness();
    for broker in h.ctx.cluster.write().brokers.values_mut() {
        broker.host = "broker.passthrough.invalid".into();
    }
    let Plan::Answer(_) = handshake(&mut h, 1, "PLAIN") else { panic!("handshake") };
    let schema = request_schema(ApiKey::SaslAuthenticate as i16).unwrap();
    let mut body = codec::with_defaults(&schema.body, 2);
    body.write(sasl_authenticate_request::AUTH_BYTES, Some(std::borrow::Cow::Owned(b"\0carol\0pw-c".to_vec())));
    let planned = h.plan(ApiKey::SaslAuthenticate, 2, &body);
    assert!(matches!(planned.plan, Plan::AfterLookups), "relayed before the address was known");
    assert!(matches!(&planned.asked[..], [crate::proxy::lookups::Lookup::Address(a)] if a.starts_with("broker.passthrough.invalid:")));
    // The exchange waited untouched: once the address is known (here:
    // written as an IP address), the same request is relayed.
    for broker in h.ctx.cluster.write().brokers.values_mut() {
        broker.host = "127.0.0.1".into();
    }
    assert!(matches!(h.plan(ApiKey::SaslAuthenticate, 2, &body).plan, Plan::Relay(_)));
}

mod oauthbearer {
    use super::*;
    use crate::auth::oauthbearer::ClientInitialResponse;
    use crate::auth::test_tokens::{oauthbearer_sasl, other_rsa_key, rsa_key, rsa_token_at};
    use crate::auth::watched_file::tests::TempDir;
    use std::time::SystemTime;

    fn harness(dir: &TempDir, lifetime_ms: u64) -> Harness {
        let h = Harness::new();
        h.ctx.shared.live.client_sasl.set(Some(Arc::new(SaslServer::new(&oauthbearer_sasl(&dir.0, lifetime_ms)).unwrap())));
        h
    }

    fn initial(token: &str) -> Vec<u8> {
        ClientInitialResponse::new(Secret::new(token), None, vec![]).unwrap().to_bytes()
    }

    /// (error code, error message, auth bytes, session lifetime).
    fn answer(bytes: &[u8], version: i16) -> (i16, Option<String>, Vec<u8>, i64) {
        let (code, message, lifetime) = auth_answer(bytes, version);
        let r = decode_response(ApiKey::SaslAuthenticate as i16, version, bytes).unwrap();
        let auth = match r.body.get("auth_bytes") {
            Value::Bytes(Some(b)) => b.to_vec(),
            other => panic!("auth_bytes: {other:?}"),
        };
        (code, message, auth, lifetime)
    }

    #[test]
    fn a_token_logs_in_for_at_most_its_remaining_life() {
        let dir = TempDir::new("oauth-handler");
        let mut h = harness(&dir, 600_000);
        let Plan::Answer(_) = handshake(&mut h, 1, "OAUTHBEARER") else { panic!("handshake") };
        let token = rsa_token_at(rsa_key(), "svc-a", SystemTime::now(), 120);
        let Plan::Answer(bytes) = authenticate(&mut h, 1, &initial(&token)) else { panic!("not logged in") };
        let (code, message, auth, lifetime) = answer(&bytes, 1);
        assert_eq!((code, message, auth), (error::NONE, None, vec![]));
        assert!((110_000..=120_000).contains(&lifetime), "{lifetime}");
        assert_eq!(h.session.auth.principal.as_deref(), Some("svc-a"));
        assert!(sasl::gate(&h.session, ApiKey::Metadata, Instant::now()).is_none());
        let past_the_token = Instant::now() + Duration::from_secs(121);
        assert!(matches!(sasl::gate(&h.session, ApiKey::Metadata, past_the_token), Some(Plan::Close(_))));
    }

    #[test]
    fn a_bad_token_is_refused_in_two_steps_and_counted() {
        let dir = TempDir::new("oauth-handler");
        let mut h = harness(&dir, 0);
        handshake(&mut h, 1, "OAUTHBEARER");
        let token = rsa_token_at(other_rsa_key(), "svc-a", SystemTime::now(), 120);
        let Plan::Answer(bytes) = authenticate(&mut h, 2, &initial(&token)) else { panic!("the status is an answer") };
        let (code, _, status, _) = answer(&bytes, 2);
        assert_eq!((code, status.as_slice()), (error::NONE, br#"{"status":"invalid_token"}"#.as_slice()));
        assert_eq!(h.ctx.shared.metrics.authentication_failures.get(SaslMechanism::OAuthBearer), 0);
        let Plan::Refuse { response: Some(bytes), reason, .. } = authenticate(&mut h, 2, b"\x01") else { panic!("not refused") };
        let (code, message, _, _) = answer(&bytes, 2);
        assert_eq!(code, error::SASL_AUTHENTICATION_FAILED);
        let message = message.unwrap();
        assert!(message.contains("signature does not verify"), "{message}");
        assert!(!message.contains(&token) && !reason.contains(&token));
        assert_eq!(h.ctx.shared.metrics.authentication_failures.get(SaslMechanism::OAuthBearer), 1);
        assert!(h.session.auth.principal.is_none());
    }
}
