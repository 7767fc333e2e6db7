//! The steps every client request takes: the header, the version check,
//! the decode, and the look-ups deciding whether its topics are remapped
//! needs; then its API's handler (`apis`) plans it, and the plan goes
//! from here to the session (`take`), which carries it out.

use log::trace;

use super::apis::{self, api_versions, Request};
use super::lookups::{Lookup, Needs};
use super::plan::{PartFrame, Plan};
use super::session::{Deferred, Session, Verdict};
use super::ProxyContext;
use crate::kafka::api::{api_name, ApiKey};
use crate::kafka::codec::{self, Struct};
use crate::kafka::fields::kinds::{Array, Child, Str, Uuid};
use crate::kafka::fields::{add_partitions_to_txn_request as add_partitions, fetch_request, list_offsets_request, offset_fetch_request, produce_request, Field};
use crate::kafka::header::RequestHeader;
use crate::kafka::message::request_schema;

/// Take a client request (in look-up round `round`): plan it and hand the
/// plan to `session`; a plan that needs look-ups first parks the request
/// there.
pub fn take(ctx: &ProxyContext, session: &mut Session, frame: Vec<u8>, round: u8) -> Verdict {
    if session.auth.expects_raw_token() {
        // After SaslHandshake v0 the frame is a bare SASL token (KIP-152).
        let plan = apis::sasl::raw_token(ctx, session, &frame);
        return carry_out(ctx, session, plan, frame, (ApiKey::SaslAuthenticate as i16, 0, 0));
    }
    let failures = std::mem::take(&mut session.lookup_failures);
    let mut needs = Needs::new(&failures, round);
    // Plan while the header and body borrow the frame; afterwards the
    // frame is free to move into a part that forwards it unchanged.
    let (plan, api_key, api_version, correlation_id) = {
        let (header, body) = match RequestHeader::parse(&frame) {
            Ok(h) => h,
            Err(e) => return Verdict::Close(format!("malformed request header: {e}")),
        };
        trace!(
            "{} -> {} v{} correlation {} ({} bytes)",
            session.peer(),
            api_name(header.api_key),
            header.api_version,
            header.correlation_id,
            frame.len()
        );
        let plan = plan(ctx, session, &mut needs, &header, body, &frame);
        (plan, header.api_key, header.api_version, header.correlation_id)
    };
    let lookups = needs.take();
    session.lookup_failures = failures;
    if !lookups.is_empty() {
        session.defer(ctx, Deferred::Frame { frame, round: round + 1 }, lookups);
        return Verdict::Continue;
    }
    carry_out(ctx, session, plan, frame, (api_key, api_version, correlation_id))
}

/// Hand the plan for a client request (`frame`, whose header said
/// `(api_key, api_version, correlation_id)`) to its session.
fn carry_out(
    ctx: &ProxyContext,
    session: &mut Session,
    plan: Plan,
    frame: Vec<u8>,
    (api_key, api_version, correlation_id): (i16, i16, i32),
) -> Verdict {
    match plan {
        Plan::Answer(response) => {
            session.answer_now(api_key, api_version, correlation_id, response);
            Verdict::Continue
        }
        Plan::Refuse { response, delay, reason } => {
            session.refuse(api_key, api_version, correlation_id, response, std::time::Instant::now() + delay, reason);
            Verdict::Continue
        }
        Plan::Relay(login) => session.relay_login(ctx, (api_key, api_version, correlation_id), *login),
        Plan::Close(reason) => Verdict::Close(reason),
        Plan::AfterLookups => Verdict::Close("internal error: a plan waits for look-ups it did not ask for".into()),
        Plan::Forward { mut parts, expect_response, finish } => {
            let mut frame = Some(frame);
            for part in &mut parts {
                if matches!(part.frame, PartFrame::Original) {
                    match frame.take() {
                        Some(f) => part.frame = PartFrame::Client(f),
                        None => return Verdict::Close("internal error: two parts claim the client's frame".into()),
                    }
                }
            }
            session.forward(ctx, api_key, api_version, correlation_id, parts, expect_response, finish)
        }
    }
}

