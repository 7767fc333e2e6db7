//! Whole messages: header plus body, for the requests the proxy sends on its
//! own behalf and the responses it writes itself.

use std::borrow::Cow;

use super::codec::{self, EncodeError, Struct};
use super::header::{encode_response_header, RequestHeader};
use super::schema::{registry, MessageKind, MessageSchema};

pub fn request_schema(api_key: i16) -> Option<&'static MessageSchema> {
    registry().get(api_key, MessageKind::Request)
}

pub fn response_schema(api_key: i16) -> Option<&'static MessageSchema> {
    registry().get(api_key, MessageKind::Response)
}

/// Encode a request frame (without size prefix).
pub fn encode_request(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    body: &Struct<'_>,
) -> Result<Vec<u8>, EncodeError> {
    let schema = request_schema(api_key).ok_or_else(|| EncodeError(format!("no schema for API {api_key}")))?;
    let header = RequestHeader {
        api_key,
        api_version: version,
        correlation_id,
        client_id: client_id.map(Cow::Borrowed),
        tags: Vec::new(),
        flexible: schema.flexible.contains(version),
    };
    let mut out = Vec::with_capacity(256);
    header.encode(&mut out);
    codec::encode(schema, version, body, &mut out)?;
    Ok(out)
}

/// Encode a response frame (without size prefix) with the header version
/// the request's version calls for.
pub fn encode_response(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    header_tags: &[(u32, Cow<'_, [u8]>)],
    body: &Struct<'_>,
) -> Result<Vec<u8>, EncodeError> {
    let schema = response_schema(api_key).ok_or_else(|| EncodeError(format!("no schema for API {api_key}")))?;
    let mut out = Vec::with_capacity(256);
    encode_response_header(&mut out, correlation_id, api_key, version, header_tags);
    codec::encode(schema, version, body, &mut out)?;
    Ok(out)
}
