//! SaslHandshake and SaslAuthenticate: the proxy as SASL server toward
//! clients (`listen.security.protocol` SASL_PLAINTEXT or SASL_SSL), and the
//! gate that keeps everything else out until a client has logged in.
//!
//! As Kafka's `SaslServerAuthenticator`: before authenticating only
//! ApiVersions, SaslHandshake and SaslAuthenticate are answered, and any
//! other request closes the connection. After SaslHandshake v0 the tokens
//! come as bare size-prefixed frames, not SaslAuthenticate requests
//! (KIP-152: `raw_token`). A refused login is answered with
//! SASL_AUTHENTICATION_FAILED, later for an address that failed recently
//! (`SaslServer::failure_delay`), and the connection is then closed. With
//! `session_lifetime_ms` (KIP-368) a session ends: a request after its end
//! closes the connection, unless it re-authenticates first (SaslHandshake
//! then SaslAuthenticate on the same connection).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use log::debug;

use super::Request;
use crate::auth::server::{Exchange, SaslServer, Step};
use crate::config::SaslMechanism;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::fields::{sasl_authenticate_request, sasl_authenticate_response, sasl_handshake_request, sasl_handshake_response};
use crate::kafka::message::{encode_response, response_schema};
use crate::proxy::plan::Plan;
use crate::proxy::session::Session;
use crate::proxy::ProxyContext;

/// Where a client connection is with SASL.
#[derive(Debug, Default)]
pub struct ClientAuth {
    /// A login (or re-authentication) in progress, after SaslHandshake.
    exchange: Option<Login>,
    /// The authenticated user; kept while the client re-authenticates.
    pub principal: Option<String>,
    /// When the session ends (`session_lifetime_ms`).
    expires: Option<Instant>,
}

#[derive(Debug)]
struct Login {
    mechanism: SaslMechanism,
    exchange: Exchange,
    /// SaslHandshake v0: the tokens are bare frames (KIP-152).
    raw: bool,
}

