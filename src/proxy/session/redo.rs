//! The proxy's own requests to derived groups, which no client would
//! retry: sent again, after a short backoff, when their coordinator moved,
//! is loading, or its connection failed — as Kafka's clients do for their
//! own groups.

use std::time::{Duration, Instant};

use log::debug;

use super::super::plan::{Part, PartFrame};
use super::super::route::{coordinator_key, Route};
use super::super::ProxyContext;
use super::{Deferred, Session, Verdict};
use crate::cluster::CoordinatorKind;
use crate::kafka::api::api_name;

/// A request sent to a coordinator.
pub(super) struct Coordinated {
    pub(super) kind: CoordinatorKind,
    pub(super) key: String,
    /// The request's version, to read the answer's error codes.
    pub(super) version: i16,
    /// For the proxy's own requests to derived groups, which no client
    /// retries: what it takes to send it again.
    pub(super) redo: Option<Redo>,
}

/// A request to a derived group's coordinator, kept to be sent again when
/// the coordinator moved, is loading, or its connection failed: the proxy
/// does for derived groups what Kafka's clients do for their own groups.
pub(super) struct Redo {
    pub(super) route: Route,
    pub(super) frame: Vec<u8>,
    pub(super) broker_wait: Duration,
    /// How many times it was sent before this one (0: first).
    pub(super) attempt: u32,
}

/// A `Redo` waiting for its backoff.
pub(super) struct DueRedo {
    pub(super) due: Instant,
    pub(super) seq: u64,
    pub(super) part: usize,
    pub(super) api_key: i16,
    pub(super) redo: Redo,
}

/// Times a request to a derived group is sent again before its error goes
/// to the client as Kafka gave it; the waits before double from
/// `COORDINATOR_BACKOFF` (50, 100, 200, 400 ms), about as long as a
/// coordinator needs to move or load.
pub(super) const COORDINATOR_RETRIES: u32 = 4;

pub(super) const COORDINATOR_BACKOFF: Duration = Duration::from_millis(50);

/// Whether a part is one of the proxy's own requests to a derived group.
pub(super) fn derived_group_part(part: &Part) -> bool {
    matches!(&part.route, Route::Group(g) if crate::remap::groups::parse_derived(g).is_some())
        && matches!(part.frame, PartFrame::Owned(_))
}

/// What to remember of a part sent to a coordinator (sent for the
/// `attempt`-th time).
pub(super) fn coordinated(part: &Part, attempt: u32) -> Option<Coordinated> {
    let (kind, key) = coordinator_key(&part.route)?;
    let bytes = match &part.frame {
        PartFrame::Original => return None,
        frame => frame.bytes(),
    };
    let version = i16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    let redo = derived_group_part(part).then(|| Redo {
        route: part.route.clone(),
        frame: bytes.to_vec(),
        broker_wait: part.broker_wait,
        attempt,
    });
    Some(Coordinated { kind, key: key.to_string(), version, redo })
}

pub(super) fn route_name(route: &Route) -> &str {
    coordinator_key(route).map_or("?", |(_, key)| key)
}

impl Session {
    /// Wait before sending a request to a derived group again; its
    /// coordinator is looked up again when it is sent (`resend_due`).
    pub(super) fn schedule_redo(&mut self, seq: u64, part: usize, api_key: i16, mut redo: Redo, why: &str) {
        let wait = COORDINATOR_BACKOFF * 2u32.pow(redo.attempt);
        debug!("{} for {} of {} again in {wait:?} ({why})", api_name(api_key), self.client.peer, route_name(&redo.route));
        redo.attempt += 1;
        self.redos.push(DueRedo { due: Instant::now() + wait, seq, part, api_key, redo });
    }

    /// Send the requests to derived groups whose backoff is over.
    pub fn resend_due(&mut self, ctx: &ProxyContext, now: Instant) -> Verdict {
        if self.redos.iter().all(|r| r.due > now) {
            return Verdict::Continue;
        }
        let (due, later): (Vec<DueRedo>, Vec<DueRedo>) = std::mem::take(&mut self.redos).into_iter().partition(|r| r.due <= now);
        self.redos = later;
        for r in due {
            let Some(correlation_id) = r.redo.frame.get(4..8).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else {
                continue;
            };
            let part = Part { route: r.redo.route, frame: PartFrame::Owned(r.redo.frame), correlation_id, broker_wait: r.redo.broker_wait };
            let send =
                Deferred::Send { seq: r.seq, api_key: r.api_key, parts: vec![(r.part, part)], expect_response: true, attempt: r.redo.attempt, round: 0 };
            if let Err(reason) = self.send_indexed(ctx, send) {
                return Verdict::Close(reason);
            }
        }
        Verdict::Continue
    }
}
