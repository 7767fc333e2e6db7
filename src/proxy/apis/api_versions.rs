//! ApiVersions: answered by the proxy itself, offering what it handles
//! intersected with what the cluster speaks.

use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::kafka::fields::{api_versions_response as response, members};
use crate::kafka::message::{encode_response, response_schema};
use crate::kafka::schema::registry;
use crate::proxy::ProxyContext;

/// APIs the proxy answers itself when clients authenticate to it, and
/// never offers otherwise (the brokers' SASL is the proxy's own business).
const CLIENT_SASL: &[ApiKey] = &[ApiKey::SaslHandshake, ApiKey::SaslAuthenticate];

/// APIs that name partitions but whose virtual ↔ physical mapping is not
/// built: left out while any rule remaps, rather than passed through blind.
/// Clients fall back (the Java admin describes topics through Metadata).
const NOT_REMAPPED: &[ApiKey] = &[ApiKey::DescribeProducers, ApiKey::DescribeTopicPartitions];

/// The versions of an API the proxy offers clients: what it handles,
/// intersected with what the cluster speaks. `None`: not offered.
pub fn offered_versions(ctx: &ProxyContext, api: ApiKey) -> Option<(i16, i16)> {
    if CLIENT_SASL.contains(&api) {
        let ours = registry().supported_versions(api as i16)?;
        return ctx.client_sasl().is_some().then_some((ours.min, ours.max));
    }
    if ctx.mapper.remaps_anything() && NOT_REMAPPED.contains(&api) {
        return None;
    }
    let ours = registry().supported_versions(api as i16)?;
    if api == ApiKey::ApiVersions {
        // Answered by the proxy itself.
        return Some((ours.min, ours.max));
    }
    let (umin, umax) = ctx.cluster.upstream_versions(api as i16)?;
    let (min, max) = (ours.min.max(umin), ours.max.min(umax));
    (min <= max).then_some((min, max))
}

/// The proxy's own ApiVersions answer. A client asking for a version newer
/// than the proxy knows gets a v0 answer with UNSUPPORTED_VERSION and the
/// list, as Kafka does, so it can retry with a version both know.
pub fn response(ctx: &ProxyContext, requested: i16, correlation_id: i32) -> Vec<u8> {
    let schema = response_schema(ApiKey::ApiVersions as i16).expect("declared");
    let ours = registry().supported_versions(ApiKey::ApiVersions as i16).expect("declared");
    let (version, code) = if ours.contains(requested) { (requested, error::NONE) } else { (0, error::UNSUPPORTED_VERSION) };
    let mut body = codec::with_defaults(&schema.body, version);
    body.write(response::ERROR_CODE, code);
    let key_schema = members(&schema.body, response::API_KEYS);
    let keys: Vec<Value<'_>> = ApiKey::ALL
        .iter()
        .filter_map(|&api| {
            let (min, max) = offered_versions(ctx, api)?;
            // librdkafka before 2.10 compresses only when a broker
            // advertises Produce v2, so Produce is advertised from v0, as
            // Kafka 4 does (KAFKA-18659); requests older than v3 are still
            // refused when they come.
            let min = if api == ApiKey::Produce { 0 } else { min };
            let mut k = codec::with_defaults(key_schema, version);
            k.write(response::api_keys::API_KEY, api as i16);
            k.write(response::api_keys::MIN_VERSION, min);
            k.write(response::api_keys::MAX_VERSION, max);
            Some(Value::Struct(k))
        })
        .collect();
    body.write(response::API_KEYS, keys);
    encode_response(ApiKey::ApiVersions as i16, version, correlation_id, &[], &body).expect("well-formed ApiVersions response")
}
