//! What to do with one client request, decided by its API's handler
//! (`apis`) and carried out by the session: answer it here, or send one or more parts
//! upstream and build the client's response from their answers. Types and
//! the helpers handlers build them with; the session carries them out
//! (`session::complete` calls a `Finish`'s function).

use std::time::Duration;

use super::route::Route;
use super::ProxyContext;
use crate::kafka::codec::Struct;

pub enum Plan {
    /// The response, complete (header and body, no size prefix).
    Answer(Vec<u8>),
    Forward { parts: Vec<Part>, expect_response: bool, finish: Finish },
    /// Close the client connection, saying why.
    Close(String),
    /// A refused login (`apis::sasl`): answer with `response` (if the
    /// client can be told) after `delay`, then close, saying why.
    Refuse { response: Option<Vec<u8>>, delay: std::time::Duration, reason: String },
    /// A client's login for the brokers to decide (`kafka.sasl.mode:
    /// passthrough`): answered when the session's login as the client ends.
    Relay(Box<super::apis::sasl::RelayLogin>),
    /// Plan again once the look-ups asked for in the plan's `Needs` are
    /// answered (`lookups`).
    AfterLookups,
}

/// Where the correlation ids of requests the proxy builds come from (a
/// client's session: ids need only differ from their neighbours on each
/// upstream connection).
pub trait CorrelationIds {
    fn next_correlation_id(&mut self) -> i32;
}

/// One request frame to send upstream.
pub struct Part {
    pub route: Route,
    pub frame: PartFrame,
    pub correlation_id: i32,
    /// How long the broker may legitimately hold the request before
    /// answering (fetch max wait, join-group rebalance), on top of the
    /// request timeout.
    pub broker_wait: Duration,
}

impl Part {
    /// A request the proxy encodes itself, with a correlation id of the
    /// session's own.
    pub fn build(
        session: &mut impl CorrelationIds,
        client_id: Option<&str>,
        api_key: i16,
        version: i16,
        body: &Struct<'_>,
        route: Route,
        broker_wait: Duration,
    ) -> Result<Part, String> {
        let correlation_id = session.next_correlation_id();
        let frame = crate::kafka::message::encode_request(api_key, version, correlation_id, client_id, body)
            .map_err(|e| e.to_string())?;
        Ok(Part { route, frame: PartFrame::Owned(frame), correlation_id, broker_wait })
    }
}

/// Builds a response from the single answer of a request, or from none
/// when nothing had to go upstream.
pub type BuildFn = Box<dyn FnOnce(&ProxyContext, i16, i32, Option<&[u8]>) -> Result<Vec<u8>, String>>;

/// A plan of one upstream request whose answer `build` turns into the
/// client's response; with no `body`, `build` answers at once.
#[allow(clippy::too_many_arguments)]
pub fn single_request(
    ctx: &ProxyContext,
    session: &mut impl CorrelationIds,
    client_id: Option<&str>,
    api_key: i16,
    version: i16,
    correlation_id: i32,
    body: Option<&Struct<'_>>,
    route: Route,
    broker_wait: Duration,
    build: BuildFn,
) -> Plan {
    let Some(body) = body else {
        return match build(ctx, version, correlation_id, None) {
            Ok(bytes) => Plan::Answer(bytes),
            Err(e) => Plan::Close(e),
        };
    };
    match Part::build(session, client_id, api_key, version, body, route, broker_wait) {
        Ok(part) => Plan::Forward {
            parts: vec![part],
            expect_response: true,
            finish: Finish::Merge(Box::new(move |ctx, v, corr, answers| build(ctx, v, corr, answers.first().map(Vec::as_slice)))),
        },
        Err(e) => Plan::Close(e),
    }
}

/// The bytes of a part (without size prefix).
pub enum PartFrame {
    /// The frame exactly as the client sent it; the worker moves it in once
    /// planning no longer borrows it, so it is never copied.
    Original,
    Owned(Vec<u8>),
    /// `Original`, filled in.
    Client(Vec<u8>),
}

impl PartFrame {
    pub fn bytes(&self) -> &[u8] {
        match self {
            PartFrame::Owned(b) | PartFrame::Client(b) => b,
            PartFrame::Original => panic!("the client's frame was not moved into its part"),
        }
    }
}

impl From<Vec<u8>> for PartFrame {
    fn from(v: Vec<u8>) -> PartFrame {
        PartFrame::Owned(v)
    }
}

/// A rewrite of a decoded response body; returns whether it changed
/// anything (an unchanged response is forwarded as the bytes that came).
pub type RewriteFn = Box<dyn FnOnce(&ProxyContext, i16, &mut Struct<'_>) -> Result<bool, String>>;

/// Builds the client response from all answers (each a full response frame
/// without size prefix), given the version and the client's correlation id.
pub type MergeFn = Box<dyn FnOnce(&ProxyContext, i16, i32, Vec<Vec<u8>>) -> Result<Vec<u8>, String>>;

/// Looks at the answers of one stage and decides the next: the response,
/// or more requests to send (e.g. a membership check before a commit).
pub type ThenFn = Box<dyn FnOnce(&ProxyContext, i16, i32, Vec<Vec<u8>>) -> Result<Step, String>>;

pub enum Finish {
    /// The single answer goes back as it came.
    AsIs,
    /// The single answer is decoded and possibly rewritten.
    Rewrite(RewriteFn),
    /// Several answers merged into one response.
    Merge(MergeFn),
    /// Another stage may follow.
    Then(ThenFn),
}

/// The outcome of a stage.
pub enum Step {
    Done(Vec<u8>),
    More { parts: Vec<Part>, finish: Finish },
}

/// Responses to parts the proxy built carry the proxy's correlation id; the
/// client must see its own.
pub fn set_correlation_id(frame: &mut [u8], correlation_id: i32) {
    if frame.len() >= 4 {
        frame[..4].copy_from_slice(&correlation_id.to_be_bytes());
    }
}
