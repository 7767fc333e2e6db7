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
//!
//! With `kafka.sasl.mode: passthrough` a PLAIN login is not checked here:
//! the credentials are relayed (`Plan::Relay`), the session logs in to a
//! broker as the client, and the answer waits for that login
//! (`relay_finished`). A re-authentication must give the credentials the
//! broker accepted (a new password needs a new connection).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use super::Request;
use crate::auth::plain::password_matches;
use crate::auth::server::{Exchange, SaslServer, Step};
use crate::config::{SaslMechanism, Secret};
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
    /// Passthrough: the password the brokers accepted for `principal`,
    /// kept in memory only, for the client's upstream logins.
    password: Option<Secret>,
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

    /// Passthrough: the user name and password the brokers accepted.
    pub fn relayed_credentials(&self) -> Option<(&str, &Secret)> {
        Some((self.principal.as_deref()?, self.password.as_ref()?))
    }
}

/// A client's PLAIN login handed to the brokers (passthrough): what the
/// session logs in upstream with, and what the answer needs.
#[derive(Debug)]
pub struct RelayLogin {
    pub username: String,
    pub password: Secret,
    version: i16,
    correlation_id: i32,
    /// After SaslHandshake v0: the answer is a bare token.
    raw: bool,
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

/// The SASL server as last reloaded (a login that spans a reload finishes
/// against the new users: the session keeps no reference to the old ones).
fn server(ctx: &ProxyContext) -> Arc<SaslServer> {
    ctx.client_sasl().expect("SASL APIs are offered only when clients authenticate")
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
    if server(r.ctx).relays() && r.session.auth.principal.is_none() {
        // The relayed login opens a connection without waiting: the
        // broker's address must be known first.
        if let Some(addr) = relay_broker(r.ctx).filter(|a| crate::upstream::connect::cached_address(a).is_none()) {
            if r.needs.ask(crate::proxy::lookups::Lookup::Address(addr)).is_ok() {
                return Plan::AfterLookups;
            }
        }
    }
    let outcome = on_token(r.ctx, r.session, &token, Instant::now());
    let answer = |code, message, bytes, lifetime_ms| authenticate_response(version, correlation_id, code, message, bytes, lifetime_ms);
    match outcome {
        Outcome::Relay { username, password } => {
            Plan::Relay(Box::new(RelayLogin { username, password, version, correlation_id, raw: false }))
        }
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

fn authenticate_response(version: i16, correlation_id: i32, code: i16, message: Option<String>, bytes: Vec<u8>, lifetime_ms: i64) -> Vec<u8> {
    let schema = response_schema(ApiKey::SaslAuthenticate as i16).expect("declared");
    let mut body = codec::with_defaults(&schema.body, version);
    body.write(sasl_authenticate_response::ERROR_CODE, code);
    body.set(sasl_authenticate_response::ERROR_MESSAGE.name(), Value::String(message.map(Cow::Owned)));
    body.write(sasl_authenticate_response::AUTH_BYTES, Some(Cow::Owned(bytes)));
    if version >= 1 {
        body.write(sasl_authenticate_response::SESSION_LIFETIME_MS, lifetime_ms);
    }
    encode_response(ApiKey::SaslAuthenticate as i16, version, correlation_id, &[], &body).expect("well-formed SaslAuthenticate response")
}

/// The broker a relayed login goes to: any the cluster knows that was
/// not unreachable lately.
pub fn relay_broker(ctx: &ProxyContext) -> Option<String> {
    let cluster = &ctx.cluster;
    let brokers = cluster.read().brokers.len().max(1);
    let usable = (0..brokers).filter_map(|attempt| cluster.any_broker(attempt)).find(|(_, a)| !cluster.recently_unreachable(a));
    usable.or_else(|| cluster.any_broker(0)).map(|(_, addr)| addr)
}

/// A bare token after SaslHandshake v0: answered with a bare frame; a
/// refusal has no way to say so and only closes the connection (later,
/// as any refusal), as Kafka does.
pub fn raw_token(ctx: &ProxyContext, session: &mut Session, token: &[u8]) -> Plan {
    match on_token(ctx, session, token, Instant::now()) {
        Outcome::Continue(bytes) | Outcome::Authenticated { answer: bytes, .. } => Plan::Answer(bytes),
        Outcome::Refused { delay, reason, .. } => Plan::Refuse { response: None, delay, reason },
        Outcome::Relay { username, password } => {
            Plan::Relay(Box::new(RelayLogin { username, password, version: 0, correlation_id: 0, raw: true }))
        }
    }
}

/// The relayed login `login` ended: `Ok` when the broker accepted it,
/// else the broker's reason. The answer the client gets, as `Plan::Answer`
/// or `Plan::Refuse`.
pub fn relay_finished(ctx: &ProxyContext, session: &mut Session, login: RelayLogin, result: Result<(), String>, now: Instant) -> Plan {
    let server = server(ctx);
    let mechanism = SaslMechanism::Plain;
    let answer = |code, message, lifetime_ms| authenticate_response(login.version, login.correlation_id, code, message, Vec::new(), lifetime_ms);
    let refused = match result {
        Ok(()) => {
            let lifetime_ms = server.session_lifetime.map_or(0, |l| l.as_millis() as i64);
            let response = if login.raw { Vec::new() } else { answer(error::NONE, None, lifetime_ms) };
            let peer = session.peer();
            let auth = &mut session.auth;
            auth.exchange = None;
            auth.expires = server.session_lifetime.map(|l| now + l);
            debug!("Client {peer} authenticated as {} with SASL mechanism {mechanism}, accepted by the Kafka broker", login.username);
            auth.principal = Some(login.username);
            auth.password = Some(login.password);
            session.client.mark_authenticated();
            return Plan::Answer(response);
        }
        Err(reason) => reason,
    };
    session.auth.exchange = None;
    ctx.shared.metrics.authentication_failures.count(mechanism);
    // The broker's own words reach the client, as when it is asked directly.
    let message = refused.strip_prefix("SASL authentication failed: ").unwrap_or(&refused).to_string();
    Plan::Refuse {
        response: (!login.raw).then(|| answer(error::SASL_AUTHENTICATION_FAILED, Some(message), 0)),
        delay: server.failure_delay(session.peer().ip(), now),
        reason: format!("SASL authentication failed for user {:?} with mechanism {mechanism}: the Kafka broker refused it: {refused}", login.username),
    }
}

enum Outcome {
    Continue(Vec<u8>),
    /// Passthrough: the brokers decide (`Plan::Relay`).
    Relay { username: String, password: Secret },
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
    let step = match step {
        Step::Relay { username, password } if reauthenticating => relayed_again(auth, username, &password, server.session_lifetime),
        Step::Relay { username, password } => return Outcome::Relay { username, password },
        other => other,
    };
    let (username, message, detail, answer) = match step {
        Step::Challenge(bytes) => return Outcome::Continue(bytes),
        Step::Relay { .. } => unreachable!("handled above"),
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
                session.client.mark_authenticated();
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

/// Passthrough re-authentication: the principal and password the brokers
/// accepted for this session pass without asking them again (upstream
/// connections renew their own logins); anything else is refused.
fn relayed_again(auth: &ClientAuth, username: String, password: &Secret, lifetime: Option<Duration>) -> Step {
    let same = auth.relayed_credentials().is_some_and(|(user, accepted)| user == username && password_matches(accepted, password));
    if same {
        return Step::Done { username, answer: Vec::new(), lifetime };
    }
    let detail = "kafka.sasl.mode passthrough: re-authentication must give the credentials the brokers accepted for this connection".to_string();
    Step::Failed { username: Some(username), message: None, detail, answer: Vec::new() }
}
