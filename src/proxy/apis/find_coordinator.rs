//! FindCoordinator: forwarded to any broker; the coordinators it names are
//! remembered for routing, and the client is told the proxy is each one.

use std::time::Duration;

use super::passthrough::forward;
use super::Request;
use crate::cluster::CoordinatorKind;
use crate::kafka::api::error;
use crate::kafka::codec::Struct;
use crate::kafka::fields::{find_coordinator_request as request, find_coordinator_response as response};
use crate::proxy::plan::{Finish, Plan};
use crate::proxy::route::Route;
use crate::proxy::ProxyContext;
use crate::remap::addresses;

pub fn forward_and_remember(r: &mut Request<'_, '_>) -> Plan {
    let kind = if r.body.read(request::KEY_TYPE) == Some(1) { CoordinatorKind::Transaction } else { CoordinatorKind::Group };
    let single_key = r.body.read(request::KEY).map(str::to_string);
    forward(
        r,
        Route::Any,
        Duration::ZERO,
        Finish::Rewrite(Box::new(move |ctx, _v, body| {
            remember_coordinators(ctx, kind, single_key.as_deref(), body);
            Ok(addresses::rewrite_coordinators(body, &ctx.settings.advertised))
        })),
    )
}

/// Note each coordinator found: the one key of v0-3, or each of v4's batch.
fn remember_coordinators(ctx: &ProxyContext, kind: CoordinatorKind, single_key: Option<&str>, body: &Struct<'_>) {
    if let (Some(key), Some(node)) = (single_key, body.read(response::NODE_ID)) {
        if body.read(response::ERROR_CODE) == Some(error::NONE) && node >= 0 {
            ctx.cluster.set_coordinator(kind, key, node);
        }
    }
    for c in body.iter(response::COORDINATORS) {
        if let (Some(key), Some(node), Some(error::NONE)) = (c.read(response::coordinators::KEY), c.read(response::coordinators::NODE_ID), c.read(response::coordinators::ERROR_CODE)) {
            if node >= 0 {
                ctx.cluster.set_coordinator(kind, key, node);
            }
        }
    }
}
