//! A refused SASL login (`apis::sasl`): its answer waits until its time
//! (repeated failures from one address are answered later), then it is
//! written and the connection closed. The worker's periodic check
//! releases it (`Worker::release_refusals`): no thread sleeps.

use std::time::Instant;

use super::{Pending, Session};

pub(super) struct Refusal {
    /// The request the answer belongs to; `None`: nothing to answer (a
    /// bare SASL token after SaslHandshake v0).
    seq: Option<u64>,
    due: Instant,
    response: Option<Vec<u8>>,
    reason: String,
}

impl Session {
    /// Answer a request with `response` at `due`, then close saying
    /// `reason`. Requests before it are answered first, as always.
    pub fn refuse(&mut self, api_key: i16, api_version: i16, correlation_id: i32, response: Option<Vec<u8>>, due: Instant, reason: String) {
        let seq = response.is_some().then(|| self.wait_for_answer(api_key, api_version, correlation_id));
        self.refusal = Some(Refusal { seq, due, response, reason });
    }

    /// `refuse` for a request already waiting as `seq` (a relayed login,
    /// `passthrough`); with no response to give, it stops waiting.
    pub(super) fn refuse_waiting(&mut self, seq: u64, response: Option<Vec<u8>>, due: Instant, reason: String) {
        if response.is_none() {
            self.pending.retain(|p| p.seq != seq);
        }
        self.refusal = Some(Refusal { seq: response.is_some().then_some(seq), due, response, reason });
    }

    /// A request whose answer the proxy gives later (`Pending::ready`).
    pub(super) fn wait_for_answer(&mut self, api_key: i16, api_version: i16, correlation_id: i32) -> u64 {
        let seq = self.take_seq();
        self.pending.push_back(Pending {
            seq,
            api_key,
            api_version,
            correlation_id,
            answers: Vec::new(),
            missing: 0,
            finish: None,
            ready: None,
        });
        seq
    }

    /// A refusal whose time has come: its answer is made ready to write,
    /// and the reason to close is returned.
    pub fn refusal_due(&mut self, now: Instant) -> Option<String> {
        if !self.refusal.as_ref().is_some_and(|r| r.due <= now) {
            return None;
        }
        let refusal = self.refusal.take()?;
        if let (Some(seq), Some(response)) = (refusal.seq, refusal.response) {
            if let Some(p) = self.pending.iter_mut().find(|p| p.seq == seq) {
                p.ready = Some(response);
            }
        }
        Some(refusal.reason)
    }
}
