//! Metadata: forwarded to any broker; the answer teaches the cluster view,
//! and the client sees the virtual partition counts of remapped topics,
//! the proxy as every broker, and the producer-id topic as internal.

use std::time::Duration;

use super::passthrough::forward;
use super::Request;
use crate::proxy::plan::{Finish, Plan};
use crate::proxy::route::Route;
use crate::remap::{addresses, metadata};

pub fn forward_and_virtualize(r: &mut Request<'_, '_>) -> Plan {
    forward(
        r,
        Route::Any,
        Duration::ZERO,
        Finish::Rewrite(Box::new(|ctx, _v, body| {
            ctx.cluster.apply_metadata(body);
            let virtualized = ctx.mapper.remaps_anything() && metadata::virtualize(body, &ctx.mapper, &ctx.cluster.read());
            // The proxy's own topic is internal to it: clients exclude
            // internal topics from pattern subscriptions.
            let hidden = ctx.producer_log.as_ref().is_some_and(|log| metadata::mark_internal(body, &log.settings.topic));
            Ok(addresses::rewrite_brokers(body, &ctx.settings.advertised) | virtualized | hidden)
        })),
    )
}
