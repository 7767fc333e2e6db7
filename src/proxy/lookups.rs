//! Control look-ups, off the workers. A plan that needs something the
//! proxy must first ask the cluster — metadata for a topic it has not seen,
//! a coordinator, a derived producer id, a broker's address — says so
//! (`Needs::ask`); the worker parks that client's request and goes on with
//! its other connections. A small pool of look-up threads, each with its
//! own blocking `ControlClient`, asks the cluster, stores the answer where
//! plans read it (the cluster view, the mapper, the producer-id table), and
//! tells the worker (`ToWorker::LookupsDone`), which plans the request
//! again. A look-up that failed is not asked again for that request: the
//! plan then does what it did before look-ups moved here (route to any
//! broker, answer a retriable error), so a client never waits forever.
//!
//! A worker therefore never waits on a socket: the longest a look-up can
//! take (`connection_timeout_ms` plus `request_timeout_ms`) is spent on a
//! look-up thread, costing only the requests that need that answer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::debug;
use mio::Token;

use super::ProxyContext;
use crate::cluster::CoordinatorKind;
use crate::upstream::control::ControlClient;

/// Look-up threads. A look-up the cluster does not answer holds one for
/// up to the request timeout; the others keep serving.
pub const LOOKUP_THREADS: usize = 4;

/// Times a parked request is planned again after look-ups before it goes
/// on without what it still misses (metadata learnt in one round can name
/// a topic whose cleanup policy, or a producer whose derived id, is the
/// next round's question).
pub const MAX_LOOKUP_ROUNDS: u8 = 4;

/// Something a plan needs to know before it can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Metadata (and, for topics a rule remaps, the cleanup policy) of
    /// topics the cluster view does not know.
    Topics(Vec<String>),
    /// Metadata of every topic: a request named topic ids the view does
    /// not know (Metadata by id needs v10+).
    TopicIds(Vec<[u8; 16]>),
    /// The cleanup policy of topics a rule would remap.
    CleanupPolicies(Vec<String>),
    Coordinator(CoordinatorKind, String),
    /// The derived producer id of a client's producer at sibling index k.
    DerivedProducerId { client: (i64, i16), k: i32 },
    /// The client sequence that is sequence 0 of a derived id on a
    /// physical partition.
    SequenceBase { derived: i64, topic: String, partition: i32, first_seen: i32 },
    /// A broker's host name, resolved to an address.
    Address(String),
}

/// What a plan asks for, and what earlier rounds could not learn.
pub struct Needs<'f> {
    asked: Vec<Lookup>,
    failed: &'f [(Lookup, String)],
    /// False in the last round: nothing more may be asked.
    may_ask: bool,
}

impl<'f> Needs<'f> {
    pub fn new(failed: &'f [(Lookup, String)], round: u8) -> Needs<'f> {
        Needs { asked: Vec::new(), failed, may_ask: round < MAX_LOOKUP_ROUNDS }
    }

    /// Ask for `lookup`. `Ok(())`: asked, the plan will run again once it
    /// is answered. `Err(why)`: it failed already (or no more rounds are
    /// left); the caller goes on without it.
    pub fn ask(&mut self, lookup: Lookup) -> Result<(), String> {
        if let Some((_, why)) = self.failed.iter().find(|(l, _)| *l == lookup) {
            return Err(why.clone());
        }
        if !self.may_ask {
            return Err(format!("{lookup:?} still unknown after {MAX_LOOKUP_ROUNDS} look-ups"));
        }
        if !self.asked.contains(&lookup) {
            self.asked.push(lookup);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.asked.is_empty()
    }

    pub fn take(&mut self) -> Vec<Lookup> {
        std::mem::take(&mut self.asked)
    }
}

/// A worker's request for look-ups on behalf of one connection.
pub struct LookupJob {
    pub worker: usize,
    pub conn: Token,
    pub lookups: Vec<Lookup>,
}

/// The answer to a `LookupJob`, sent to its worker: what could not be
/// learnt (the rest is in the cluster view, the mapper and the producer-id
/// table, where plans read it).
pub struct LookupsDone {
    pub conn: Token,
    pub failures: Vec<(Lookup, String)>,
}

/// Where workers send look-ups (kept in `ProxyContext`).
pub struct LookupQueue {
    tx: Sender<LookupJob>,
    rx: Receiver<LookupJob>,
}

impl Default for LookupQueue {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        LookupQueue { tx, rx }
    }
}

impl LookupQueue {
    pub fn submit(&self, job: LookupJob) {
        // The receiver lives as long as the queue: the send cannot fail.
        let _ = self.tx.send(job);
    }
}

/// Start the look-up threads, answering worker `i` on `workers[i]`; they
/// stop at shutdown.
pub fn spawn(ctx: &Arc<ProxyContext>, workers: Vec<Sender<LookupsDone>>) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    (0..LOOKUP_THREADS)
        .map(|i| {
            let ctx = ctx.clone();
            let workers = workers.clone();
            std::thread::Builder::new().name(format!("lookups-{i}")).spawn(move || run(ctx, workers))
        })
        .collect()
}

