//! One handler per Kafka API: how a request is routed (pass-through and
//! remapped), how it is rewritten, and how its answers become the client's
//! answer (its `plan::Finish`), so that one API's behaviour is in one file.
//!
//! # How a request flows through a handler
//!
//! `requests::plan` does the common steps: the version check, the decode,
//! and, when a rule remaps anything, `ask_what_remapping_needs` (metadata
//! and cleanup policies the decision needs, looked up off the worker).
//! Then it takes the API's [`Handler`] from [`handler`]:
//!
//! 1. `remapped` (when a rule remaps anything) plans a request naming
//!    remapped topics: it splits, rewrites or refuses entries, using the
//!    pure rewrites of `crate::remap`, and returns the plan with the
//!    handler's own function that builds the client's answer (called by
//!    `session::complete` once the answers are in). `None`: the request
//!    names no remapped topic.
//! 2. `forward` plans everything else: the request goes upstream as the
//!    bytes that came, with a `route::Route` read from its content, and its
//!    answer comes back as it came or with addresses rewritten.
//!
//! `requests::take` hands the plan to the session, which sends it and,
//! once the answers are in, calls the handler's function
//! (`session::complete`).
//!
//! # The handlers
//!
//! - [`api_versions`]: ApiVersions, answered by the proxy, and the versions
//!   it offers.
//! - [`produce`], [`fetch`], [`list_offsets`], [`leader_epoch`]
//!   (OffsetForLeaderEpoch): the data path; [`split`] splits the last
//!   three into rounds by physical partition, and is the whole of the last
//!   two ([`split::split_unchanged`]).
//! - [`metadata`], [`find_coordinator`]: the cluster as the client sees it.
//! - [`offset_commit`], [`offset_fetch`], [`offset_delete`],
//!   [`txn_offset_commit`], [`delete_groups`]: committed offsets, with k ≥ 1
//!   virtual partitions' in derived groups ([`derived`] holds what they
//!   share).
//! - [`groups`]: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups
//!   and ListGroups, passed to the coordinator.
//! - [`txn`]: InitProducerId, AddOffsetsToTxn, EndTxn;
//!   [`add_partitions_to_txn`].
//! - [`create_topics`]; [`admin`]: DeleteRecords, CreatePartitions,
//!   DeleteTopics, configs, DescribeCluster, DescribeProducers;
//!   DescribeTopicPartitions goes to any broker ([`passthrough::to_any`]).
//! - [`sasl`]: SaslHandshake, SaslAuthenticate and the gate before
//!   login, when clients authenticate to the proxy.
//! - [`passthrough`]: forwarding helpers every handler uses; [`common`]:
//!   decoding answers.

pub mod add_partitions_to_txn;
pub mod admin;
pub mod api_versions;
pub mod common;
pub mod create_topics;
pub mod delete_groups;
pub mod derived;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod leader_epoch;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod passthrough;
pub mod produce;
pub mod sasl;
pub mod split;
pub mod txn;
pub mod txn_offset_commit;

#[cfg(test)]
mod tests;

use super::lookups::Needs;
use super::plan::Plan;
use super::session::Session;
use super::ProxyContext;
use crate::kafka::api::ApiKey;
use crate::kafka::codec::Struct;
use crate::kafka::header::RequestHeader;

/// One decoded client request, with what planning it may use.
pub struct Request<'r, 'n> {
    pub ctx: &'r ProxyContext,
    pub session: &'r mut Session,
    /// Where a plan asks for control look-ups (`lookups`).
    pub needs: &'r mut Needs<'n>,
    pub header: &'r RequestHeader<'r>,
    /// The decoded body.
    pub body: &'r Struct<'r>,
    /// The whole frame as the client sent it (header and body).
    pub frame: &'r [u8],
}

impl Request<'_, '_> {
    pub fn version(&self) -> i16 {
        self.header.api_version
    }
}

/// The plan for a request naming remapped topics; `None` when it names
/// none, so that it is forwarded.
pub type RemappedFn = fn(&mut Request<'_, '_>) -> Option<Plan>;

/// The plan for a request forwarded as it came.
pub type ForwardFn = fn(&mut Request<'_, '_>) -> Plan;

/// What the proxy does with one API.
pub struct Handler {
    /// Tried first when a rule remaps anything.
    pub remapped: Option<RemappedFn>,
    pub forward: ForwardFn,
}

const fn forwarded(forward: ForwardFn) -> Handler {
    Handler { remapped: None, forward }
}

const fn remapped(remapped: RemappedFn, forward: ForwardFn) -> Handler {
    Handler { remapped: Some(remapped), forward }
}

/// The handler of every API the proxy offers (ApiVersions is answered
/// before decoding: `None`). SASL is answered by the proxy ([`sasl`]),
/// offered only when clients authenticate.
pub fn handler(api: ApiKey) -> Option<Handler> {
    use ApiKey::*;
    Some(match api {
        Produce => remapped(produce::remapped, produce::forward),
        Fetch => remapped(fetch::remapped, fetch::forward),
        ListOffsets => remapped(list_offsets::remapped, list_offsets::forward),
        OffsetForLeaderEpoch => remapped(leader_epoch::remapped, leader_epoch::forward),
        Metadata => forwarded(metadata::forward_and_virtualize),
        FindCoordinator => forwarded(find_coordinator::forward_and_remember),
        OffsetCommit => remapped(offset_commit::remapped, offset_commit::forward),
        OffsetFetch => remapped(offset_fetch::remapped, offset_fetch::forward),
        OffsetDelete => remapped(offset_delete::remapped, offset_delete::forward),
        TxnOffsetCommit => remapped(txn_offset_commit::remapped, txn_offset_commit::forward),
        DeleteGroups => remapped(delete_groups::remapped, delete_groups::forward),
        JoinGroup => forwarded(groups::join_group),
        SyncGroup => forwarded(groups::sync_group),
        Heartbeat | LeaveGroup => forwarded(groups::to_coordinator),
        DescribeGroups => forwarded(groups::describe_groups),
        ListGroups => forwarded(groups::list_groups),
        InitProducerId | AddOffsetsToTxn | EndTxn => forwarded(txn::to_coordinator),
        AddPartitionsToTxn => remapped(add_partitions_to_txn::remapped, add_partitions_to_txn::forward),
        CreateTopics => remapped(create_topics::remapped, create_topics::forward),
        CreatePartitions => remapped(admin::create_partitions_remapped, admin::to_controller),
        DeleteTopics => forwarded(admin::to_controller),
        DeleteRecords => remapped(admin::delete_records_remapped, admin::delete_records),
        DescribeConfigs | IncrementalAlterConfigs => forwarded(admin::configs),
        DescribeCluster => forwarded(admin::describe_cluster),
        DescribeProducers => forwarded(admin::describe_producers),
        DescribeTopicPartitions => forwarded(passthrough::to_any),
        SaslHandshake => forwarded(sasl::handshake),
        SaslAuthenticate => forwarded(sasl::authenticate),
        ApiVersions => return None,
    })
}
