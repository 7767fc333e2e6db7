//! Transaction APIs that name no partition (InitProducerId,
//! AddOffsetsToTxn, EndTxn): forwarded to the transaction's coordinator
//! as they came; InitProducerId without a transactional id to any broker.

use std::time::Duration;

use super::passthrough::{forward, transaction_route};
use super::Request;
use crate::proxy::plan::{Finish, Plan};

pub fn to_coordinator(r: &mut Request<'_, '_>) -> Plan {
    forward(r, transaction_route(r.body.str("transactional_id")), Duration::ZERO, Finish::AsIs)
}
