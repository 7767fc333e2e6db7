//! Work of a client that waits for control look-ups (`proxy::lookups`):
//! parked in arrival order, so nothing of that client overtakes it, and
//! handed back to the worker when the look-ups are answered.

use std::collections::VecDeque;

use log::debug;

use super::super::lookups::{Lookup, LookupJob};
use super::super::plan::Part;
use super::super::ProxyContext;
use super::{Session, Verdict};

/// Work of a client waiting for control look-ups (`lookups`), in the
/// order it came: nothing of that client overtakes it.
pub enum Deferred {
    /// A request frame to plan again once the look-ups are done.
    Frame { frame: Vec<u8>, round: u8 },
    /// Parts of a request (or of a later stage of it) to send once their
    /// coordinators or broker addresses are known.
    Send { seq: u64, api_key: i16, parts: Vec<(usize, Part)>, expect_response: bool, attempt: u32, round: u8 },
}

impl Session {
    /// Park `work` until `lookups` are answered (`LookupsDone` from a
    /// look-up thread: the worker calls `take_deferred` then).
    pub fn defer(&mut self, ctx: &ProxyContext, work: Deferred, lookups: Vec<Lookup>) {
        debug!("{}: waiting for look-ups {lookups:?}", self.client.peer);
        self.deferred.push_front(work);
        ctx.lookups.submit(LookupJob { worker: self.worker, conn: self.conn, lookups });
    }

    /// Whether the client's earlier work waits for look-ups.
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Park a client request behind work already waiting for look-ups.
    pub fn defer_frame(&mut self, frame: Vec<u8>) {
        self.deferred.push_back(Deferred::Frame { frame, round: 0 });
    }

    /// The work that waited for look-ups, now answered, to be handled in
    /// order: whatever of it must wait again goes back with `defer` (it is
    /// first then) and the rest with `requeue`.
    pub fn take_deferred(&mut self) -> VecDeque<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// Put back work behind what waits again.
    pub fn requeue(&mut self, rest: VecDeque<Deferred>) {
        self.deferred.extend(rest);
    }

    /// Send parts that waited for look-ups.
    pub fn send_deferred(&mut self, ctx: &ProxyContext, send: Deferred) -> Verdict {
        let seq = match &send {
            Deferred::Send { seq, .. } => *seq,
            Deferred::Frame { .. } => unreachable!("frames are planned by the worker"),
        };
        match self.send_indexed(ctx, send) {
            Ok(()) => Verdict::Continue,
            Err(reason) => {
                self.held.retain(|(_, h)| h.seq != seq);
                Verdict::Close(reason)
            }
        }
    }
}
