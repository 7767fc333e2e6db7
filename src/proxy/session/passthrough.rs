//! Identity pass-through (`kafka.sasl.mode: passthrough`): a client's
//! upstream connections log in as that client, and its own login succeeds
//! only when a broker accepts the credentials.
//!
//! On the client's SaslAuthenticate (`Plan::Relay`) the session opens a
//! connection to a broker and logs in on it as the client, without
//! waiting; the SaslAuthenticate waits, in order, until that login ends
//! (`login`: success, or any failure: refusal, close, timeout), and its
//! answer is `apis::sasl::relay_finished`'s. The connection then serves
//! the client like any other. The proxy's own connections (`ControlClient`)
//! keep the service identity.
//!
//! The credentials live only on the session, as `Secret`: during the
//! login on the `Relay`, after it on `ClientAuth`.

use std::time::Instant;

use log::debug;

use super::super::apis::sasl::{relay_broker, relay_finished, RelayLogin};
use super::super::plan::Plan;
use super::super::ProxyContext;
use super::{Session, Verdict};
use crate::config::{KafkaSasl, SaslMode};

/// A relayed login under way.
pub(super) struct Relay {
    /// The client's SaslAuthenticate, waiting for the answer.
    seq: u64,
    /// The broker logging the client in.
    addr: String,
    login: RelayLogin,
}

impl Session {
    /// Carry out `Plan::Relay` for the request `(api_key, api_version,
    /// correlation_id)`: open a connection to a broker and log in on it as
    /// the client; the answer waits for that login.
    pub fn relay_login(&mut self, ctx: &ProxyContext, (api_key, api_version, correlation_id): (i16, i16, i32), login: RelayLogin) -> Verdict {
        let seq = self.wait_for_answer(api_key, api_version, correlation_id);
        let Some(addr) = relay_broker(ctx) else {
            self.finish_relay(ctx, Relay { seq, addr: String::new(), login }, Err("no Kafka broker address is known".into()));
            return Verdict::Continue;
        };
        if self.upstreams.contains_key(&addr) {
            // Only a first login is relayed, and nothing is sent upstream
            // before it: there is no connection yet.
            return Verdict::Close("internal error: a relayed login found an upstream connection open".into());
        }
        debug!("Relaying the login of {:?} from client {} to Kafka broker {addr}", login.username, self.peer());
        self.relay = Some(Relay { seq, addr: addr.clone(), login });
        if let Err(reason) = self.upstream(ctx, &addr) {
            self.relay_ended(ctx, &addr, Err(reason));
        }
        Verdict::Continue
    }

    /// The login on the connection to `addr` ended; when it was the
    /// relayed one, the client gets its answer.
    pub(super) fn relay_ended(&mut self, ctx: &ProxyContext, addr: &str, result: Result<(), String>) {
        if !self.relay.as_ref().is_some_and(|r| r.addr == addr) {
            return;
        }
        let relay = self.relay.take().expect("checked above");
        self.finish_relay(ctx, relay, result);
    }

    fn finish_relay(&mut self, ctx: &ProxyContext, relay: Relay, result: Result<(), String>) {
        let now = Instant::now();
        match relay_finished(ctx, self, relay.login, result, now) {
            Plan::Answer(response) => {
                if let Some(p) = self.pending.iter_mut().find(|p| p.seq == relay.seq) {
                    p.ready = Some(response);
                }
            }
            Plan::Refuse { response, delay, reason } => self.refuse_waiting(relay.seq, response, now + delay, reason),
            _ => unreachable!("relay_finished answers or refuses"),
        }
    }

    /// Whether this session's upstream logins are the client's own.
    pub(super) fn logs_in_as_client(&self, ctx: &ProxyContext) -> bool {
        ctx.settings.kafka_security.passthrough()
    }

    /// Who this client's upstream connections log in as: the proxy's
    /// service identity (`kafka.sasl`), or with passthrough the client,
    /// with the configured mechanism. Never the service identity for a
    /// client in passthrough: without its credentials there is no login.
    pub(super) fn upstream_identity(&self, ctx: &ProxyContext) -> Result<Option<KafkaSasl>, String> {
        let Some(service) = ctx.settings.kafka_security.sasl_login() else { return Ok(None) };
        if service.mode == SaslMode::Service {
            return Ok(Some(service));
        }
        // TODO(issue 10, OAUTHBEARER relay): a client that logged in with
        // OAUTHBEARER hands its token on here (config refuses it until then).
        let credentials = match &self.relay {
            Some(relay) => Some((relay.login.username.as_str(), &relay.login.password)),
            None => self.auth.relayed_credentials(),
        };
        let (username, password) =
            credentials.ok_or("kafka.sasl.mode passthrough: the client has not logged in, so there is no identity to log in upstream with")?;
        Ok(Some(KafkaSasl { username: username.to_string(), password: password.clone(), token_path: None, ..service }))
    }
}
