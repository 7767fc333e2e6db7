//! OffsetForLeaderEpoch: the end offset of a leader epoch is its physical
//! partition's, so a request on remapped topics is split by physical
//! partition and the answers are given back under the client's partition
//! numbers.

use std::time::Duration;

use super::passthrough::first_partition;
use super::split::split_unchanged;
use super::Request;
use crate::kafka::api::ApiKey;
use crate::proxy::plan::{Finish, Plan};
use crate::remap::split;

pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    split_unchanged(r, ApiKey::OffsetForLeaderEpoch, split::LEADER_EPOCH)
}

/// To the leader of the first partition named.
pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    let route = first_partition(r.body, &split::LEADER_EPOCH);
    super::passthrough::forward(r, route, Duration::ZERO, Finish::AsIs)
}