impl ClientAuth {
    /// Whether the next frame is a bare SASL token, not a request.
    pub fn expects_raw_token(&self) -> bool {
        self.exchange.as_ref().is_some_and(|l| l.raw)
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

/// Whether `api` may be planned on this connection now; `Some` is what
/// happens instead (the connection closed). Called for every request
/// when clients must authenticate.
pub fn gate(session: &Session, api: ApiKey, now: Instant) -> Option<Plan> {
    if matches!(api, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        return None;
    }
    let auth = &session.auth;
    match &auth.principal {
        Some(user) if auth.expired(now) => Some(Plan::Close(format!(
            "the SASL session of {user} expired and the client did not re-authenticate (session_lifetime_ms); {} request refused",
            kafka_name(api)
        ))),
        Some(_) => None,
        None => Some(Plan::Close(format!("Unexpected Kafka request of type {} during SASL handshake", kafka_name(api)))),
    }
}

/// An API's name as Kafka's `ApiKeys` spells it (`LIST_OFFSETS`).
pub fn kafka_name(api: ApiKey) -> String {
    let mut out = String::new();
    for (i, c) in api.name().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn server(ctx: &ProxyContext) -> &SaslServer {
    ctx.client_sasl.as_deref().expect("SASL APIs are offered only when clients authenticate")
}

/// SaslHandshake: pick the mechanism. An unknown one is answered with
/// UNSUPPORTED_SASL_MECHANISM and the enabled ones, and the connection is
/// closed, as Kafka does.
pub fn handshake(r: &mut Request<'_, '_>) -> Plan {
    let server = server(r.ctx);
    let version = r.version();
    let name = r.body.read(sasl_handshake_request::MECHANISM).unwrap_or_default().to_string();
    if r.session.auth.exchange.is_some() {
        return Plan::Close("Unexpected Kafka request of type SASL_HANDSHAKE during SASL handshake".into());
    }
    let mechanism = server.mechanism(&name);
    let code = if mechanism.is_some() { error::NONE } else { error::UNSUPPORTED_SASL_MECHANISM };
    let schema = response_schema(ApiKey::SaslHandshake as i16).expect("declared");
    let mut body = codec::with_defaults(&schema.body, version);
    body.write(sasl_handshake_response::ERROR_CODE, code);
    let names = server.mechanism_names().into_iter().map(|n| Value::String(Some(Cow::Borrowed(n)))).collect();
    body.set(sasl_handshake_response::MECHANISMS.name(), Value::Array(Some(names)));
    let response = encode_response(ApiKey::SaslHandshake as i16, version, r.header.correlation_id, &[], &body)
        .expect("well-formed SaslHandshake response");
    match mechanism {
        Some(mechanism) => {
            let exchange = server.start(mechanism);
            r.session.auth.exchange = Some(Login { mechanism, exchange, raw: version == 0 });
            Plan::Answer(response)
        }
        None => Plan::Refuse {
            response: Some(response),
            delay: Duration::ZERO,
            reason: format!("Unsupported SASL mechanism {name:?} (enabled: {})", server.mechanism_names().join(", ")),
        },
    }
}

/// SaslAuthenticate: one token of the exchange the handshake started.
pub fn authenticate(r: &mut Request<'_, '_>) -> Plan {
    let version = r.version();
    let correlation_id = r.header.correlation_id;
    let token = r.body.read(sasl_authenticate_request::AUTH_BYTES).unwrap_or_default().to_vec();
    if !r.session.auth.exchange.as_ref().is_some_and(|l| !l.raw) {
        return Plan::Close("Unexpected Kafka request of type SASL_AUTHENTICATE during SASL handshake".into());
    }
    let outcome = on_token(r.ctx, r.session, &token, Instant::now());
    let answer = |code: i16, message: Option<String>, bytes: Vec<u8>, lifetime_ms: i64| {
        let schema = response_schema(ApiKey::SaslAuthenticate as i16).expect("declared");
        let mut body = codec::with_defaults(&schema.body, version);
        body.write(sasl_authenticate_response::ERROR_CODE, code);
        body.set(sasl_authenticate_response::ERROR_MESSAGE.name(), Value::String(message.map(Cow::Owned)));
        body.write(sasl_authenticate_response::AUTH_BYTES, Some(Cow::Owned(bytes)));
        if version >= 1 {
            body.write(sasl_authenticate_response::SESSION_LIFETIME_MS, lifetime_ms);
        }
        encode_response(ApiKey::SaslAuthenticate as i16, version, correlation_id, &[], &body)
            .expect("well-formed SaslAuthenticate response")
    };
    match outcome {
        Outcome::Continue(bytes) => Plan::Answer(answer(error::NONE, None, bytes, 0)),
        Outcome::Authenticated { answer: bytes, lifetime } => {
            Plan::Answer(answer(error::NONE, None, bytes, lifetime.map_or(0, |l| l.as_millis() as i64)))
        }
        Outcome::Refused { message, answer: bytes, delay, reason } => Plan::Refuse {
            response: Some(answer(error::SASL_AUTHENTICATION_FAILED, Some(message), bytes, 0)),
            delay,
            reason,
        },
    }
}

/// A bare token after SaslHandshake v0: answered with a bare frame; a
/// refusal has no way to say so and only closes the connection (later,
/// as any refusal), as Kafka does.
pub fn raw_token(ctx: &ProxyContext, session: &mut Session, token: &[u8]) -> Plan {
    match on_token(ctx, session, token, Instant::now()) {
        Outcome::Continue(bytes) | Outcome::Authenticated { answer: bytes, .. } => Plan::Answer(bytes),
        Outcome::Refused { delay, reason, .. } => Plan::Refuse { response: None, delay, reason },
    }
}

enum Outcome {
    Continue(Vec<u8>),
    Authenticated { answer: Vec<u8>, lifetime: Option<Duration> },
    Refused { message: String, answer: Vec<u8>, delay: Duration, reason: String },
}

fn on_token(ctx: &ProxyContext, session: &mut Session, token: &[u8], now: Instant) -> Outcome {
    let server = server(ctx);
    let peer = session.peer();
    let auth = &mut session.auth;
    let Some(login) = auth.exchange.as_mut() else { unreachable!("callers checked an exchange is under way") };
    let mechanism = login.mechanism;
    let reauthenticating = auth.principal.is_some();
    let step = server.step(&mut login.exchange, token);
    let (username, message, detail, answer) = match step {
        Step::Challenge(bytes) => return Outcome::Continue(bytes),
        Step::Done { username, answer, lifetime } => match &auth.principal {
            // As Kafka: re-authentication keeps the principal.
            Some(previous) if *previous != username => {
                let detail = format!("cannot change principals during re-authentication from {previous}");
                (Some(username), None, detail, Vec::new())
            }
            _ => {
                auth.exchange = None;
                auth.expires = lifetime.map(|l| now + l);
                debug!("Client {peer} authenticated as {username} with SASL mechanism {mechanism}");
                auth.principal = Some(username);
                return Outcome::Authenticated { answer, lifetime };
            }
        },
        Step::Failed { username, message, detail, answer } => (username, message, detail, answer),
    };
    auth.exchange = None;
    ctx.shared.metrics.authentication_failures.count(mechanism);
    let during = if reauthenticating { "re-authentication" } else { "authentication" };
    let user = username.map_or_else(|| "an unnamed user".to_string(), |u| format!("user {u:?}"));
    Outcome::Refused {
        message: message.unwrap_or_else(|| {
            format!("Authentication failed during {during} due to invalid credentials with SASL mechanism {mechanism}")
        }),
        answer,
        delay: server.failure_delay(peer.ip(), now),
        reason: format!("SASL {during} failed for {user} with mechanism {mechanism}: {detail}"),
    }
}
