//! Group membership and description (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups): forwarded to the group's
//! coordinator as they came. Membership names no partitions, so remapping
//! does not touch it; ListGroups hides the proxy's derived groups.

use std::time::Duration;

use super::passthrough::{first_str, forward, group_route};
use super::Request;
use crate::kafka::codec::Struct;
use crate::proxy::plan::{Finish, Plan};
use crate::proxy::route::Route;
use crate::proxy::session::extra_wait;
use crate::remap::groups::parse_derived;

pub fn join_group(r: &mut Request<'_, '_>) -> Plan {
    let wait = r.body.i32("rebalance_timeout_ms").or(r.body.i32("session_timeout_ms")).unwrap_or(0);
    forward(r, group_route(r.body.str("group_id")), extra_wait(wait), Finish::AsIs)
}

pub fn sync_group(r: &mut Request<'_, '_>) -> Plan {
    // A follower's SyncGroup waits for the leader's assignment.
    let wait = Duration::from_secs(60);
    forward(r, group_route(r.body.str("group_id")), wait, Finish::AsIs)
}

/// Heartbeat, LeaveGroup, and the group APIs' pass-through: to the
/// coordinator of `group_id`.
pub fn to_coordinator(r: &mut Request<'_, '_>) -> Plan {
    forward(r, group_route(r.body.str("group_id")), Duration::ZERO, Finish::AsIs)
}

pub fn describe_groups(r: &mut Request<'_, '_>) -> Plan {
    forward(r, group_route(first_str(r.body.array("groups"))), Duration::ZERO, Finish::AsIs)
}

pub fn list_groups(r: &mut Request<'_, '_>) -> Plan {
    let finish = if r.ctx.mapper.remaps_anything() {
        Finish::Rewrite(Box::new(|_ctx, _v, body| Ok(hide_derived_groups(body))))
    } else {
        Finish::AsIs
    };
    forward(r, Route::Any, Duration::ZERO, finish)
}

/// ListGroups: derived groups are the proxy's bookkeeping, not the user's.
fn hide_derived_groups(body: &mut Struct<'_>) -> bool {
    let Some(groups) = body.array_mut("groups") else { return false };
    let before = groups.len();
    groups.retain(|g| g.as_struct().and_then(|g| g.str("group_id")).map_or(true, |id| parse_derived(id).is_none()));
    groups.len() != before
}
