//! Transaction APIs that name no partition (InitProducerId,
//! AddOffsetsToTxn, EndTxn): forwarded to the transaction's coordinator
//! as they came; InitProducerId without a transactional id to any broker.

use std::time::Duration;

use super::passthrough::{forward, transaction_route};
use super::Request;
use crate::kafka::fields::kinds::Str;
use crate::kafka::fields::{init_producer_id_request, Field};
use crate::proxy::plan::{Finish, Plan};

pub fn to_coordinator(r: &mut Request<'_, '_>) -> Plan {
    // The three requests name it alike.
    const TRANSACTIONAL_ID: Field<Str> = init_producer_id_request::TRANSACTIONAL_ID.by_name();
    forward(r, transaction_route(r.body.read(TRANSACTIONAL_ID)), Duration::ZERO, Finish::AsIs)
}
