//! TxnOffsetCommit. Pass-through: to the group's coordinator. k = 0
//! partitions are their physical partitions; a k ≥ 1 partition would need
//! the transaction's producer id on a derived group, which is not designed
//! yet: the whole commit is refused so that no transaction commits a part
//! of its offsets.


use log::warn;

use super::derived::{codes_response, placements_of, Target, TXN_OFFSET_COMMIT};
use super::Request;
use crate::kafka::api::error;
use crate::proxy::plan::Plan;


/// To the coordinator of `group_id`, as it came.
pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    super::groups::to_coordinator(r)
}


/// TxnOffsetCommit: k = 0 partitions are their physical partitions; a
/// k ≥ 1 partition would need the transaction's producer id on a derived
/// group, which is not designed yet: the whole commit is refused so that
/// no transaction commits a part of its offsets.
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req) = (r.ctx, r.header, r.body);
    let (placements, remapped) = placements_of(ctx, &TXN_OFFSET_COMMIT.request, req);
    if !remapped {
        return None;
    }
    let refused: Vec<String> = placements
        .iter()
        .flat_map(|(t, ps)| ps.iter().filter(|(_, target)| !matches!(target, Target::Main(_))).map(move |(v, _)| format!("{t}/{v}")))
        .collect();
    if refused.is_empty() {
        return None;
    }
    warn!(
        "Refusing TxnOffsetCommit of group {:?}: virtual partitions {} are not partition 0..P-1 of their topic, and \
         transactions on those are not supported",
        req.read(TXN_OFFSET_COMMIT.group_id).unwrap_or_default(),
        refused.join(", ")
    );
    Some(match codes_response(&TXN_OFFSET_COMMIT, header.api_version, header.correlation_id, 0, &placements, &|_, t| match t {
        Target::Local(c) => *c,
        _ => error::INVALID_TXN_STATE,
    }) {
        Ok(bytes) => Plan::Answer(bytes),
        Err(e) => Plan::Close(e),
    })
}
