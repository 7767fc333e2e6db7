//! Whole messages: header plus body, for the requests the proxy sends on its
//! own behalf and the responses it writes itself.

use std::borrow::Cow;

use super::api::api_name;
use super::codec::{self, EncodeError, Struct};
use super::header::{encode_response_header, parse_response_header, RawTags, RequestHeader};
use super::wire::DecodeError;
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

/// A response frame read whole: header and body.
#[derive(Debug)]
pub struct DecodedResponse<'a> {
    pub correlation_id: i32,
    /// The response header's tagged fields (flexible versions).
    pub header_tags: RawTags<'a>,
    pub body: Struct<'a>,
}

/// Why a response frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The proxy declares no schema for this API's responses.
    NoSchema { api_key: i16 },
    /// The header, or the body, does not decode in this version.
    Malformed { api_key: i16, version: i16, part: &'static str, source: DecodeError },
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::NoSchema { api_key } => write!(f, "no response schema for {}", api_name(*api_key)),
            ResponseError::Malformed { api_key, version, part, source } => {
                write!(f, "malformed {} v{version} answer ({part}): {source}", api_name(*api_key))
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// Handlers report a failed answer as text (it is logged, and the client
/// gets an error answer).
impl From<ResponseError> for String {
    fn from(e: ResponseError) -> String {
        e.to_string()
    }
}

/// Read a response frame (without size prefix) to `version` of `api_key`:
/// its header, then its body by the API's response schema.
pub fn decode_response(api_key: i16, version: i16, frame: &[u8]) -> Result<DecodedResponse<'_>, ResponseError> {
    let schema = response_schema(api_key).ok_or(ResponseError::NoSchema { api_key })?;
    let malformed = |part, source| ResponseError::Malformed { api_key, version, part, source };
    let (correlation_id, header_tags, body) = parse_response_header(frame, api_key, version).map_err(|e| malformed("header", e))?;
    let body = codec::decode(schema, version, body).map_err(|e| malformed("body", e))?;
    Ok(DecodedResponse { correlation_id, header_tags, body })
}
