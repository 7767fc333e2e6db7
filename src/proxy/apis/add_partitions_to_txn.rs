//! AddPartitionsToTxn. Pass-through: to the transaction's coordinator.
//! On remapped topics, only k = 0 virtual partitions (their own physical
//! partitions) may join a transaction.

use std::time::Duration;

use log::warn;

use super::passthrough::{forward as forward_as_is, transaction_route};
use super::Request;
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::fields::add_partitions_to_txn_response::{self as response, results_by_topic_v3_and_below as topic_result};
use crate::kafka::fields::{add_partitions_to_txn_request as request, members};
use crate::kafka::message::{encode_response, response_schema};
use crate::proxy::plan::{Finish, Plan};
use crate::remap::mapping::{Decision, VirtualPartition};

pub fn forward(r: &mut Request<'_, '_>) -> Plan {
    let txn = r
        .body
        .read(request::V3_AND_BELOW_TRANSACTIONAL_ID)
        .or_else(|| r.body.iter(request::TRANSACTIONS).next().and_then(|t| t.read(request::transactions::TRANSACTIONAL_ID)));
    forward_as_is(r, transaction_route(txn), Duration::ZERO, Finish::AsIs)
}

/// AddPartitionsToTxn (v0-3, the clients' form): k = 0 virtual partitions
/// are their physical partitions and pass; any k ≥ 1 partition refuses the
/// request, as Kafka refuses a request with one bad partition: that one
/// gets the error, the others OPERATION_NOT_ATTEMPTED.
pub fn remapped(r: &mut Request<'_, '_>) -> Option<Plan> {
    let (ctx, header, req, session) = (r.ctx, r.header, r.body, &*r.session);
    let version = header.api_version;
    if version > 3 {
        return None;
    }
    let view = ctx.cluster.read();
    let mut results: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    let mut any_bad = false;
    for t in req.iter(request::V3_AND_BELOW_TOPICS) {
        let name = t.read(request::v3_and_below_topics::NAME).unwrap_or_default().to_string();
        let decision = ctx.mapper.decide(&name, &view);
        let parts = t
            .items(request::v3_and_below_topics::PARTITIONS)
            .iter()
            .filter_map(|v| if let Value::Int32(i) = v { Some(*i) } else { None })
            .map(|v| {
                let code = match &decision {
                    Decision::PassThrough => error::NONE,
                    refused @ (Decision::Mismatch { .. } | Decision::Compacted { .. }) => {
                        refused.refusal_code().unwrap_or(error::INVALID_PARTITIONS)
                    }
                    Decision::Remap(m) => match m.locate(VirtualPartition(v)) {
                        None => error::UNKNOWN_TOPIC_OR_PARTITION,
                        Some((_, 0)) => error::NONE,
                        Some((_, _)) => error::INVALID_TXN_STATE,
                    },
                };
                if code != error::NONE {
                    any_bad = true;
                    warn!(
                        "Refusing AddPartitionsToTxn from {}: partition {v} of {name} is a virtual partition beyond 0..P-1; \
                         transactions are supported on 1:1 topics and partitions 0..P-1 of remapped topics only",
                        session.peer()
                    );
                }
                (v, code)
            })
            .collect();
        results.push((name, parts));
    }
    if !any_bad {
        return None;
    }
    let schema = response_schema(ApiKey::AddPartitionsToTxn as i16).expect("declared");
    let mut body = codec::with_defaults(&schema.body, version);
    let ts = members(&schema.body, response::RESULTS_BY_TOPIC_V3_AND_BELOW);
    let ps = members(ts, topic_result::RESULTS_BY_PARTITION);
    let topics: Vec<Value> = results
        .into_iter()
        .map(|(name, parts)| {
            let mut t = codec::with_defaults(ts, version);
            t.write(topic_result::NAME, name);
            let entries: Vec<Value> = parts
                .into_iter()
                .map(|(p, code)| {
                    let mut e = codec::with_defaults(ps, version);
                    e.write(topic_result::results_by_partition::PARTITION_INDEX, p);
                    e.write(topic_result::results_by_partition::PARTITION_ERROR_CODE, if code == error::NONE { error::OPERATION_NOT_ATTEMPTED } else { code });
                    Value::Struct(e)
                })
                .collect();
            t.write(topic_result::RESULTS_BY_PARTITION, entries);
            Value::Struct(t)
        })
        .collect();
    body.write(response::RESULTS_BY_TOPIC_V3_AND_BELOW, topics);
    Some(match encode_response(ApiKey::AddPartitionsToTxn as i16, version, header.correlation_id, &[], &body) {
        Ok(b) => Plan::Answer(b),
        Err(e) => Plan::Close(e.to_string()),
    })
}
