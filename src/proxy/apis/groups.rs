//! Group membership and description (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups): forwarded to the group's
//! coordinator as they came. Membership names no partitions, so remapping
//! does not touch it; ListGroups hides the proxy's derived groups.

use std::time::Duration;

use super::passthrough::{first_str, forward, group_route};
use super::Request;
use crate::kafka::codec::Struct;
use crate::kafka::fields::kinds::Str;
use crate::kafka::fields::{describe_groups_request, heartbeat_request, join_group_request, list_groups_response, sync_group_request, Field};
use crate::proxy::plan::{Finish, Plan};
use crate::proxy::route::Route;
use crate::proxy::session::extra_wait;
use crate::remap::groups::parse_derived;

pub fn join_group(r: &mut Request<'_, '_>) -> Plan {
    use join_group_request as join;
    let wait = r.body.read(join::REBALANCE_TIMEOUT_MS).or(r.body.read(join::SESSION_TIMEOUT_MS)).unwrap_or(0);
    forward(r, group_route(r.body.read(join::GROUP_ID)), extra_wait(wait), Finish::AsIs)
}

pub fn sync_group(r: &mut Request<'_, '_>) -> Plan {
    // A follower's SyncGroup waits for the leader's assignment.
    let wait = Duration::from_secs(60);
    forward(r, group_route(r.body.read(sync_group_request::GROUP_ID)), wait, Finish::AsIs)
}

/// Heartbeat, LeaveGroup, and the group APIs' pass-through: to the
/// coordinator of `group_id`.
pub fn to_coordinator(r: &mut Request<'_, '_>) -> Plan {
    // Every one of them names it so, each at its own position.
    const GROUP_ID: Field<Str> = heartbeat_request::GROUP_ID.by_name();
    forward(r, group_route(r.body.read(GROUP_ID)), Duration::ZERO, Finish::AsIs)
}

pub fn describe_groups(r: &mut Request<'_, '_>) -> Plan {
    forward(r, group_route(first_str(r.body.items(describe_groups_request::GROUPS))), Duration::ZERO, Finish::AsIs)
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
    use list_groups_response::{groups, GROUPS};
    let Some(listed) = body.items_mut(GROUPS) else { return false };
    let before = listed.len();
    listed.retain(|g| g.as_struct().and_then(|g| g.read(groups::GROUP_ID)).map_or(true, |id| parse_derived(id).is_none()));
    listed.len() != before
}