/// The plan for one decoded request: the version check, the decode, the
/// look-ups remapping needs, then the API's handler.
pub fn plan(
    ctx: &ProxyContext,
    session: &mut Session,
    needs: &mut Needs<'_>,
    header: &RequestHeader<'_>,
    body: &[u8],
    frame: &[u8],
) -> Plan {
    let Some(api) = header.api() else {
        return Plan::Close(format!("unknown API key {}", header.api_key));
    };
    let version = header.api_version;
    if api == ApiKey::ApiVersions {
        return Plan::Answer(api_versions::response(ctx, version, header.correlation_id));
    }
    if ctx.client_sasl().is_some() {
        if let Some(refused) = apis::sasl::gate(session, api, std::time::Instant::now()) {
            return refused;
        }
    }
    match api_versions::offered_versions(ctx, api) {
        Some((min, max)) if (min..=max).contains(&version) => {}
        Some(_) if api == ApiKey::Produce && version < 3 => {
            return Plan::Close(format!(
                "Produce v{version} carries record formats older than v2, which kpr-proxy does not accept (use a Kafka 0.11+ client)"
            ))
        }
        _ => return Plan::Close(format!("{} v{version} is not offered by this proxy", api.name())),
    }
    let schema = request_schema(api as i16).expect("offered APIs have schemas");
    let req = match codec::decode_prefix(schema, version, body) {
        Ok((r, 0)) => r,
        Ok((r, trailing)) => {
            log::debug!("{} v{version} request from {} has {trailing} trailing bytes (ignored, as Kafka does)", api.name(), session.peer());
            r
        }
        Err(e) => return Plan::Close(format!("malformed {} v{version} request: {e}", api.name())),
    };
    let Some(handler) = apis::handler(api) else {
        return Plan::Close(format!("{} is not offered by this proxy", api.name()));
    };
    let mut request = Request { ctx, session, needs, header, body: &req, frame };
    if ctx.mapper.remaps_anything() {
        // Whether a topic is remapped depends on what the cluster holds and
        // on the topic's cleanup policy: what the proxy has not learnt yet
        // is looked up first (`lookups`), off this thread.
        if ask_what_remapping_needs(ctx, request.needs, &req) {
            return Plan::AfterLookups;
        }
        if let Some(plan) = handler.remapped.and_then(|remapped| remapped(&mut request)) {
            return plan;
        }
    }
    (handler.forward)(&mut request)
}

/// Ask for what deciding whether the request's topics are remapped needs:
/// metadata of topics the proxy has not seen (created since its last
/// refresh, or named by a client that skipped Metadata), of topic ids it
/// does not know (Fetch v13+: an id learnt elsewhere would otherwise pass
/// through with virtual partition numbers, and the broker would answer
/// with a physical partition's whole data, siblings' records included),
/// and the cleanup policy of topics a rule would remap (a compacted topic
/// must not be). Returns whether anything was asked: the request is
/// planned again once it is answered. Look-ups that failed are gone on
/// without, as before: the topic is treated as the view has it.
fn ask_what_remapping_needs(ctx: &ProxyContext, needs: &mut Needs<'_>, req: &Struct<'_>) -> bool {
    let names = topic_names(req);
    let unknown = ctx.cluster.unknown_topics(names.iter().copied());
    let mut asked = !unknown.is_empty() && needs.ask(Lookup::Topics(unknown)).is_ok();
    let ids = topic_ids(req);
    let unknown_ids = ctx.cluster.unknown_topic_ids(ids.iter().copied());
    asked |= !unknown_ids.is_empty() && needs.ask(Lookup::TopicIds(unknown_ids)).is_ok();
    if asked {
        return true;
    }
    let unknown_policies = {
        let view = ctx.cluster.read();
        let named_by_id = ids.iter().filter_map(|id| view.topic_names.get(id).map(String::as_str));
        crate::upstream::cleanup::unknown_policies(&view, &ctx.mapper, names.iter().copied().chain(named_by_id))
    };
    !unknown_policies.is_empty() && needs.ask(Lookup::CleanupPolicies(unknown_policies)).is_ok()
}

/// The topic ids a Fetch (v13+) names. Read in every request by name:
/// any other naming its topics alike is read alike.
fn topic_ids(req: &Struct<'_>) -> Vec<[u8; 16]> {
    const TOPICS: Field<Array<Child>> = fetch_request::TOPICS.by_name();
    const TOPIC_ID: Field<Uuid> = fetch_request::topics::TOPIC_ID.by_name();
    if !req.has(TOPICS) {
        return Vec::new();
    }
    req.iter(TOPICS).filter(|t| t.has(TOPIC_ID)).filter_map(|t| t.read(TOPIC_ID)).collect()
}

/// Where the remap-aware APIs list topics: (topics array, a topic's name),
/// read in every request by name, since each API names them so at its own
/// position.
const TOPIC_LISTS: [(Field<Array<Child>>, Field<Str>); 4] = [
    (produce_request::TOPIC_DATA.by_name(), produce_request::topic_data::NAME.by_name()),
    (list_offsets_request::TOPICS.by_name(), list_offsets_request::topics::NAME.by_name()),
    (fetch_request::TOPICS.by_name(), fetch_request::topics::TOPIC.by_name()),
    (add_partitions::V3_AND_BELOW_TOPICS.by_name(), add_partitions::v3_and_below_topics::NAME.by_name()),
];

/// The topic names a request names, in the places the remap-aware APIs
/// keep them (OffsetFetch v8+: per group).
fn topic_names<'r>(req: &'r Struct<'_>) -> Vec<&'r str> {
    use offset_fetch_request::groups;
    const GROUPS: Field<Array<Child>> = offset_fetch_request::GROUPS.by_name();
    const GROUP_TOPICS: Field<Array<Child>> = groups::TOPICS.by_name();
    const GROUP_TOPIC_NAME: Field<Str> = groups::topics::NAME.by_name();
    let mut out = Vec::new();
    for (list, name) in TOPIC_LISTS {
        if !req.has(list) {
            continue;
        }
        for t in req.iter(list) {
            if t.has(name) {
                out.extend(t.read(name));
            }
        }
    }
    if req.has(GROUPS) {
        for g in req.iter(GROUPS) {
            if g.has(GROUP_TOPICS) {
                out.extend(g.iter(GROUP_TOPICS).filter_map(|t| t.read(GROUP_TOPIC_NAME)));
            }
        }
    }
    out
}
