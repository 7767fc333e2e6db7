//! Produce requests the proxy re-encoded for remapped topics are held
//! until the client's burst is read, then sent merged (`coalesce`): fewer,
//! bigger requests to a broker still busy with this client's earlier ones.
//! The answer to a merged request is cut apart here too, so that holding,
//! merging, sending and cutting apart are one step of a produce's path
//! (`coalesce` is the pure arithmetic of both).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::coalesce::{self, Held, Member, Outgoing};
use super::super::plan::CorrelationIds;
use super::super::ProxyContext;
use super::upstreams::InFlight;
use super::{Session, Verdict, PRODUCE};

/// Produce requests of one client a broker may be working on before the
/// proxy holds the next ones back to merge them (`Session::flush_held`).
pub(super) const PRODUCE_REQUESTS_IN_FLIGHT: usize = 1;

impl Session {
    /// Hold a produce part the proxy built for the broker at `addr`, to go
    /// upstream with the rest of the client's burst (`flush_held`).
    pub(super) fn hold(&mut self, addr: &str, held: Held) {
        self.held.push((addr.to_string(), held));
    }

    /// Send the held produce parts, merged where Kafka allows
    /// (`coalesce`), one write per broker. Unless `force`d, parts for a
    /// broker still answering this client's earlier produce requests wait
    /// for that answer: a broker works through one connection's requests
    /// one at a time, so they would wait there anyway, and meanwhile more
    /// of the client's requests join them. An idle broker gets a request at
    /// once; a busy one gets fewer, bigger requests.
    pub fn flush_held(&mut self, ctx: &ProxyContext, force: bool) -> Result<(), String> {
        let mut waiting = Vec::new();
        let mut failure = None;
        while !self.held.is_empty() {
            let addr = self.held[0].0.clone();
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|(a, _)| *a == addr);
            self.held = rest;
            let busy = self.upstreams.get(&addr).map_or(0, |up| {
                up.in_flight.iter().filter(|f| f.api_key == PRODUCE && f.expects_answer).count()
            });
            if !force && busy >= PRODUCE_REQUESTS_IN_FLIGHT {
                waiting.extend(mine);
                continue;
            }
            // A broker that cannot take its parts loses only those: the
            // others still go (or wait) as they would have.
            if let Err(e) = self.send_held(ctx, &addr, mine.into_iter().map(|(_, h)| h).collect()) {
                failure.get_or_insert(e);
            }
        }
        self.held = waiting;
        failure.map_or(Ok(()), Err)
    }

    /// Send one broker's held parts, merged (`coalesce`), in one write.
    pub(super) fn send_held(&mut self, ctx: &ProxyContext, addr: &str, held: Vec<Held>) -> Result<(), String> {
        let outgoing = coalesce::coalesce(held, || self.next_correlation_id());
        let upstream = self.upstream(ctx, addr)?;
        let bodies: Vec<&[u8]> = outgoing
            .iter()
            .map(|o| match o {
                Outgoing::Single(h) => h.frame.as_slice(),
                Outgoing::Merged { frame, .. } => frame.as_slice(),
            })
            .collect();
        upstream.send_frames(&bodies).map_err(|e| format!("cannot send Produce to Kafka broker {addr}: {e}"))?;
        let api_key = PRODUCE;
        let metrics = &ctx.shared.metrics;
        for o in outgoing {
            upstream.in_flight.push_back(match o {
                Outgoing::Single(h) => {
                    InFlight {
                        seq: h.seq,
                        part: h.part,
                        correlation_id: h.correlation_id,
                        api_key,
                        deadline: h.deadline,
                        sent_at: Instant::now(),
                        merged: None,
                        expects_answer: true,
                        coordinator: None,
                    }
                }
                Outgoing::Merged { correlation_id, version, members, deadline, .. } => {
                    metrics.produce_requests_merged_total.fetch_add(members.len() as u64, Ordering::Relaxed);
                    metrics.produce_requests_merged_into_total.fetch_add(1, Ordering::Relaxed);
                    InFlight {
                        seq: 0,
                        part: 0,
                        correlation_id,
                        api_key,
                        deadline,
                        sent_at: Instant::now(),
                        merged: Some((version, members)),
                        expects_answer: true,
                        coordinator: None,
                    }
                }
            });
        }
        Ok(())
    }

    /// The answer to a merged request: cut back into one answer per
    /// original part (`coalesce::split_response`), each delivered as if it
    /// had been sent alone.
    pub(super) fn deliver_merged(&mut self, ctx: &ProxyContext, frame: &[u8], version: i16, members: &[Member]) -> Verdict {
        let answers = match coalesce::split_response(frame, version, members) {
            Ok(a) => a,
            Err(e) => return Verdict::Close(format!("cannot read the answer to merged produce requests: {e}")),
        };
        for (m, answer) in members.iter().zip(answers) {
            if let Verdict::Close(reason) = self.deliver(ctx, m.seq, m.part, answer) {
                return Verdict::Close(reason);
            }
        }
        Verdict::Continue
    }
}