fn run(ctx: Arc<ProxyContext>, workers: Vec<Sender<LookupsDone>>) {
    let settings = &ctx.settings;
    let mut control = settings.control_client(ctx.cluster.clone(), &ctx.shared);
    let rx = ctx.lookups.rx.clone();
    while !ctx.shared.shutdown.load(Ordering::SeqCst) {
        let job = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let failures: Vec<(Lookup, String)> = job
            .lookups
            .into_iter()
            .filter_map(|lookup| {
                // A bug that panics fails this look-up, not the thread: its
                // worker must still be answered, or the client waits forever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| perform(&ctx, &mut control, &lookup)))
                    .unwrap_or_else(|_| Err("internal error (see the panic message above)".to_string()));
                result.err().map(|why| {
                    debug!("Look-up {lookup:?} failed: {why}");
                    (lookup, why)
                })
            })
            .collect();
        if let Some(worker) = workers.get(job.worker) {
            let _ = worker.send(LookupsDone { conn: job.conn, failures });
        }
    }
}

/// Learn one thing, unless another job learnt it meanwhile.
fn perform(ctx: &ProxyContext, control: &mut ControlClient, lookup: &Lookup) -> Result<(), String> {
    let cluster = &ctx.cluster;
    match lookup {
        Lookup::Topics(names) => {
            let unknown = cluster.unknown_topics(names.iter().map(String::as_str));
            if !unknown.is_empty() {
                control.refresh_topics(&unknown).map_err(|e| e.to_string())?;
            }
            learn_policies(ctx, control, names);
            Ok(())
        }
        Lookup::TopicIds(ids) => {
            if cluster.unknown_topic_ids(ids.iter().copied()).is_empty() {
                return Ok(());
            }
            let result = control.refresh_metadata().map_err(|e| e.to_string());
            for id in ids {
                if cluster.topic_name(id).is_none() {
                    cluster.note_missing_id(*id);
                }
            }
            result
        }
        Lookup::CleanupPolicies(names) => {
            learn_policies(ctx, control, names);
            Ok(())
        }
        Lookup::Coordinator(kind, key) => {
            if cluster.coordinator(*kind, key).is_some() {
                return Ok(());
            }
            control.find_coordinator(*kind, key).map(|_| ()).map_err(|e| e.to_string())
        }
        Lookup::DerivedProducerId { client, k } => {
            let log = ctx.producer_log.as_ref().ok_or("no producer-id topic (no rule remaps)")?;
            log.derived(control, &ctx.shared, *client, *k).map(|_| ()).map_err(|e| e.to_string())
        }
        Lookup::SequenceBase { derived, topic, partition, first_seen } => {
            let log = ctx.producer_log.as_ref().ok_or("no producer-id topic (no rule remaps)")?;
            log.sequence_base(control, *derived, topic, *partition, *first_seen).map(|_| ()).map_err(|e| e.to_string())
        }
        Lookup::Address(addr) => crate::upstream::connect::resolve(addr, cluster).map(|_: SocketAddr| ()).map_err(|e| e.to_string()),
    }
}

/// Read the cleanup policy of those of `names` a rule would remap, and log
/// every one newly found compacted (it is refused, not remapped).
fn learn_policies(ctx: &ProxyContext, control: &mut ControlClient, names: &[String]) {
    for topic in crate::upstream::cleanup::learn(control, &ctx.mapper, names) {
        let rule = ctx.mapper.rule_for(&topic).map(|r| r.to_string()).unwrap_or_default();
        log::error!("{}", crate::remap::mapping::compacted_message(&topic, &rule));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_look_up_is_not_asked_again() {
        let failed = vec![(Lookup::Coordinator(CoordinatorKind::Group, "g".into()), "no broker".to_string())];
        let mut needs = Needs::new(&failed, 1);
        assert_eq!(needs.ask(Lookup::Coordinator(CoordinatorKind::Group, "g".into())), Err("no broker".into()));
        assert!(needs.is_empty());
        assert_eq!(needs.ask(Lookup::Coordinator(CoordinatorKind::Group, "h".into())), Ok(()));
        assert_eq!(needs.ask(Lookup::Coordinator(CoordinatorKind::Group, "h".into())), Ok(()));
        assert_eq!(needs.take().len(), 1, "asked once");
    }

    #[test]
    fn the_last_round_asks_nothing() {
        let mut needs = Needs::new(&[], MAX_LOOKUP_ROUNDS);
        assert!(needs.ask(Lookup::Topics(vec!["t".into()])).is_err());
        assert!(needs.is_empty());
    }
}
